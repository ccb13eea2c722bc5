"""Nothing lost, nothing applied twice, nothing stale: the push path under failure.

Real worker processes, Redis, PostgreSQL and the fake Stripe server; every
assertion is on what the server received and on the sync log. Waiting is on
events: requests logged or arriving at the server, and task results.
"""

from __future__ import annotations

import subprocess
import threading
import time

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from customersync import sync
from customersync.core.diff import diff
from customersync.models import AttemptOutcome, Customer, PendingPush, PushAttempt, PushState, SyncStatus
from tests.admin_forms import form_data, post, set_metadata
from tests.conftest import wait_for_tasks
from tests.e2e.test_e2e import mirrored, posts_for
from tests.private_services import free_port
from tests.support import push_in_thread

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def path_of(customer):
    return f"/v1/customers/{customer.stripe_id}"


def outcomes(customer):
    return list(PushAttempt.objects.filter(customer=customer).order_by("id").values_list("outcome", flat=True))


def applied(requests):
    """Requests the server executed (answered 200 and not a replay)."""
    return [r for r in requests if r.status == 200 and not r.replayed]


def test_worker_killed_mid_request_change_applied_once_with_one_key(stripe, start_worker, published_tasks):
    customer = mirrored(stripe, name="Ann", metadata={"k": "1"})
    path = path_of(customer)
    stripe.inject(delay=3.0, path_prefix=path)  # the request reaches the server, then hangs
    worker = start_worker()
    customer.name = "Bob"
    customer.metadata = {}
    customer.save()
    stripe.wait_for_arrivals(1, timeout=30, method="POST", path_prefix=path)
    worker.kill()  # before any answer, so before the task was acknowledged

    assert PendingPush.objects.get(customer=customer).state == PushState.SENDING
    start_worker()
    call_command("customersync_sweep", "--older-than=0")
    wait_for_tasks(published_tasks[1:])  # the sweeper's task; the first died with its worker

    posts = posts_for(stripe, customer)
    assert len({r.idempotency_key for r in posts}) == 1, [r.summary() for r in posts]
    assert {r.body for r in posts} == {b"name=Bob&metadata[k]="}
    assert len(applied(posts)) == 1  # the resend was a replay (or a 409 while the first ran)
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC
    assert stripe.get_customer(customer.stripe_id)["name"] == "Bob"


def test_broker_flushed_after_enqueue_the_sweeper_delivers(stripe, start_worker, broker_db, published_tasks):
    customer = mirrored(stripe, email="a@example.com")
    customer.email = "b@example.com"
    customer.save()
    assert sync.publisher.flush()
    assert broker_db.llen("celery") == 1
    broker_db.flushdb()  # as a Redis restart without persistence would
    start_worker()
    call_command("customersync_sweep", "--older-than=0")
    wait_for_tasks(published_tasks[1:])
    (request,) = posts_for(stripe, customer)
    assert request.body == b"email=b%40example.com"
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC


class RedisServer:
    """A Redis of the test's own on a free loopback port, to stop and start."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for line in self.process.stdout:  # wait for its own word that it is ready
            if "Ready to accept connections" in line:
                break
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def own_broker():
    server = RedisServer()
    # The Django setting the demo's app reads (before Celery 5.7 it wins over conf.broker_url).
    with override_settings(CELERY_BROKER_URL=server.url):
        yield server
    server.stop()


def test_broker_unreachable_during_admin_save(stripe, start_worker, own_broker, client, admin_user, published_tasks):
    customer = mirrored(stripe, email="old@example.com", metadata={"a": "1"})
    client.force_login(admin_user)
    data = form_data(client, customer)
    data["email"] = "new@example.com"
    set_metadata(data, {"a": "2"})

    started = time.monotonic()
    response = post(client, customer, data)  # nothing listens on the broker's port
    elapsed = time.monotonic() - started
    assert response.status_code == 302
    # A hang detector, not a speed target: Celery's default publish path spends
    # about 6 s in connection retries here; ours does not retry at all.
    assert elapsed < 3.0, f"the save took {elapsed:.1f}s: it waited for the broker"
    record = PendingPush.objects.get(customer=customer)
    assert record.state == PushState.PENDING  # the change is safe in the outbox

    own_broker.start()
    start_worker(env={"CUSTOMERSYNC_TEST_REDIS_URL": own_broker.url})
    call_command("customersync_sweep", "--older-than=0")
    wait_for_tasks(published_tasks[-1:])
    (request,) = posts_for(stripe, customer)
    assert request.body == b"email=new%40example.com&metadata[a]=2"


# (id, inject kwargs, expected attempt outcomes, expected final status)
FAULTS = [
    ("500", [dict(status=500)], ["retry", "succeeded"], SyncStatus.IN_SYNC),
    (
        "502-html",
        [dict(status=502, body="<html><h1>502 Bad Gateway</h1></html>")],
        ["retry", "succeeded"],
        SyncStatus.IN_SYNC,
    ),
    ("truncated-json", [dict(status=200, body='{"id": "cus_abc", "obj')], ["retry", "succeeded"], SyncStatus.IN_SYNC),
    (
        "429-lock_timeout",
        [
            dict(
                status=429,
                error={
                    "type": "invalid_request_error",
                    "code": "lock_timeout",
                    "message": "This object cannot be accessed right now because another API request "
                    "or Stripe process is currently accessing it.",
                },
            )
        ],
        ["retry", "succeeded"],
        SyncStatus.IN_SYNC,
    ),
    (
        "should-retry-true",
        [
            dict(
                status=400,
                headers={"Stripe-Should-Retry": "true"},
                error={"type": "invalid_request_error", "message": "transient"},
            )
        ],
        ["retry", "succeeded"],
        SyncStatus.IN_SYNC,
    ),
    ("should-retry-false", [dict(status=500, headers={"Stripe-Should-Retry": "false"})], ["failed"], SyncStatus.FAILED),
    ("reset", [dict(action="reset")], ["retry", "succeeded"], SyncStatus.IN_SYNC),
    ("dropped", [dict(action="drop")], ["retry", "succeeded"], SyncStatus.IN_SYNC),
    (
        "400",
        [
            dict(
                status=400,
                error={"type": "invalid_request_error", "message": "Invalid email address: x", "param": "email"},
            )
        ],
        ["failed"],
        SyncStatus.FAILED,
    ),
    (
        # A key retired while the push waited (a rotation): retried under the same key, not lost.
        "401",
        [dict(status=401, error={"type": "invalid_request_error", "message": "Invalid API Key provided."})],
        ["retry", "succeeded"],
        SyncStatus.IN_SYNC,
    ),
    (
        "404",
        [
            dict(
                status=404,
                error={
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "message": "No such customer",
                    "param": "id",
                },
            )
        ],
        ["deleted"],
        SyncStatus.DELETED,
    ),
    ("retries-run-out", [dict(status=503, times=3)], ["retry", "retry", "failed"], SyncStatus.FAILED),
]


@pytest.mark.parametrize("faults, expected, status", [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_fault_table(stripe, start_worker, published_tasks, faults, expected, status):
    customer = mirrored(stripe, name="Ann")
    path = path_of(customer)
    for fault in faults:
        stripe.inject(path_prefix=path, **fault)
    start_worker()
    customer.name = "Bob"
    customer.save()
    wait_for_tasks(published_tasks)

    posts = posts_for(stripe, customer)
    assert outcomes(customer) == expected
    assert len(posts) == len(expected)  # one sync-log row per request sent
    assert len({r.idempotency_key for r in posts}) == 1 and {r.body for r in posts} == {b"name=Bob"}
    log = list(PushAttempt.objects.filter(customer=customer).order_by("id"))
    for row, request in zip(log, posts, strict=True):
        assert row.params == {"name": "Bob"} and row.idempotency_key == request.idempotency_key
        assert row.finished_at is not None
        if request.status is not None and row.outcome != AttemptOutcome.SUCCEEDED:
            assert row.http_status == request.status
    customer.refresh_from_db()
    assert customer.sync_status == status
    if status == SyncStatus.IN_SYNC:
        assert stripe.get_customer(customer.stripe_id)["name"] == "Bob"
        assert log[-1].request_id.startswith("req_")
    else:
        assert customer.sync_error["message"] and log[-1].error_message == customer.sync_error["message"]
        assert customer.name == "Bob"  # the local edit is kept


def test_read_timeout_is_retried_under_the_same_key_and_applied_once(stripe, start_worker, published_tasks, settings):
    customer = mirrored(stripe, name="Ann")
    path = path_of(customer)
    stripe.inject(delay=settings.CUSTOMERSYNC["TIMEOUT"] + 1.5, path_prefix=path)
    start_worker()
    customer.name = "Bob"
    customer.save()
    wait_for_tasks(published_tasks)
    posts = posts_for(stripe, customer)
    log = list(PushAttempt.objects.filter(customer=customer).order_by("id"))
    assert log[0].outcome == "retry" and log[0].error_type == "APIConnectionError"
    assert log[-1].outcome == "succeeded"
    assert len(log) == len(posts)
    assert len({r.idempotency_key for r in posts}) == 1
    assert len(applied(posts)) == 1  # the slow first request; retries were 409s or replays


def test_two_operators_racing_across_four_workers(stripe, start_worker, published_tasks):
    customer = mirrored(stripe, email="start@example.com", name="Start", metadata={"a": "0", "b": "0"})
    stripe.set_latency(0.2, 0.4)
    start_worker("--pool=prefork", "--concurrency=2")
    start_worker("--pool=prefork", "--concurrency=2")

    def operator(field, key, count):
        try:
            for i in range(count):
                current = Customer.objects.get(pk=customer.pk)
                value = f"{key}{i}@example.com" if field == "email" else f"{field}-{key}-{i}"
                setattr(current, field, value)
                current.metadata = {**current.metadata, key: str(i)}
                current.save()
        finally:
            connection.close()

    threads = [
        threading.Thread(target=operator, args=("email", "a", 12)),
        threading.Thread(target=operator, args=("name", "b", 12)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for_tasks(published_tasks, timeout=120)

    posts = sorted((r for r in posts_for(stripe, customer)), key=lambda r: r.time)
    assert posts, "nothing was pushed"
    overlaps = [(a.summary(), b.summary()) for a, b in zip(posts, posts[1:], strict=False) if b.time < a.finished]
    assert overlaps == []
    final = Customer.objects.get(pk=customer.pk)
    assert diff(stripe.get_customer(customer.stripe_id), final.desired_state()) == {}
    assert final.sync_status == SyncStatus.IN_SYNC
    assert len(posts) < 24  # saves joined pushes rather than each costing one


def test_response_does_not_overwrite_an_edit_made_in_flight(stripe):
    """In-process push in a thread; the operator saves while its request is at the server."""

    customer = mirrored(stripe, email="a@example.com", name="Ann")
    customer.email = "b@example.com"
    customer.save()
    stripe.inject(delay=1.0, path_prefix=path_of(customer))
    thread, _ = push_in_thread(customer.pk)
    stripe.wait_for_arrivals(1, method="POST", path_prefix=path_of(customer))
    edited = Customer.objects.get(pk=customer.pk)
    edited.email = "c@example.com"  # the same field, while b is in flight
    edited.name = "Bea"
    edited.save()
    thread.join()

    # The push picked up the edit in its next round, under the same lease.
    bodies = [r.body for r in posts_for(stripe, customer)]
    assert bodies == [b"email=b%40example.com", b"email=c%40example.com&name=Bea"]
    final = Customer.objects.get(pk=customer.pk)
    assert (final.email, final.name) == ("c@example.com", "Bea")
    assert final.stripe_data["email"] == "c@example.com" and final.sync_status == SyncStatus.IN_SYNC


def test_redelivered_old_task_sends_nothing(stripe, start_worker, published_tasks):
    from customersync.tasks import push_customer

    customer = mirrored(stripe, email="a@example.com")
    start_worker()
    customer.email = "b@example.com"
    customer.save()
    wait_for_tasks(published_tasks)
    assert len(posts_for(stripe, customer)) == 1
    # The same message delivered again (as Redis does after a visibility timeout).
    again = push_customer.apply_async(args=[customer.pk])
    assert again.get(timeout=30) == "nothing to send"
    assert len(posts_for(stripe, customer)) == 1
