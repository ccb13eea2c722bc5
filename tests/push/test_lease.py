"""A fenced lease on the database's clock.

Threads with their own database connections stand in for workers; the fake
server holds requests to make them outlast a lease. Time that must pass (a
lease expiring) is made to pass by moving the lease's expiry in the
database, never by sleeping; a worker's wrong clock is faked in-process.
"""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest
from django.db import connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from customersync import sync
from customersync.exceptions import Busy, LeaseLost, RetryLater
from customersync.models import Customer, PendingPush, PushAttempt, PushLease, PushState, SyncStatus
from customersync.push.lease import Lease, db_now_plus
from tests.support import push_in_thread

pytestmark = pytest.mark.django_db(transaction=True)


def mirrored(stripe, **fields):
    return sync.pull_one(stripe.add_customer(**fields)["id"])


def path_of(customer):
    return f"/v1/customers/{customer.stripe_id}"


def posts(stripe, customer):
    """The customer's POSTs, in the order they arrived."""
    return sorted(
        (r for r in stripe.requests if r.method == "POST" and r.path == path_of(customer)), key=lambda r: r.time
    )


def expire(customer):
    """Let the lease's time run out, as the database's clock sees it."""
    PushLease.objects.filter(customer_id=customer.pk).update(expires_at=db_now_plus(-1))


def skewed(seconds):
    """This process's clock ``seconds`` off (the database's is right)."""
    real = timezone.now
    return mock.patch("django.utils.timezone.now", lambda: real() + dt.timedelta(seconds=seconds))


# -- the database's clock, not the worker's ------------------------------------------------


def test_a_worker_clock_200_s_ahead_cannot_take_a_live_lease(stripe):
    customer = mirrored(stripe, name="Ann")
    holder = Lease(customer.pk).acquire()
    with skewed(200), pytest.raises(Busy):
        Lease(customer.pk).acquire()
    holder.hold()  # still the holder's


def test_a_worker_clock_30_s_behind_is_not_delayed_by_an_expired_lease(stripe):
    customer = mirrored(stripe, name="Ann")
    Lease(customer.pk).acquire()
    expire(customer)  # the holder died; its lease ran out by the database's clock
    customer.name = "Bea"
    customer.save()
    with skewed(-30):
        result = sync.push(customer.pk)
    assert result.outcome is sync.Outcome.PUSHED
    assert [r.body for r in posts(stripe, customer)] == [b"name=Bea"]


def test_a_200_s_ahead_worker_sends_nothing_while_a_request_is_in_flight(stripe):
    customer = mirrored(stripe, email="a@example.com")
    customer.email = "b@example.com"
    customer.save()
    stripe.inject(delay=1.5, path_prefix=path_of(customer))
    thread, results = push_in_thread(customer.pk)
    stripe.wait_for_arrivals(1, method="POST", path_prefix=path_of(customer))
    with skewed(200), pytest.raises(Busy):
        sync.push(customer.pk)
    thread.join()
    assert [r.status for r in posts(stripe, customer)] == [200]  # one request, never a second beside it


def test_lease_times_are_the_databases():
    lease_row = PushLease(customer=Customer.objects.create(name="x"), owner="w", expires_at=None)
    lease_row.save()
    with skewed(3600):
        Lease(lease_row.customer_id, owner="w").acquire()
    row = PushLease.objects.filter(customer_id=lease_row.customer_id).annotate(db_now=Now()).get()
    assert abs((row.renewed_at - row.db_now).total_seconds()) < 60
    assert row.expires_at > row.renewed_at


# -- a request that outlasts the lease ------------------------------------------------------


def test_request_outlasting_the_lease_new_holder_resends_the_same_body_and_old_holder_stops(stripe):
    customer = mirrored(stripe, email="a@example.com")
    customer.email = "b@example.com"
    customer.save()
    stripe.inject(delay=1.5, path_prefix=path_of(customer))
    thread, results = push_in_thread(customer.pk)  # worker A
    stripe.wait_for_arrivals(1, method="POST", path_prefix=path_of(customer))
    expire(customer)  # A's request outlasts its lease

    # Worker B takes the lease and resends A's frozen body under A's key: Stripe
    # answers 409 while A's request runs, never applies a second copy.
    with pytest.raises(RetryLater):
        sync.push(customer.pk)
    thread.join()
    assert isinstance(results[0], LeaseLost)  # A wrote nothing after losing it
    first, second = posts(stripe, customer)
    assert first.body == second.body and first.idempotency_key == second.idempotency_key
    assert (first.status, second.status) == (200, 409)
    record = PendingPush.objects.get(customer=customer)
    assert record.state == PushState.SENDING  # not confirmed by A, which lost the lease

    # B's retry gets Stripe's stored answer and confirms it.
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    third = posts(stripe, customer)[2]
    assert third.idempotency_key == first.idempotency_key and third.replayed
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC and customer.stripe_data["email"] == "b@example.com"
    applied = [r for r in posts(stripe, customer) if r.status == 200 and not r.replayed]
    assert len(applied) == 1


def _waiting_on_locks(count: int) -> None:
    """Wait until ``count`` other sessions wait for a lock (the caller holds one)."""
    import time

    deadline = time.monotonic() + 10
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0] >= count:
                return
            assert time.monotonic() < deadline, f"fewer than {count} sessions came to wait for the lock"
            time.sleep(0.01)


# Waits on PostgreSQL's row locks (pg_stat_activity).
@pytest.mark.postgresql
def test_a_push_that_took_the_lease_as_the_last_holder_stored_it_does_not_send_it_again(stripe):
    """Worker B reads while A's confirm, which stores the record and releases the lease, is about to
    commit: B's statement takes the lease once it has, but reads from a snapshot taken before, where
    the record is still being sent. B must not send it again (it did, under the same key: a wasted
    request of the rate budget, answered from Stripe's idempotency store)."""
    customer = mirrored(stripe, email="a@example.com")
    customer.email = "b@example.com"
    customer.save()
    stripe.inject(delay=1, path_prefix=path_of(customer))  # within the 2 s timeout; the lease row is locked by then
    a, a_results = push_in_thread(customer.pk)
    stripe.wait_for_arrivals(1, method="POST", path_prefix=path_of(customer))
    with transaction.atomic():
        PushLease.objects.select_for_update().get(customer=customer)  # A's confirm and B's read queue here
        _waiting_on_locks(1)  # A, answered, at its confirm
        b, b_results = push_in_thread(customer.pk)
        _waiting_on_locks(2)  # and B at the lease, behind A
    a.join()
    b.join()
    assert len(posts(stripe, customer)) == 1
    assert a_results[0].outcome is sync.Outcome.PUSHED
    assert b_results[0].outcome is sync.Outcome.NOTHING, b_results
    assert PushAttempt.objects.filter(push__customer=customer).count() == 1
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC and customer.stripe_data["email"] == "b@example.com"


def test_worker_that_lost_its_lease_does_not_send(stripe):
    customer = mirrored(stripe, name="Ann")
    lease = Lease(customer.pk).acquire()
    PushLease.objects.filter(customer_id=customer.pk).update(owner="someone-else")
    customer.name = "Bea"
    customer.save()
    from customersync.push import send as push_module

    with pytest.raises(LeaseLost):
        push_module._take(customer.pk, lease)
    assert PendingPush.objects.get(customer=customer).state == PushState.PENDING  # nothing frozen
    assert posts(stripe, customer) == []


# -- a confirm that cannot roll back --------------------------------------------------------


def test_old_records_replayed_answer_after_a_newer_confirm_changes_nothing(stripe):
    from customersync.push import send as push_module

    customer = mirrored(stripe, email="a@example.com")
    customer.email = "b@example.com"
    customer.save()
    sync.push(customer.pk)
    old = PendingPush.objects.get(customer=customer, state=PushState.SENT)
    old_answer = {**stripe.get_customer(customer.stripe_id)}
    customer.refresh_from_db()
    customer.email = "c@example.com"
    customer.save()
    sync.push(customer.pk)
    customer.refresh_from_db()
    assert customer.stripe_data["email"] == "c@example.com"

    # The first record's answer arrives late (a replay under its key).
    lease = Lease(customer.pk).acquire()
    try:
        assert push_module._confirm(old, old_answer, lease) is None
    finally:
        lease.release()
    customer.refresh_from_db()
    assert customer.stripe_data["email"] == "c@example.com" and customer.email == "c@example.com"
    assert customer.sync_status == SyncStatus.IN_SYNC
    assert not PendingPush.objects.filter(customer=customer, state=PushState.PENDING).exists()


def test_trickling_answer_is_cut_at_the_deadline_and_resent_under_its_key(stripe, settings):
    from django.test import override_settings

    customer = mirrored(stripe, email="a@example.com")
    customer.email = "b@example.com"
    customer.save()
    stripe.inject(action="trickle", trickle=0.2, path_prefix=path_of(customer))  # a minute of answer
    with override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "REQUEST_DEADLINE": 1.0}):
        with pytest.raises(RetryLater) as info:
            sync.push(customer.pk)
        assert "deadline" in str(info.value)
        assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    first, second = posts(stripe, customer)
    assert first.idempotency_key == second.idempotency_key and second.replayed
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC and customer.stripe_data["email"] == "b@example.com"


# -- the database away when Stripe's answer arrives ----------------------------------------


def test_database_gone_at_the_first_write_after_the_answer_stripe_is_not_asked_again(stripe):
    from django.db import OperationalError

    from customersync.push import send as push_module

    customer = mirrored(stripe, name="Ann")
    customer.name = "Bea"
    customer.save()
    failures: list = []

    def away(execute, sql, params, many, context):
        if not failures and any(r.method == "POST" for r in stripe.requests):
            failures.append(sql)  # the database is away for the first write after the 200
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(away), mock.patch.object(push_module.time, "sleep"):
        assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    assert failures and [r.body for r in posts(stripe, customer)] == [b"name=Bea"]  # one request
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC
    assert PendingPush.objects.get(customer=customer).state == PushState.SENT


def test_a_retry_that_finds_the_database_still_away_keeps_the_lease_to_resume(stripe):
    from django.db import OperationalError

    from customersync.push import send as push_module
    from customersync.tasks import push_customer

    class Retried(Exception):
        pass

    retries = []

    def retry(**options):
        retries.append(options)
        return Retried()

    with (
        mock.patch.object(push_module, "push", side_effect=OperationalError("connection refused")),
        mock.patch.object(push_customer, "retry", retry),
        pytest.raises(Retried),
    ):
        push_customer(7, resume="host:1:lease-owner")  # fails before taking the lease up again
    assert retries[0]["kwargs"] == {"resume": "host:1:lease-owner"}


def test_a_rate_budget_wait_that_outlasts_the_lease_sends_nothing(stripe):
    from customersync.stripe import rate_budget

    customer = mirrored(stripe, email="a@example.com")
    customer.email = "b@example.com"
    customer.save()
    waits: list = []
    others: list = []

    def acquire(timeout=None):
        if not waits:  # worker A waits for its grant past its lease; worker B pushes meanwhile
            waits.append("A")
            expire(customer)
            thread, results = push_in_thread(customer.pk)
            thread.join()
            others.extend(results)

    budget = mock.Mock(acquire=acquire)
    with mock.patch.object(rate_budget, "budget", return_value=budget), pytest.raises(LeaseLost):
        sync.push(customer.pk)  # A: its change was frozen before the wait, then the lease was gone
    assert [r.outcome for r in others] == [sync.Outcome.PUSHED]
    assert [r.body for r in posts(stripe, customer)] == [b"email=b%40example.com"]  # B's, once
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC
