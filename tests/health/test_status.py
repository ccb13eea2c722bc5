"""The figures of ``sync.status()``, each read after driving the state it reports: the
outbox's records and their times, real pushes through the fake Stripe server, webhooks delivered
to the view, the catch-up run against the fake server's events log, a lease left by a dead worker."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from customersync import sync
from customersync.exceptions import RetryLater
from customersync.health import CRITICAL, HEALTHY, WARNING, UnknownAccount
from customersync.models import (
    Account,
    Customer,
    EventCursor,
    PendingPush,
    PushAttempt,
    PushLease,
    PushState,
    WebhookEvent,
)
from tests.accounts.test_accounts import SAME_ID, fleet, seed_same_id  # noqa: F401  (fleet: a fixture)
from tests.health import aged, customer_event, deliver

pytestmark = pytest.mark.django_db

RATE_LIMITED = {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests"}


def figures(account: str = "default"):
    [found] = sync.status(account).accounts
    return found


def edited(stripe, name: str = "Ann", **fields) -> Customer:
    """A customer mirrored from the fake server, edited here: its push is queued (one outbox record)."""
    customer = sync.pull_one(stripe.add_customer(name=name, **fields)["id"])
    customer.name = f"{name} edited"
    customer.save()
    return customer


def test_a_backlog_of_known_age_is_ready_and_its_age_read(stripe):
    customer = edited(stripe)
    PendingPush.objects.filter(customer=customer).update(created_at=aged(120), enqueued_at=aged(120))
    found = figures()
    assert (found.account, found.waiting, found.ready) == ("default", 1, 1)
    assert 119 < found.oldest_ready_age < 130


def test_a_record_in_its_coalescing_wait_is_waiting_not_ready(stripe, settings):
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "COALESCE_SECONDS": 30}
    edited(stripe)  # recorded (and its task counted down) just now
    older = edited(stripe, "Bob")
    PendingPush.objects.filter(customer=older).update(created_at=aged(40), enqueued_at=aged(40))
    found = figures()
    assert (found.waiting, found.ready) == (2, 1)
    assert 39 < found.oldest_ready_age < 50  # the other record's age is not the backlog's


def test_a_record_marked_in_bulk_is_ready_at_once_and_ages_from_its_change(stripe):
    customer = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    Customer.objects.filter(pk=customer.pk).update(name="Bulk")
    assert sync.mark_for_push(Customer.objects.filter(pk=customer.pk)) == 1
    PendingPush.objects.filter(customer=customer).update(created_at=aged(30))
    found = figures()
    assert (found.waiting, found.ready) == (1, 1) and 29 < found.oldest_ready_age < 40


def test_a_record_backing_off_after_a_retryable_error_is_not_ready_until_its_backoff_passed(stripe):
    customer = edited(stripe)
    PendingPush.objects.filter(customer=customer).update(created_at=aged(200))
    stripe.inject(status=500)
    with pytest.raises(RetryLater):
        sync.push(customer.pk)
    found = figures()
    assert (found.waiting, found.ready, found.oldest_ready_age) == (1, 0, None)
    assert found.pushes == {"retry": 1} and found.answers == {"500": 1}
    PushAttempt.objects.filter(customer=customer).update(finished_at=aged(10))  # the backoff is over
    found = figures()
    assert (found.waiting, found.ready) == (1, 1) and found.oldest_ready_age > 199


def test_a_push_confirmed_counts_its_outcome_and_answer_and_uses_the_budget(stripe):
    customer = edited(stripe)
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    found = figures()
    assert (found.waiting, found.ready, found.failed) == (0, 0, 0)
    assert found.pushes == {"succeeded": 1} and found.answers == {"200": 1}
    assert found.budget_used == pytest.approx(1 / 50)  # one request of tests/settings.py's 50 a second
    assert found.level() == HEALTHY


def test_a_refused_push_is_a_failed_customer(stripe):
    customer = edited(stripe)
    stripe.inject(status=400, error={"type": "invalid_request_error", "message": "No.", "param": "name"})
    assert sync.push(customer.pk).outcome is sync.Outcome.FAILED
    found = figures()
    assert (found.failed, found.pushes, found.answers, found.waiting) == (1, {"failed": 1}, {"400": 1}, 0)
    assert found.level() == WARNING and found.level(max_failed=0) == CRITICAL


def test_a_429_is_a_pause_and_its_answer(stripe):
    customer = edited(stripe)
    stripe.inject(status=429, error=RATE_LIMITED)
    with pytest.raises(RetryLater):
        sync.push(customer.pk)
    found = figures()
    assert (found.pauses, found.answers, found.pushes) == (1, {"429": 1}, {"retry": 1})
    assert found.ready == 0  # it waits out the pause
    assert [p.text for p in found.problems()] == ["1 rate-limit pause (Stripe answered 429)"]


def test_a_429_lock_timeout_pauses_nothing(stripe):
    customer = edited(stripe)
    stripe.inject(status=429, error={**RATE_LIMITED, "code": "lock_timeout"})
    with pytest.raises(RetryLater):
        sync.push(customer.pk)
    found = figures()
    assert (found.pauses, found.answers) == (0, {"429": 1})


def test_a_lease_taken_from_a_dead_holder_is_a_takeover(stripe):
    customer, other = edited(stripe), edited(stripe, "Bob")
    PushLease.objects.create(customer=customer, owner="gone-host:1:abc", expires_at=aged(5), renewed_at=aged(40))
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    assert sync.push(other.pk).outcome is sync.Outcome.PUSHED  # a free lease: no takeover
    assert sync.push(customer.pk).outcome is sync.Outcome.NOTHING  # its own lease again: none either
    assert figures().lease_takeovers == 1
    assert sync.status(window=1).accounts[0].lease_takeovers == 1
    PushLease.objects.filter(customer=customer).update(taken_over_at=aged(60))
    assert sync.status(window=30).accounts[0].lease_takeovers == 0  # out of the window


def test_conflicts_within_the_window(stripe):
    obj = stripe.add_customer(email="a@example.com", name="Ann")
    customer = sync.pull_one(obj["id"])
    customer.email = "local@example.com"
    customer.save()
    stripe.update_customer_directly(obj["id"], email="remote@example.com")
    assert sync.pull().conflicts == 1
    assert figures().conflicts == 1
    assert sync.status(window=0.001).accounts[0].conflicts == 0


def test_webhooks_by_outcome_the_last_ones_age_and_bad_signatures(stripe, client):
    customer = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    payload = customer_event(customer.stripe_id, "Hook", event_id="evt_health_1")
    assert deliver(client, payload).status_code == 200
    assert deliver(client, payload).status_code == 200  # the same event again: a duplicate
    assert deliver(client, payload, secret="whsec_not_this_one").status_code == 400
    found = figures()
    assert found.webhooks == {"applied": 1, "duplicate": 1}
    assert found.bad_signatures == 1
    assert found.last_webhook_age < 5
    assert [p.level for p in found.problems()] == [WARNING]


def test_a_webhook_long_ago_warns_when_its_age_is_checked(stripe, client, settings):
    customer = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    assert deliver(client, customer_event(customer.stripe_id, "Hook", event_id="evt_old")).status_code == 200
    WebhookEvent.objects.update(received_at=aged(5400))
    found = figures()
    assert (found.webhooks, found.last_webhook_age) == ({}, None)  # not within the window's hour
    assert found.level() == HEALTHY  # STATUS_MAX_WEBHOOK_AGE: None, not checked
    assert [p.text for p in found.problems(max_webhook_age=3600)] == ["no webhook within the last 3600 s"]
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "STATUS_MAX_WEBHOOK_AGE": 3600}
    found = figures()  # looked for back over twice the age: found, and too old
    assert 5399 < found.last_webhook_age < 5500
    assert [p.text for p in found.problems()] == ["last webhook 5400 s ago (warning above 3600 s)"]


def test_the_catch_up_reached_the_end_and_a_cursor_behind(stripe):
    assert figures().last_catch_up_age is None
    sync.catch_up()
    found = figures()
    assert found.last_catch_up_age < 5 and found.catch_up_behind is False
    EventCursor.objects.filter(key="default").update(behind="the oldest event Stripe keeps is after the cursor")
    found = figures()
    assert found.catch_up_behind is True and found.level() == WARNING


def test_each_account_has_its_own_figures(stripe, fleet):  # noqa: F811
    seed_same_id(stripe)
    customers = {label: sync.pull_one(SAME_ID, account=fleet[label]) for label in fleet}
    for customer in customers.values():
        customer.name = "Edited"
        customer.save()
    stripe.inject(status=400, account="acct_C2", error={"type": "invalid_request_error", "message": "No."})
    for label in ("C1", "C2"):
        sync.push(customers[label].pk)
    found = {a.account: a for a in sync.status().accounts}
    assert list(found) == ["default", "default/acct_C1", "second", "second/acct_C2"]
    assert {name: (a.waiting, a.failed, a.pushes) for name, a in found.items()} == {
        "default": (1, 0, {}),
        "default/acct_C1": (0, 0, {"succeeded": 1}),
        "second": (1, 0, {}),
        "second/acct_C2": (0, 1, {"failed": 1}),
    }
    assert figures("second/acct_C2").failed == 1
    with pytest.raises(UnknownAccount):
        sync.status("second/acct_Nope")


def test_the_figures_are_plain_json():
    found = sync.status()
    text = json.dumps(found.to_dict())
    assert json.loads(text)["accounts"][0]["account"] == "default"


def count_queries() -> int:
    with CaptureQueriesContext(connection) as queries:
        sync.status()
    return len(queries)


def test_the_number_of_queries_grows_with_neither_customers_nor_accounts(stripe, client):
    few = count_queries()
    for n in range(5):
        account = Account.objects.create(platform="default", stripe_account=f"acct_Many{n}")
        for m in range(4):
            customer = Customer.objects.create(name=f"C{n}-{m}", account=account)
            PendingPush.objects.filter(customer=customer).update(state=PushState.FAILED)
            PushAttempt.objects.create(
                push=PendingPush.objects.filter(customer=customer).first(),
                customer=customer,
                idempotency_key="k",
                outcome="failed",
                http_status=400,
            )
    customer = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    deliver(client, customer_event(customer.stripe_id, "Hook", event_id="evt_many"))
    sync.catch_up()
    assert len(sync.status().accounts) == 6
    # The accounts, the outbox, the failed, the conflicts, the sync log, the leases, the webhooks, the cursors.
    assert count_queries() == few == 8
