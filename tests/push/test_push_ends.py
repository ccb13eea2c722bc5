"""Every failure of a push ends recorded, whatever is raised: a table per class of failure.

The server is the tests' fake Stripe on 127.0.0.1, told to answer each row's hostile
answer (``inject``). Each row asserts the record's final state (never ``sending``
once the push returned), the error on the customer, what the server received, what
was stored, and the sync log.
"""

from __future__ import annotations

import json
import logging

import pytest
from django.conf import settings

from customersync import signals, sync
from customersync.exceptions import CreateFailed, Paused, RetryLater
from customersync.models import Account, AttemptOutcome, Customer, PendingPush, PushAttempt, PushState, SyncStatus
from customersync.push import send
from tests.owners import make_owner

pytestmark = pytest.mark.django_db


def mirrored(stripe, **fields):
    return sync.pull_one(stripe.add_customer(**fields)["id"])


def edited(stripe):
    """A mirrored customer, Ann in Stripe, renamed Bea here (one push owed: ``name=Bea``)."""
    customer = mirrored(stripe, name="Ann", email="ann@example.com")
    customer.name = "Bea"
    customer.save()
    stripe.clear_requests()
    return customer


def posts(stripe):
    return [(r.method, r.path, r.body) for r in stripe.requests if r.method == "POST"]


def states(customer):
    return sorted(PendingPush.objects.filter(customer=customer).values_list("state", flat=True))


def attempts(customer):
    return list(
        PushAttempt.objects.filter(customer=customer)
        .order_by("id")
        .values_list("outcome", "http_status", "error_type", "error_message")
    )


# -- a 200 that cannot be read or stored: anything raised ends the push failed -----------------------
#
# Not retried: under the same idempotency key Stripe replays the answer it gave, so a malformed
# answer comes back as it was. The customer shows the exception's type and message; pushed again
# (customersync_push, the admin) once the server answers as Stripe does.

MALFORMED_ANSWERS = [
    # (answer's changes or headers, the error's type, what its message says)
    pytest.param({"headers": {"Content-Length": "\u00b2"}}, None, "Content-Length is not one number", id="length-²"),
    pytest.param({"created": "yesterday"}, "TypeError", "TypeError", id="created-text"),
    pytest.param({"created": 1e300}, "OverflowError", "OverflowError", id="created-1e300"),
    pytest.param({"created": -1e15}, "ValueError", "out of range", id="created-before-year-1"),
    # Refused by the database's encoding, or by the columns' own check where it knows surrogates.
    pytest.param({"name": "\ud800"}, {"UnicodeEncodeError", None}, ("surrogates", "cannot store"), id="surrogate"),
]


def says_it(text, says):
    return any(part in text for part in ((says,) if isinstance(says, str) else says))


def of_type(found, expected):
    return found in expected if isinstance(expected, set) else found == expected


def hostile(stripe, change, stripe_id=None, **answer):
    """Answer the next POST with ``answer`` changed by ``change`` (or with its headers)."""
    if "headers" in change:
        stripe.inject(status=None, headers=change["headers"], path_prefix="/v1/customers")
        return
    base = stripe.get_customer(stripe_id) if stripe_id else {"id": "cus_Hostile1", "object": "customer"}
    stripe.inject(status=200, body=json.dumps({**base, **answer, **change}))


@pytest.mark.parametrize(("change", "error_type", "says"), MALFORMED_ANSWERS)
def test_an_update_answered_with_a_200_that_cannot_be_read_ends_failed(stripe, change, error_type, says):
    customer = edited(stripe)
    hostile(stripe, change, customer.stripe_id, name="Bea")
    result = sync.push(customer.pk)  # nothing raised

    assert result.outcome is sync.Outcome.FAILED and says_it(result.error["message"], says)
    assert posts(stripe) == [("POST", f"/v1/customers/{customer.stripe_id}", b"name=Bea")]  # once, not again
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.FAILED
    assert of_type(customer.sync_error["type"], error_type) and says_it(customer.sync_error["message"], says)
    assert customer.name == "Bea" and customer.stripe_data["name"] == "Ann"  # nothing of the answer stored
    assert states(customer) == [PushState.FAILED]  # not left sending
    ((outcome, status, logged_type, message),) = attempts(customer)
    assert outcome == AttemptOutcome.FAILED and says_it(message, says)
    assert of_type(None if logged_type == "APIError" else logged_type, error_type)
    assert status == (200 if customer.sync_error["type"] is None else None)
    # Once the server answers as Stripe does, the customer's next push goes through.
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED


@pytest.mark.parametrize(("change", "error_type", "says"), MALFORMED_ANSWERS)
def test_a_create_answered_with_a_200_that_cannot_be_read_ends_failed(stripe, change, error_type, says):
    customer = Customer.objects.create(name="New", email="new@example.com")
    stripe.clear_requests()
    hostile(stripe, change, name="New", email="new@example.com")
    result = sync.push(customer.pk)

    assert result.outcome is sync.Outcome.FAILED and says_it(result.error["message"], says)
    assert [(method, path) for method, path, _ in posts(stripe)] == [("POST", "/v1/customers")]
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.FAILED and says_it(customer.sync_error["message"], says)
    assert of_type(customer.sync_error["type"], error_type)
    assert customer.stripe_id is None and not customer.stripe_data  # no id, nothing stored
    assert states(customer) == [PushState.FAILED]
    assert [a[0] for a in attempts(customer)] == [AttemptOutcome.FAILED]


@pytest.mark.parametrize(("change", "error_type", "says"), MALFORMED_ANSWERS)
def test_an_owners_create_waited_for_ends_in_create_failed_with_the_error(stripe, change, error_type, says):
    owner = make_owner("Acme")
    hostile(stripe, change, name="Acme")
    with pytest.raises(CreateFailed) as info:
        sync.get_or_create_for(owner, wait=True, timeout=10)
    assert says_it(info.value.error["message"], says) and of_type(info.value.error["type"], error_type)
    assert [(r.method, r.path) for r in stripe.requests] == [("GET", "/v1/customers/search"), ("POST", "/v1/customers")]
    customer = sync.for_owner(owner)
    assert customer.sync_status == SyncStatus.FAILED and customer.stripe_id is None
    assert states(customer) == [PushState.FAILED]


def test_an_owners_create_in_an_account_whose_platform_was_removed_fails_naming_it(stripe):
    Account.objects.create(platform="gone")
    owner = make_owner("Acme")
    with pytest.raises(CreateFailed) as info:
        sync.get_or_create_for(owner, account="gone", wait=True, timeout=10)
    assert "No platform 'gone'" in info.value.error["message"] and info.value.error["type"] == "ConfigurationError"
    assert stripe.requests == []
    assert states(sync.for_owner(owner, account="gone")) == [PushState.FAILED]


# -- the owner's search before a create: an answer that is not a list of customers ------------------

SEARCH_ANSWERS = [
    pytest.param({"object": "search_result", "data": "abc"}, id="data-text"),
    pytest.param({"object": "search_result", "data": {"id": "cus_A"}}, id="data-object"),
    pytest.param({"object": "search_result"}, id="no-data"),
]


@pytest.mark.parametrize("answer", SEARCH_ANSWERS)
def test_an_owner_search_answered_with_what_is_no_list_of_customers_ends_the_create_failed(stripe, answer):
    owner = make_owner("Acme")
    customer = sync.get_or_create_for(owner)
    stripe.inject(status=200, body=json.dumps(answer), method="GET", path_prefix="/v1/customers/search")
    result = sync.push(customer.pk)

    not_a_list = "Stripe's search answer is not a list of customers."
    assert result.outcome is sync.Outcome.FAILED and result.error["message"] == not_a_list
    assert [(r.method, r.path) for r in stripe.requests] == [("GET", "/v1/customers/search")]  # no create
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.FAILED and customer.sync_error["message"] == not_a_list
    assert customer.stripe_id is None and states(customer) == [PushState.FAILED]
    assert [(a[0], a[2]) for a in attempts(customer)] == [(AttemptOutcome.FAILED, "APIError")]
    assert stripe.customers == {}


# A list whose entries are no customers naming the owner: none is adopted, the owner's customer is
# created, and the sync log says what the search answered instead.
SEARCH_ENTRIES = [
    pytest.param([{"id": "cus_A", "created": 5}, {"id": "cus_B", "created": "x"}], id="created-mixed"),
    pytest.param([5, 6], id="numbers"),
    pytest.param([{"created": 5, "metadata": "x"}], id="no-id"),
]


@pytest.mark.parametrize("entries", SEARCH_ENTRIES)
def test_an_owner_search_answering_entries_that_are_no_owners_customer_creates_it(stripe, entries):
    owner = make_owner("Acme")
    customer = sync.get_or_create_for(owner)
    answer = {"object": "search_result", "data": entries}
    stripe.inject(status=200, body=json.dumps(answer), method="GET", path_prefix="/v1/customers/search")
    result = sync.push(customer.pk)

    assert result.outcome is sync.Outcome.PUSHED
    assert [(r.method, r.path) for r in stripe.requests] == [
        ("GET", "/v1/customers/search"),
        ("POST", "/v1/customers"),
    ]
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC and list(stripe.customers) == [customer.stripe_id]
    (attempt,) = PushAttempt.objects.filter(customer=customer)
    assert attempt.error_code == "owner_mismatch" and attempt.error_message.startswith("Not adopted")


# -- settings that cannot make a client: failed, nothing sent --------------------------------------
#
# Not retried: a platform comes back to the settings with a deploy, later than any backoff. The
# customer shows the setting to fix; customersync_push (every failed customer) sends it then.


def test_a_customer_whose_platform_was_removed_from_settings_fails_naming_it(stripe):
    gone = Account.objects.create(platform="gone")
    customer = Customer.objects.create(name="New", account=gone)
    result = sync.push(customer.pk)

    assert result.outcome is sync.Outcome.FAILED
    assert stripe.requests == []
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.FAILED
    assert customer.sync_error["type"] == "ConfigurationError" and customer.sync_error["code"] == "configuration_error"
    assert "No platform 'gone'" in customer.sync_error["message"]
    assert states(customer) == [PushState.FAILED]  # not re-queued forever
    ((outcome, status, error_type, message),) = attempts(customer)
    assert (outcome, status, error_type) == (AttemptOutcome.FAILED, None, "ConfigurationError")
    assert "No platform 'gone'" in message
    assert PushAttempt.objects.get(customer=customer).params == {}  # nothing was sent


def test_a_customer_whose_account_id_cannot_make_a_client_fails_naming_it(stripe):
    odd = Account.objects.create(platform="default", stripe_account="acct_12\n")
    customer = Customer.objects.create(name="New", account=odd)
    result = sync.push(customer.pk)

    assert result.outcome is sync.Outcome.FAILED
    assert stripe.requests == []
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.FAILED and "Not a Stripe account id" in customer.sync_error["message"]
    assert customer.sync_error["type"] == "ConfigurationError"
    assert states(customer) == [PushState.FAILED]
    assert [(a[0], a[2]) for a in attempts(customer)] == [(AttemptOutcome.FAILED, "ConfigurationError")]


def test_the_platforms_removal_fails_the_push_but_a_later_push_goes_once_it_is_back(stripe, settings):
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "PLATFORMS": {}}
    back = Account.objects.create(platform="back")
    customer = Customer.objects.create(name="New", account=back)
    assert sync.push(customer.pk).outcome is sync.Outcome.FAILED
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "PLATFORMS": {"back": {"API_KEY": settings.TEST_API_KEY}}}
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC and customer.sync_error is None
    assert [(r.method, r.path) for r in stripe.requests] == [("POST", "/v1/customers")]


# -- a connection that failed outside the client: retried, never left without an error ---------------


class BrokenBudget:
    """A rate budget whose store is away (Redis down)."""

    name = "broken"

    def acquire(self):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    def sending(self):
        return None

    def penalize(self, seconds):
        pass


def test_the_rate_budgets_store_away_is_retried_then_fails(stripe, monkeypatch, settings):
    customer = edited(stripe)
    monkeypatch.setattr(send.rate_budget, "budget", lambda *args: BrokenBudget())
    for attempt in range(1, settings.CUSTOMERSYNC["MAX_RETRIES"] + 1):
        with pytest.raises(RetryLater) as info:
            sync.push(customer.pk)
        assert info.value.attempts == attempt
        customer.refresh_from_db()
        assert customer.sync_status == SyncStatus.PENDING and customer.sync_error["code"] == "connection_error"
        assert states(customer) == [PushState.PENDING]
    result = sync.push(customer.pk)
    assert result.outcome is sync.Outcome.FAILED and "Connection refused" in result.error["message"]
    assert stripe.requests == [] and states(customer) == [PushState.FAILED]


# -- a receiver of the push's signals that raises: the push's outcome stands ---------------------------


def test_a_receiver_raising_after_the_confirm_leaves_the_push_pushed(stripe, caplog):
    customer = edited(stripe)

    def broken(**kwargs):
        raise RuntimeError("a receiver's bug")

    signals.customer_pushed.connect(broken, weak=False)
    try:
        with caplog.at_level(logging.ERROR, logger="customersync"):
            result = sync.push(customer.pk)
    finally:
        signals.customer_pushed.disconnect(broken)
    assert result.outcome is sync.Outcome.PUSHED
    assert states(customer) == [PushState.SENT]
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC and customer.stripe_data["name"] == "Bea"
    assert "a receiver raised" in caplog.text and "a receiver's bug" in caplog.text


# -- stored error text holds no key --------------------------------------------------------

ECHOED_KEY = settings.TEST_API_KEY
LIVE = "sk_" + "live_" + "not0a0live0key0" * 2
RESTRICTED = "rk_" + "test_" + "not0a0real0key0" * 2
WEBHOOK = "whsec_" + "not0a0real0secret0" * 2
UNSHAPED = "hook-secret-" + "0123456789abcdef"  # a configured webhook secret of no Stripe shape

SECRET_ERRORS = [
    pytest.param(401, {"message": f"Invalid API Key provided: {ECHOED_KEY}"}, [ECHOED_KEY], id="401-echoes-the-key"),
    pytest.param(
        401,
        {"message": f"Invalid API Key provided: ***{ECHOED_KEY.removeprefix('sk_test_')}"},
        [ECHOED_KEY.removeprefix("sk_test_")],
        id="401-echoes-the-keys-tail",
    ),
    pytest.param(400, {"message": f"Keys {LIVE} and {RESTRICTED}"}, [LIVE, RESTRICTED], id="400-key-shapes"),
    pytest.param(
        400, {"message": "bad", "param": WEBHOOK, "code": f"c_{RESTRICTED}"}, [WEBHOOK, RESTRICTED], id="400-fields"
    ),
    pytest.param(400, {"message": f"the secret is {UNSHAPED}"}, [UNSHAPED], id="400-configured-secret"),
]


@pytest.mark.parametrize(("status", "error", "secrets"), SECRET_ERRORS)
def test_a_stored_error_never_holds_a_key_or_a_secret(stripe, settings, caplog, status, error, secrets):
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "WEBHOOK_SECRET": UNSHAPED}
    customer = edited(stripe)
    stripe.inject(status=status, error={"type": "invalid_request_error", **error})
    with caplog.at_level(logging.DEBUG, logger="customersync"):
        try:
            shown = str(sync.push(customer.pk).error)
        except RetryLater as later:  # a 401 is retried (a key rotated while the push waited)
            shown = f"{later} {later.error!r} {later.error.as_dict()}"
    assert posts(stripe) == [("POST", f"/v1/customers/{customer.stripe_id}", b"name=Bea")]
    customer.refresh_from_db()
    stored = json.dumps(customer.sync_error)
    logged = json.dumps(list(PushAttempt.objects.filter(customer=customer).values()), default=str)
    assert "[redacted]" in stored and "[redacted]" in logged
    for secret in secrets:
        for text in (stored, logged, caplog.text, shown):
            assert secret not in text
    assert states(customer) == ([PushState.SENDING] if status == 401 else [PushState.FAILED])
    assert customer.sync_error is not None  # a record left sending carries its error


# -- a pause is handed back, never slept in the worker ---------------------------------------


def test_a_paused_accounts_push_is_handed_back_with_the_pauses_countdown(stripe):
    from customersync.accounts import budget_name
    from customersync.models import PushLease
    from customersync.stripe import rate_budget

    customer = edited(stripe)
    budget = rate_budget.budget(budget_name(None))
    budget.penalize(60)
    try:
        with pytest.raises(Paused) as info:
            sync.push(customer.pk)
    finally:  # the pause, and the paced times it put past it: the budget is the session's
        budget.redis.delete(budget.penalty_key, budget.key)
    assert 50 < info.value.seconds <= 60 and info.value.error.code == "rate_limit_pause"
    assert stripe.requests == []
    assert states(customer) == [PushState.PENDING] and attempts(customer) == []  # nothing taken, nothing sent
    assert not PushLease.objects.filter(customer=customer).exclude(owner="").exists()  # the lease is free
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED  # once the pause is over


class PausedAfterTheTake:
    """A budget that grants, then finds the account paused right before the request goes (a 429
    for another of its customers came in between)."""

    name = "paused"

    def __init__(self):
        self.paused = True

    def acquire(self):
        pass

    def sending(self):
        if self.paused:
            raise Paused(3.0, self.name)
        return None

    def penalize(self, seconds):
        pass


def test_a_pause_that_begins_after_the_take_keeps_the_frozen_record_for_the_retry(stripe, monkeypatch):
    customer = edited(stripe)
    budget = PausedAfterTheTake()
    monkeypatch.setattr(send.rate_budget, "budget", lambda *args: budget)
    with pytest.raises(Paused):
        sync.push(customer.pk)
    assert stripe.requests == []
    record = PendingPush.objects.get(customer=customer)
    assert record.state == PushState.SENDING and record.attempts == 0  # frozen, not counted as a failure
    customer.refresh_from_db()
    assert customer.sync_error["code"] == "rate_limit_pause"  # sending, with its reason
    assert [(a[0], a[2]) for a in attempts(customer)] == [(AttemptOutcome.RETRY, "RateLimitError")]
    budget.paused = False
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    (sent,) = [r for r in stripe.requests if r.method == "POST"]
    assert sent.idempotency_key == record.idempotency_key and sent.body == b"name=Bea"  # resent as frozen
