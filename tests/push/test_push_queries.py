"""One push of one customer, read to release, in few statements and transactions (every database).

A correctness guard, not a timing: each statement is a round trip the database runs
under the worker's lease, and each transaction that writes ends in a commit (a WAL
flush). Counted as Django's capture counts them, BEGIN and COMMIT apart: statements,
and the transactions that write (an atomic block, or a write in autocommit).
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from customersync import sync
from customersync.models import Customer, PendingPush, PushAttempt, PushLease, PushState, SyncStatus
from customersync.push import send

pytestmark = pytest.mark.django_db(transaction=True)

MAX_STATEMENTS = 12
MAX_TRANSACTIONS = 3
_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK")
_WRITES = ("INSERT", "UPDATE", "DELETE")


def shape(captured: CaptureQueriesContext) -> tuple[int, int]:
    """(statements, transactions that write) of what was captured."""
    statements = transactions = 0
    in_block = False
    for query in captured.captured_queries:
        verb = query["sql"].split(None, 1)[0].upper()
        if verb == "BEGIN":
            in_block, transactions = True, transactions + 1
        elif verb in _CONTROL:
            in_block = False
        else:
            statements += 1
            transactions += not in_block and verb in _WRITES
    return statements, transactions


def listing(captured: CaptureQueriesContext) -> str:
    return "\n".join(q["sql"][:160] for q in captured.captured_queries)


def edited(stripe) -> Customer:
    obj = stripe.add_customer(name="Ann", email="a@example.com")
    customer = sync.pull_one(obj["id"])
    customer.name = "Bob"
    customer.save()
    stripe.clear_requests()
    return customer


def test_an_update_push_takes_at_most_twelve_statements_in_three_transactions(stripe):
    customer = edited(stripe)
    with CaptureQueriesContext(connection) as captured:
        result = send.push(customer.pk)
    assert result.outcome is send.Outcome.PUSHED
    statements, transactions = shape(captured)
    assert statements <= MAX_STATEMENTS and transactions <= MAX_TRANSACTIONS, listing(captured)
    stored = Customer.objects.get(pk=customer.pk)
    assert stored.name == "Bob" and stored.sync_status == SyncStatus.IN_SYNC
    assert stored.stripe_data["name"] == "Bob" and stored.last_pushed_at is not None
    assert list(PendingPush.objects.values_list("state", flat=True)) == [PushState.SENT]
    assert list(PushAttempt.objects.values_list("outcome", "http_status")) == [("succeeded", 200)]
    assert [r.body for r in stripe.requests if r.method == "POST"] == [b"name=Bob"]
    lease = PushLease.objects.get(customer=customer)
    assert (lease.owner, lease.expires_at) == ("", None)  # released by the confirm


def test_the_next_update_push_of_the_customer_keeps_the_budget(stripe):
    customer = edited(stripe)
    send.push(customer.pk)
    customer.refresh_from_db()
    customer.name = "Cid"
    customer.save()
    with CaptureQueriesContext(connection) as captured:
        assert send.push(customer.pk).outcome is send.Outcome.PUSHED
    statements, transactions = shape(captured)
    assert statements <= MAX_STATEMENTS and transactions <= MAX_TRANSACTIONS, listing(captured)


def test_a_create_push_keeps_the_budget(stripe):
    customer = Customer(name="New", email="new@example.com")
    customer.save()
    with CaptureQueriesContext(connection) as captured:
        assert send.push(customer.pk).outcome is send.Outcome.PUSHED
    statements, transactions = shape(captured)
    assert statements <= MAX_STATEMENTS and transactions <= MAX_TRANSACTIONS, listing(captured)
    customer.refresh_from_db()
    assert customer.stripe_id and customer.sync_status == SyncStatus.IN_SYNC


def test_a_push_with_nothing_to_send_reads_twice_and_writes_nothing(stripe):
    customer = edited(stripe)
    send.push(customer.pk)
    with CaptureQueriesContext(connection) as captured:
        assert send.push(customer.pk).outcome is send.Outcome.NOTHING
    assert shape(captured) == (2, 0), listing(captured)
    assert not PushLease.objects.filter(customer=customer).exclude(owner="").exists()


class EditingLimiter:
    """A rate budget whose grant arrives after an operator saved another edit."""

    def __init__(self, customer_pk):
        self.customer_pk = customer_pk

    def acquire(self):
        copy = Customer.objects.get(pk=self.customer_pk)
        copy.email = "z@example.com"
        copy.save()

    def sending(self):
        pass

    def penalize(self, seconds):
        pass


def test_an_edit_saved_between_the_read_and_the_freeze_is_what_is_sent(stripe, monkeypatch):
    customer = edited(stripe)
    monkeypatch.setattr(send.rate_budget, "budget", lambda *args: EditingLimiter(customer.pk))
    assert send.push(customer.pk).outcome is send.Outcome.PUSHED
    (sent,) = [r for r in stripe.requests if r.method == "POST"]
    assert sorted(sent.body.split(b"&")) == [b"email=z%40example.com", b"name=Bob"]  # frozen again, both
    stored = Customer.objects.get(pk=customer.pk)
    assert stored.sync_status == SyncStatus.IN_SYNC and stored.stripe_data["email"] == "z@example.com"
    assert list(PendingPush.objects.values_list("state", flat=True)) == [PushState.SENT]
