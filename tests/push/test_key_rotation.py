"""Rotating the Stripe key while pushes are queued or in flight.

Keys are settings, read at each request and never stored: a worker gets the new
key the way a deploy gives it, through its environment (the test settings read
``CUSTOMERSYNC_TEST_API_KEY``), and is restarted. The fake server accepts one key
at a time (``set_api_key``), so retiring the old key is one call at a recorded
moment, and every request it logs keeps the ``Authorization`` it carried.
Waiting is on events: a request arriving at the server, a line in the worker's
log, task results.
"""

from __future__ import annotations

import base64
import json
import secrets
import signal
import time
from dataclasses import dataclass

import pytest
import redis
from django.apps import apps
from django.conf import settings as django_settings
from django.db import connection

from customersync import sync
from customersync.core.encoding import decode
from customersync.exceptions import RetryLater
from customersync.models import AttemptOutcome, Customer, PendingPush, PushAttempt, PushState, SyncStatus
from customersync.push.outbox import PUSH_TASK
from tests.conftest import wait_for_tasks
from tests.e2e.test_e2e import mirrored, posts_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

KEY_ENV = "CUSTOMERSYNC_TEST_API_KEY"  # what tests/settings.py makes CUSTOMERSYNC["API_KEY"]
# How long the fake server holds the first push: the old key is retired meanwhile. Under
# the test settings' TIMEOUT (2 s), so the client waits for the answer.
HELD = 1.5


@dataclass(frozen=True)
class Keys:
    old: str
    new: str


@pytest.fixture
def keys(stripe, settings):
    """Two keys made for this test; the old one is in use (the server's and this process's)."""
    found = Keys(f"sk_test_old_{secrets.token_hex(12)}", f"sk_test_new_{secrets.token_hex(12)}")
    stripe.set_api_key(found.old)
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "API_KEY": found.old}
    yield found
    stripe.set_api_key(django_settings.TEST_API_KEY)  # the session's server, for the tests after this one


def path_of(customer):
    return f"/v1/customers/{customer.stripe_id}"


def key_of(request):
    """The key a recorded request carried (``Authorization: Bearer <key>``)."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    assert scheme == "Bearer", request.headers
    return key


def edit(customer, n):
    customer.email = f"rotated-{n}@example.com"
    customer.metadata = {"n": str(n), "rotated": "yes"}
    customer.save()


def redis_dump(url):
    """Everything in a Redis database, as bytes: keys, values, list items, hash fields; a Celery
    message's body (base64 in kombu's envelope) decoded too."""
    client = redis.Redis.from_url(url)
    chunks: list[bytes] = []
    try:
        for key in client.scan_iter():
            kind = client.type(key)
            values: list[bytes] = []
            if kind == b"string":
                values = [client.get(key) or b""]
            elif kind == b"list":
                values = client.lrange(key, 0, -1)
            elif kind == b"hash":
                values = [part for item in client.hgetall(key).items() for part in item]
            elif kind == b"set":
                values = list(client.smembers(key))
            elif kind == b"zset":
                values = client.zrange(key, 0, -1)
            chunks += [key, *values, *(body for value in values if (body := message_body(value)) is not None)]
    finally:
        client.close()
    return b"\n".join(chunks)


def message_body(raw):
    """The decoded body of a kombu message envelope (JSON), or None for anything else."""
    try:
        envelope = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(envelope, list) and envelope and isinstance(envelope[0], (str, bytes)):
        return message_body(envelope[0])  # kombu's unacked hash: [message, exchange, routing key]
    if not isinstance(envelope, dict) or "body" not in envelope:
        return None
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        return base64.b64decode(body)
    return body.encode() if isinstance(body, str) else None


def queued_pushes(url):
    """(args, kwargs) of each push task message waiting on the broker's default queue."""
    client = redis.Redis.from_url(url)
    try:
        raw = client.lrange("celery", 0, -1)
    finally:
        client.close()
    found = []
    for item in raw:
        envelope = json.loads(item)
        if envelope["headers"]["task"] == PUSH_TASK:
            args, kwargs, _ = json.loads(message_body(item))
            found.append((args, kwargs))
    return found


def database_dump():
    """Every row of every customersync table, as text; and the tables read."""
    tables = sorted(t for t in connection.introspection.table_names() if t.startswith("customersync_"))
    models = {model._meta.db_table for model in apps.get_app_config("customersync").get_models()}
    assert models <= set(tables), models - set(tables)
    lines = []
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            lines += [f"{table}: {row!r}" for row in cursor.fetchall()]
    return tables, "\n".join(lines)


@dataclass
class Rotation:
    customers: list[Customer]  # the first one's push was in flight at the rotation
    created: Customer  # never in Stripe before: its push is a create
    retired: float  # time.monotonic() when the server stopped accepting the old key
    queued: list  # the push messages on the broker between the two workers
    broker: bytes  # everything in the broker's Redis database at that moment


def rotate_while_queued(stripe, start_worker, keys, published_tasks, count):
    """Queue pushes of ``count`` customers with the old key in use, then deploy the new key.

    A worker with the old key takes the first push; while its request is at the
    server, the worker is told to stop (as a deploy does), and then the server
    stops accepting the old key: the request gets a 401, the worker publishes its
    retry and exits. The rest stay queued. A worker with the new key then runs
    them all.
    """
    customers = [
        mirrored(stripe, name=f"Customer {n}", email=f"c{n}@example.com", metadata={"n": str(n)})
        for n in range(count - 1)
    ]
    stripe.clear_requests()  # the pulls above, with the old key before any rotation
    first = customers[0]
    stripe.inject(delay=HELD, path_prefix=path_of(first))
    for n, customer in enumerate(customers):  # in this order on the broker: the first is taken first
        edit(customer, n)
    created = Customer.objects.create(name="Brand new", email="new@example.com", metadata={"n": "new"})
    assert sync.publisher.flush(10)

    old_worker = start_worker(env={KEY_ENV: keys.old})
    stripe.wait_for_arrivals(1, timeout=30, method="POST", path_prefix=path_of(first))
    old_worker.process.send_signal(signal.SIGTERM)
    old_worker.wait_for_line(r"Warm shutdown")  # it takes no more tasks
    stripe.set_api_key(keys.new)
    retired = time.monotonic()
    old_worker.stop()  # once its task is done: a 401, its retry published
    assert old_worker.process.returncode == 0, old_worker.log

    broker_url = django_settings.CELERY_BROKER_URL
    queued, broker = queued_pushes(broker_url), redis_dump(broker_url)
    start_worker(env={KEY_ENV: keys.new})
    wait_for_tasks(published_tasks, timeout=60)  # a retried task keeps its id: this waits for the retry too
    return Rotation(customers, created, retired, queued, broker)


def test_rotation_with_pushes_queued_loses_nothing_and_the_old_key_is_not_used_after_it(
    stripe, start_worker, keys, published_tasks
):
    rotation = rotate_while_queued(stripe, start_worker, keys, published_tasks, count=10)
    first = rotation.customers[0]
    posts = [r for r in stripe.requests if r.method == "POST"]

    # The old key: only the request in flight at the rotation, which Stripe refused.
    with_old = [r for r in posts if key_of(r) == keys.old]
    assert [(r.path, r.status) for r in with_old] == [(path_of(first), 401)], [r.summary() for r in posts]
    assert with_old[0].time < rotation.retired < with_old[0].finished
    # Nothing else carried it, though every push was queued while it was the key.
    after = [r for r in stripe.requests if r.time > rotation.retired]
    assert after and {key_of(r) for r in after} == {keys.new}

    # The refused push went again with the new key, under the same idempotency key, the same body.
    sent = posts_for(stripe, first)
    assert [(key_of(r), r.status, r.replayed) for r in sent] == [(keys.old, 401, False), (keys.new, 200, False)]
    refused, resent = sent
    assert resent.idempotency_key == refused.idempotency_key
    assert resent.body == refused.body == b"email=rotated-0%40example.com&metadata[rotated]=yes"
    log = PushAttempt.objects.filter(customer=first).order_by("id")
    assert [(a.outcome, a.http_status) for a in log] == [(AttemptOutcome.RETRY, 401), (AttemptOutcome.SUCCEEDED, 200)]

    # Every change applied exactly once, each customer in sync.
    for n, customer in enumerate(rotation.customers):
        sent = posts_for(stripe, customer)
        assert len([r for r in sent if r.status == 200 and not r.replayed]) == 1, [r.summary() for r in sent]
        if customer is not first:
            (request,) = sent
            assert key_of(request) == keys.new
        remote = stripe.get_customer(customer.stripe_id)
        assert (remote["email"], remote["metadata"]) == (f"rotated-{n}@example.com", {"n": str(n), "rotated": "yes"})
    creates = [r for r in posts if r.path == "/v1/customers"]
    assert [(key_of(r), r.status) for r in creates] == [(keys.new, 200)]
    made = [c for c in stripe.customers.values() if c.get("email") == "new@example.com"]
    assert len(made) == 1 and made[0]["metadata"] == {"n": "new"}

    mirror = Customer.objects.filter(pk__in=[c.pk for c in [*rotation.customers, rotation.created]])
    assert {(c.sync_status, c.sync_error is None) for c in mirror} == {(SyncStatus.IN_SYNC, True)}
    assert Customer.objects.get(pk=rotation.created.pk).stripe_id == made[0]["id"]
    assert not PendingPush.objects.filter(state__in=[PushState.PENDING, PushState.SENDING]).exists()


def test_push_in_flight_when_the_key_is_retired_stays_pending_and_goes_again_with_the_new_key(stripe, keys, settings):
    """In-process: the push runs in a thread; the deploy is a settings change."""
    from tests.support import push_in_thread

    customer = mirrored(stripe, name="Ann", email="ann@example.com")
    customer.name = "Bob"
    customer.email = "bob@example.com"
    customer.save()
    stripe.clear_requests()
    path = path_of(customer)
    stripe.inject(delay=HELD, path_prefix=path)  # the request reaches the server, then waits
    thread, results = push_in_thread(customer.pk)
    stripe.wait_for_arrivals(1, timeout=10, method="POST", path_prefix=path)
    stripe.set_api_key(keys.new)  # the old key retired while its request is at the server
    retired = time.monotonic()
    thread.join(timeout=30)

    (raised,) = results
    assert isinstance(raised, RetryLater) and raised.error.http_status == 401
    (refused,) = posts_for(stripe, customer)
    assert key_of(refused) == keys.old and refused.status == 401 and refused.finished > retired
    assert stripe.get_customer(customer.stripe_id)["name"] == "Ann"  # nothing applied with the old key
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.PENDING  # still owed to Stripe, not failed
    assert customer.sync_error["http_status"] == 401
    assert customer.sync_error["message"] == "Invalid API Key provided."
    record = PendingPush.objects.get(customer=customer)
    assert record.state == PushState.SENDING and record.body  # frozen, to go again as it is

    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "API_KEY": keys.new}  # the deploy
    result = sync.push(customer.pk)

    assert result.outcome is sync.Outcome.PUSHED
    refused, resent = posts_for(stripe, customer)
    assert key_of(resent) == keys.new and (resent.status, resent.replayed) == (200, False)
    assert resent.idempotency_key == refused.idempotency_key == record.idempotency_key
    assert resent.body == refused.body and decode(resent.body) == {"email": "bob@example.com", "name": "Bob"}
    remote = stripe.get_customer(customer.stripe_id)
    assert (remote["name"], remote["email"]) == ("Bob", "bob@example.com")
    customer.refresh_from_db()
    assert (customer.sync_status, customer.sync_error) == (SyncStatus.IN_SYNC, None)
    assert PendingPush.objects.get(pk=record.pk).state == PushState.SENT
    log = PushAttempt.objects.filter(customer=customer).order_by("id")
    assert [(a.outcome, a.http_status) for a in log] == [(AttemptOutcome.RETRY, 401), (AttemptOutcome.SUCCEEDED, 200)]


def test_keys_are_stored_nowhere_not_in_the_database_the_outbox_or_task_messages(
    stripe, start_worker, keys, published_tasks
):
    rotation = rotate_while_queued(stripe, start_worker, keys, published_tasks, count=3)
    # Each secret is a random token: found verbatim, with or without its prefix, it was stored.
    tokens = {key: key.rsplit("_", 1)[1] for key in (keys.old, keys.new)}

    # Task messages: the customer's pk and nothing else, also the retry the old worker published.
    pks = sorted(c.pk for c in [*rotation.customers, rotation.created])
    assert sorted(args[0] for args, _ in rotation.queued) == pks
    assert {(len(args), json.dumps(kwargs)) for args, kwargs in rotation.queued} == {(1, "{}")}
    for key, token in tokens.items():
        assert token.encode() not in rotation.broker, f"{key} was on the broker"

    # The database: every customersync table (the outbox, the sync log with its 401, ...).
    tables, rows = database_dump()
    assert {"customersync_customer", "customersync_pendingpush", "customersync_pushattempt"} <= set(tables)
    assert "Invalid API Key provided." in rows and "rotated-0@example.com" in rows  # the dump holds what happened
    for key, token in tokens.items():
        assert token not in rows, f"{key} is in the database"

    # Task results and whatever else the broker's and the result backend's Redis hold now.
    for url in {django_settings.CELERY_BROKER_URL, django_settings.CELERY_RESULT_BACKEND}:
        dump = redis_dump(url)
        for key, token in tokens.items():
            assert token.encode() not in dump, f"{key} is in {url}"
