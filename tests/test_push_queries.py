"""One update push of one customer, lease to release, in few round trips (PostgreSQL).

A correctness guard, not a timing: each round trip is a statement the database
runs under the worker's lease, and BEGIN/COMMIT count as Django's capture counts them.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from customersync import push, sync
from customersync.models import Customer, PendingPush, PushAttempt, PushLease, PushState, SyncStatus

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the folded statements are PostgreSQL's"),
]

MAX_QUERIES = 8


def edited(stripe) -> Customer:
    obj = stripe.add_customer(name="Ann", email="a@example.com")
    customer = sync.pull_one(obj["id"])
    customer.name = "Bob"
    customer.save()
    stripe.clear_requests()
    return customer


def test_an_update_push_takes_at_most_eight_queries(stripe):
    customer = edited(stripe)
    with CaptureQueriesContext(connection) as captured:
        result = push.push(customer.pk)
    statements = "\n".join(q["sql"][:160] for q in captured.captured_queries)
    assert result.outcome is push.Outcome.PUSHED
    assert len(captured.captured_queries) <= MAX_QUERIES, f"{len(captured.captured_queries)} queries:\n{statements}"
    stored = Customer.objects.get(pk=customer.pk)
    assert stored.name == "Bob" and stored.sync_status == SyncStatus.IN_SYNC
    assert stored.stripe_data["name"] == "Bob" and stored.last_pushed_at is not None
    assert list(PendingPush.objects.values_list("state", flat=True)) == [PushState.SENT]
    assert list(PushAttempt.objects.values_list("outcome", "http_status")) == [("succeeded", 200)]
    assert [r.body for r in stripe.requests if r.method == "POST"] == [b"name=Bob"]


def test_the_statements_are_the_lease_with_the_read_the_freeze_and_the_confirm_that_releases(stripe):
    customer = edited(stripe)
    with CaptureQueriesContext(connection) as captured:
        push.push(customer.pk)
    heads = [" ".join(q["sql"].split()[:3]) for q in captured.captured_queries]
    assert heads == [
        "WITH c AS",  # the lease, taken only for a customer that exists, with the record and customer read
        "WITH hold AS",  # hold, freeze, attempt
        "WITH fin AS",  # Stripe answered (kept even if the lease is gone), confirm, record sent, release
    ]
    lease = PushLease.objects.get(customer=customer)
    assert (lease.owner, lease.expires_at) == ("", None)  # released by the confirm


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
    monkeypatch.setattr(push.ratelimit, "budget", lambda *args: EditingLimiter(customer.pk))
    assert push.push(customer.pk).outcome is push.Outcome.PUSHED
    (sent,) = [r for r in stripe.requests if r.method == "POST"]
    assert sorted(sent.body.split(b"&")) == [b"email=z%40example.com", b"name=Bob"]  # frozen again, both
    stored = Customer.objects.get(pk=customer.pk)
    assert stored.sync_status == SyncStatus.IN_SYNC and stored.stripe_data["email"] == "z@example.com"
    assert list(PendingPush.objects.values_list("state", flat=True)) == [PushState.SENT]
