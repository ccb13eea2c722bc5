"""Every signed, usable event an endpoint takes or refuses leaves one row: its account and its outcome.

The outcomes are applied, duplicate, stale, ignored and refused; the account is the platform whose
endpoint received it and the connected account it belongs to ("" for the platform's own). An
event id is handled once per platform: the same event delivered to two platforms' Connect
endpoints (one connected account connected to both) is applied by each, and a redelivery to
either is a duplicate there.
"""

from __future__ import annotations

import pytest

from customersync.models import Account, Customer, WebhookEvent
from customersync.pull.pages import PullStats, store_page
from tests.webhooks import test_account_webhooks as endpoints
from tests.webhooks.test_account_webhooks import SAME_ID, event, names, post

accounts = endpoints.accounts  # the fixture: four accounts, one customer SAME_ID in each

pytestmark = pytest.mark.django_db


def other_event(event_id: str, *, account: str | None = None) -> dict:
    found = {**event("X", event_id=event_id, account=account), "type": "invoice.paid"}
    found["data"] = {"object": {"id": "in_1", "object": "invoice"}}
    return found


def older(event_id: str, *, account: str | None = None) -> dict:
    return {**event("Old", event_id=event_id, account=account), "created": 1_600_000_000}


def deliveries() -> list[tuple]:
    """(id, platform, connect, payload, status, the answer's outcome, the row: platform, account, outcome),
    made when the test runs: an event's time is then, after the accounts' customers were stored."""
    return [
        (
            "applied-own-account",
            "default",
            False,
            event("A", event_id="evt_own"),
            200,
            "applied",
            ("default", "", "applied"),
        ),
        (
            "applied-connected",
            "eu",
            True,
            event("B", event_id="evt_conn", account="acct_B"),
            200,
            "applied",
            ("eu", "acct_B", "applied"),
        ),
        (
            "duplicate",
            "eu",
            True,
            event("B", event_id="evt_conn", account="acct_B"),
            200,
            "duplicate",
            ("eu", "acct_B", "duplicate"),
        ),
        (
            "stale",
            "default",
            True,
            older("evt_old", account="acct_A"),
            200,
            "out of order",
            ("default", "acct_A", "stale"),
        ),
        ("ignored-not-a-customer", "eu", False, other_event("evt_inv"), 200, "ignored", ("eu", "", "ignored")),
        (
            "ignored-not-mirrored",
            "eu",
            True,
            event("X", event_id="evt_unknown", account="acct_Unknown"),
            200,
            "ignored: account not mirrored",
            ("eu", "acct_Unknown", "ignored"),
        ),
        (
            "refused-connected-at-account-endpoint",
            "eu",
            False,
            event("X", event_id="evt_wrong", account="acct_B"),
            400,
            None,
            ("eu", "acct_B", "refused"),
        ),
        (
            "refused-other-mode",
            "eu",
            False,
            event("Live", event_id="evt_live", livemode=True),
            400,
            None,
            ("eu", "", "refused"),
        ),
    ]


def recorded() -> list[tuple[str, str, str, str]]:
    rows = WebhookEvent.objects.order_by("pk").values_list("event_id", "platform", "stripe_account", "outcome")
    return list(rows)


def test_every_delivery_is_recorded_with_its_account_and_outcome(client, accounts):
    # The stale one: acct_A's customer confirmed after the event's time.
    Customer.objects.filter(account=accounts["default/acct_A"]).update(confirmed_at="2024-01-01T00:00:00Z")
    expected = []
    sent = deliveries()
    for label, platform, connect, payload, status, said, row in sent:
        response = post(client, platform, connect, payload)
        assert response.status_code == status, (label, response.content)
        if said is not None:
            assert response.json() == {"outcome": said}, label
        expected.append((payload["id"], *row))
        assert recorded() == expected, label
    assert len(recorded()) == len(sent)  # of every delivery, one row


def test_one_customer_id_in_four_accounts_has_events_told_apart(client, accounts):
    for platform, connect, account, event_id in [
        ("default", False, None, "evt_1"),
        ("default", True, "acct_A", "evt_2"),
        ("eu", False, None, "evt_3"),
        ("eu", True, "acct_B", "evt_4"),
    ]:
        assert post(client, platform, connect, event("Changed", account=account, event_id=event_id)).status_code == 200
    rows = WebhookEvent.objects.filter(stripe_id=SAME_ID).values_list("platform", "stripe_account")
    assert sorted(rows) == [("default", ""), ("default", "acct_A"), ("eu", ""), ("eu", "acct_B")]


# -- one event id at two platforms' Connect endpoints ----------------------------------------


@pytest.fixture
def shared(accounts):
    """acct_B connected to both platforms, and mirrored under each."""
    both = Account.objects.create(platform="default", stripe_account="acct_B")
    obj = {"id": SAME_ID, "object": "customer", "name": "Ann of default/acct_B", "created": 1700000000}
    store_page([obj], PullStats(), account=both)
    return accounts


def test_the_same_event_at_two_platforms_connect_endpoints_is_applied_by_each(client, shared):
    payload = event("Changed in acct_B", event_id="evt_shared", account="acct_B")
    first = post(client, "eu", True, payload)
    second = post(client, "default", True, payload)
    assert (first.json(), second.json()) == ({"outcome": "applied"}, {"outcome": "applied"})
    assert names()["eu/acct_B"] == "Changed in acct_B" and names()["default/acct_B"] == "Changed in acct_B"
    # A redelivery to either platform is a duplicate there, and changes nothing.
    Customer.objects.filter(stripe_id=SAME_ID).update(name="edited since")
    assert post(client, "eu", True, payload).json() == {"outcome": "duplicate"}
    assert post(client, "default", True, payload).json() == {"outcome": "duplicate"}
    assert set(names().values()) == {"edited since"}
    assert recorded() == [
        ("evt_shared", "eu", "acct_B", "applied"),
        ("evt_shared", "default", "acct_B", "applied"),
        ("evt_shared", "eu", "acct_B", "duplicate"),
        ("evt_shared", "default", "acct_B", "duplicate"),
    ]


def test_a_refused_delivery_does_not_claim_its_event_id(client, accounts):
    payload = event("Changed", event_id="evt_retry", account="acct_B")
    assert post(client, "eu", False, payload).status_code == 400  # sent to the wrong endpoint first
    assert post(client, "eu", True, payload).json() == {"outcome": "applied"}
    assert [row[3] for row in recorded()] == ["refused", "applied"]


def test_redeliveries_keep_one_applied_row_per_platform(client, accounts):
    payload = event("Changed", event_id="evt_many", account="acct_B")
    answers = [post(client, "eu", True, payload).json()["outcome"] for _ in range(3)]
    assert answers == ["applied", "duplicate", "duplicate"]
    assert WebhookEvent.objects.filter(event_id="evt_many", outcome="applied").count() == 1
