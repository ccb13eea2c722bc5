"""The catch-up from Stripe's events log and the reconcile, against the fake server's events log.

Each account's cursor moves past each event applied (a stopped run resumes after it), each event
is applied once through the webhook's own path, an event of another API version is not trusted
for its payload, a cursor the log cannot reach falls back to a reconcile whose figures are exact,
and a catch-up of one account asks nothing of another.
"""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from customersync import sync
from customersync.accounts import stripe_client
from customersync.exceptions import ConfigurationError, StripeError
from customersync.models import Account, Customer, Drift, EventCursor, EventOutcome, SyncStatus, WebhookEvent
from customersync.pull import catchup
from customersync.stripe.client import StripeClient

pytestmark = pytest.mark.django_db

TYPES = ["customer.created", "customer.deleted", "customer.updated"]
THIRTY_ONE_DAYS = 31 * 24 * 3600


def event_requests(stripe, account=None):
    return [r for r in stripe.requests if r.path == "/v1/events" and (account is None or r.account == account)]


def test_a_first_catch_up_starts_from_the_newest_event_and_applies_nothing(stripe):
    cus = stripe.add_customer(name="Ann")["id"]
    sync.pull_one(cus)
    stripe.change_customer(cus, name="Before the cursor")
    stripe.clear_requests()
    stats = catchup.catch_up()
    assert stats.started and stats.applied == 0
    cursor = EventCursor.objects.get(key="default")
    assert cursor.event_id == stripe.events[-1]["id"]
    assert Customer.objects.get(stripe_id=cus).name == "Ann"  # deliberately skipped: before the cursor
    (request,) = event_requests(stripe)
    assert request.params == {"limit": "1", "types": TYPES}


def test_events_after_the_cursor_are_applied_oldest_first_each_once(stripe):
    ann = stripe.add_customer(name="Ann", email="ann@example.com")["id"]
    bob = stripe.add_customer(name="Bob")["id"]
    stripe.change_customer(bob, metadata={"before": "the cursor"})  # the newest event: the cursor's
    ann, bob = sync.pull_one(ann), sync.pull_one(bob)
    catchup.catch_up()
    anchor = EventCursor.objects.get(key="default").event_id
    stripe.clear_requests()
    stripe.change_customer(ann.stripe_id, email="first@example.com")
    stripe.change_customer(ann.stripe_id, email="second@example.com", name="Ann B")
    stripe.remove_customer(bob.stripe_id)
    new = stripe.create_customer(name="Cleo")["data"]["object"]["id"]

    stats = catchup.catch_up()
    assert stats.applied == 4 and stats.outcomes == {"applied": 2, "deleted": 1, "created": 1}
    ann.refresh_from_db()
    assert (ann.email, ann.name) == ("second@example.com", "Ann B")
    assert Customer.objects.get(stripe_id=bob.stripe_id).sync_status == SyncStatus.DELETED
    assert Customer.objects.get(stripe_id=new).name == "Cleo"
    cursor = EventCursor.objects.get(key="default")
    assert cursor.event_id == stripe.events[-1]["id"] and cursor.applied == 4
    (request,) = event_requests(stripe)
    assert request.params == {"limit": "100", "types": TYPES, "ending_before": anchor}
    assert {r.method for r in stripe.requests} == {"GET"}  # nothing pushed back

    # Again: nothing new; each event was applied once.
    assert catchup.catch_up().applied == 0
    applied = WebhookEvent.objects.filter(outcome=EventOutcome.APPLIED)
    assert sorted(applied.values_list("event_id", flat=True)) == sorted(e["id"] for e in stripe.events[-4:])


class FailsSecondPage(StripeClient):
    """A real client whose second events page meets a 500 from the fake server."""

    def __init__(self, stripe, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stripe, self.pages = stripe, 0

    def list_events(self, **kwargs):
        self.pages += 1
        if self.pages == 2:
            self.stripe.inject(status=500, method="GET", path_prefix="/v1/events")
        return super().list_events(**kwargs)


def test_a_run_stopped_by_stripe_resumes_after_the_last_event_applied(stripe):
    cus = stripe.add_customer(name="Ann")["id"]
    stripe.change_customer(cus, metadata={"n": "start"})  # the cursor's event
    customer = sync.pull_one(cus)
    catchup.catch_up()
    for n in range(5):
        stripe.change_customer(customer.stripe_id, metadata={"n": str(n)})
    events = [e["id"] for e in stripe.events[-5:]]
    client = FailsSecondPage(stripe, settings.TEST_API_KEY, api_base=stripe.url)
    with pytest.raises(StripeError):
        catchup.catch_up(client=client, page_size=2)
    cursor = EventCursor.objects.get(key="default")
    assert (cursor.event_id, cursor.applied) == (events[1], 2)  # the first page's two, committed
    customer.refresh_from_db()
    assert customer.metadata == {"n": "1"}

    stripe.clear_requests()
    stats = catchup.catch_up(page_size=2)
    assert stats.applied == 3
    assert event_requests(stripe)[0].params["ending_before"] == events[1]
    customer.refresh_from_db()
    assert customer.metadata == {"n": "4"}
    assert WebhookEvent.objects.filter(event_id__in=events).count() == 5  # each once


def test_an_event_of_another_api_version_applies_the_customer_as_stripe_answers_it(stripe):
    cus = stripe.add_customer(name="Ann")["id"]
    stripe.change_customer(cus, metadata={"n": "start"})  # the cursor's event
    customer = sync.pull_one(cus)
    catchup.catch_up()
    stripe.change_customer(customer.stripe_id, name="From the event")
    stripe.update_customer_directly(customer.stripe_id, name="As Stripe answers now")
    stripe.clear_requests()
    with override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "API_VERSION": "2024-06-20"}):
        stats = catchup.catch_up()
    assert stats.applied == 1
    assert [(r.method, r.path) for r in stripe.requests] == [
        ("GET", "/v1/events"),
        ("GET", f"/v1/customers/{customer.stripe_id}"),
    ]
    customer.refresh_from_db()
    assert customer.name == "As Stripe answers now"


def test_a_cursor_older_than_the_log_keeps_falls_back_to_a_reconcile_with_exact_figures(stripe, caplog):
    ids = [stripe.add_customer(name=f"C{n}", email=f"c{n}@example.com")["id"] for n in range(10)]
    stripe.change_customer(ids[9], metadata={"n": "start"})  # the cursor's event
    sync.pull()
    catchup.catch_up()  # the cursor, on the newest event
    stripe.change_customer(ids[0], name="Changed in Stripe")  # an event, soon out of the log's reach
    for cus in ids[1:4]:  # drift: changed in Stripe, without an event
        stripe.update_customer_directly(cus, email=f"drifted-{cus}@example.com")
    for cus in ids[4:6]:  # hard deletes: gone without an event
        stripe.delete_customer(cus)
    added = [stripe.add_customer(name=f"New {n}")["id"] for n in range(4)]
    # A local edit not yet pushed, on a customer Stripe also changed elsewhere: the edit is kept.
    kept = Customer.objects.get(stripe_id=ids[6])
    Customer.objects.filter(pk=kept.pk).update(description="edited here")
    stripe.update_customer_directly(ids[6], phone="+33100000000")
    stripe.advance_clock(THIRTY_ONE_DAYS)

    with caplog.at_level(logging.ERROR, logger="customersync"):
        stats = catchup.catch_up()
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "the default platform's own account" in error.getMessage()
    figures = stats.reconciled
    assert figures is not None
    assert (figures.seen, figures.drifted, figures.deleted, figures.added) == (12, 5, 2, 4)
    cursor = EventCursor.objects.get(key="default")
    assert cursor.behind_at is not None and "no longer lists" in cursor.behind
    assert (cursor.seen, cursor.drifted, cursor.deleted, cursor.added) == (12, 5, 2, 4)
    drift = set(Drift.objects.values_list("customer__stripe_id", "param"))
    assert drift == {(ids[0], "name"), *((cus, "email") for cus in ids[1:4]), (ids[6], "phone")}
    for cus in ids[:4]:
        mirrored = Customer.objects.get(stripe_id=cus)
        theirs = stripe.get_customer(cus)
        assert (mirrored.name, mirrored.email) == (theirs["name"], theirs["email"])
    assert set(Customer.objects.filter(sync_status=SyncStatus.DELETED).values_list("stripe_id", flat=True)) == set(
        ids[4:6]
    )
    assert set(added) <= set(Customer.objects.values_list("stripe_id", flat=True))
    kept.refresh_from_db()
    assert (kept.description, kept.phone) == ("edited here", "+33100000000")
    # The cursor starts again from the newest event listed (none: the log's are all gone, so from then).
    assert cursor.event_id == ""
    stripe.change_customer(ids[7], name="After the reconcile")
    assert catchup.catch_up().applied == 1
    assert Customer.objects.get(stripe_id=ids[7]).name == "After the reconcile"
    assert EventCursor.objects.get(key="default").event_id == stripe.events[-1]["id"]


def test_a_reconcile_leaves_test_clock_customers_it_cannot_list(stripe):
    ids = [stripe.add_customer(name=f"C{n}")["id"] for n in range(3)]
    sync.pull()
    on_clock = Customer.objects.get(stripe_id=ids[0])
    Customer.objects.filter(pk=on_clock.pk).update(stripe_data={**on_clock.stripe_data, "test_clock": "clock_1"})
    stripe.delete_customer(ids[0])  # not listed, as Stripe leaves out a test clock's customers
    stripe.delete_customer(ids[1])
    figures = catchup.reconcile()
    assert (figures.seen, figures.deleted) == (1, 1)
    assert Customer.objects.get(stripe_id=ids[0]).sync_status != SyncStatus.DELETED


@pytest.fixture
def connected(stripe, settings):
    stripe.add_platform("acct_P1", [settings.TEST_API_KEY], connected=["acct_C1", "acct_C2"])
    yield {
        "C1": Account.objects.create(platform="default", stripe_account="acct_C1"),
        "C2": Account.objects.create(platform="default", stripe_account="acct_C2"),
    }
    stripe.forget_platforms()


def test_each_account_keeps_its_own_cursor_and_a_catch_up_asks_only_its_own(stripe, connected):
    c1, c2 = connected["C1"], connected["C2"]
    one = stripe.add_customer(account="acct_C1", name="One")["id"]
    two = stripe.add_customer(account="acct_C2", name="Two")["id"]
    sync.pull(account=c1)
    sync.pull(account=c2)
    catchup.catch_up(c1)
    catchup.catch_up(c2)
    stripe.change_customer(one, account="acct_C1", name="One B")
    stripe.change_customer(two, account="acct_C2", name="Two B")
    stripe.clear_requests()

    assert catchup.catch_up(c1).applied == 1
    assert {r.account for r in stripe.requests} == {"acct_C1"}
    assert Customer.objects.get(account=c1, stripe_id=one).name == "One B"
    assert Customer.objects.get(account=c2, stripe_id=two).name == "Two"
    cursors = {c.account_id: c.event_id for c in EventCursor.objects.exclude(account=None)}
    assert cursors[c1.pk] != cursors[c2.pk]

    stripe.clear_requests()
    call_command("customersync_catch_up", "--account", "default/acct_C2", stdout=open("/dev/null", "w"))
    assert {r.account for r in stripe.requests} == {"acct_C2"}
    assert Customer.objects.get(account=c2, stripe_id=two).name == "Two B"


def test_the_commands_say_what_they_did(stripe, capsys):
    ann = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    call_command("customersync_catch_up")
    assert "No cursor yet" in capsys.readouterr().out
    stripe.change_customer(ann.stripe_id, name="Ann B")
    call_command("customersync_catch_up")
    assert capsys.readouterr().out.strip() == "Applied 1 event (1 applied)."
    stripe.update_customer_directly(ann.stripe_id, email="drift@example.com")
    call_command("customersync_reconcile")
    assert capsys.readouterr().out.strip() == "Reconciled: 1 seen, 1 drifted, 0 deleted, 0 added."


def test_a_share_of_the_budget_paces_the_catch_up_below_the_accounts_rate(stripe):
    share = catchup.Share(None)
    assert share.own.rate == settings.CUSTOMERSYNC["RATE_LIMIT"] * 0.25
    assert share.shared is not None and share.shared.rate == settings.CUSTOMERSYNC["RATE_LIMIT"]
    assert share.own.name.endswith(":catch-up") and stripe_client(None) is not None


def test_a_share_out_of_range_stops_the_catch_up_before_any_request(stripe):
    stripe.clear_requests()
    with override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "CATCH_UP_SHARE": 0}):
        with pytest.raises(ConfigurationError, match=r"CATCH_UP_SHARE'\] is a number more than 0"):
            catchup.catch_up()
    assert stripe.requests == []


def test_a_reconcile_writes_each_page_in_a_constant_number_of_queries(stripe):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    catchup.cursor_of(None)  # the account's cursor row exists: each run reads and updates it
    counts = []
    for _round in range(3):
        for n in range(10):
            stripe.add_customer(name=f"Round {_round} {n}")
        sync.pull()
        for cus in stripe.customers:  # drift on every customer of every page
            stripe.update_customer_directly(cus, email=f"r{_round}-{cus}@example.com".lower())
        with CaptureQueriesContext(connection) as queries:
            figures = catchup.reconcile(page_size=10)
        assert figures.drifted == figures.seen == 10 * (_round + 1)
        counts.append(len(queries))
    assert counts[2] - counts[1] == counts[1] - counts[0] == 7  # each page costs the same


def test_the_admin_shows_each_accounts_cursor_and_its_reconcile_figures(stripe, admin_client):
    from django.urls import reverse

    ids = [stripe.add_customer(name=f"C{n}")["id"] for n in range(3)]
    sync.pull()
    stripe.delete_customer(ids[0])
    stripe.update_customer_directly(ids[1], email="drift@example.com")
    catchup.reconcile()
    page = admin_client.get(reverse("admin:customersync_eventcursor_changelist")).content.decode()
    assert '<td class="field-seen">2</td>' in page and '<td class="field-drifted">1</td>' in page
    assert '<td class="field-deleted">1</td>' in page and '<td class="field-added">0</td>' in page
    drift = admin_client.get(reverse("admin:customersync_drift_changelist")).content.decode()
    assert "drift@example.com" in drift


def test_the_echo_of_this_apps_own_push_is_recognised_and_sends_nothing_back(stripe):
    cus = stripe.add_customer(name="Ann")["id"]
    stripe.change_customer(cus, metadata={"n": "start"})  # the cursor's event
    customer = sync.pull_one(cus)
    catchup.catch_up()
    customer.description = "edited here"
    customer.save()
    sync.push(customer.pk)
    stripe.clear_requests()
    stats = catchup.catch_up()
    assert stats.outcomes == {"echo": 1}
    assert [(r.method, r.path) for r in stripe.requests] == [("GET", "/v1/events")]
    customer.refresh_from_db()
    assert (customer.description, customer.sync_status) == ("edited here", SyncStatus.IN_SYNC)


def test_a_reconcile_is_due_every_reconcile_every_seconds_and_when_one_stopped(stripe):
    import datetime as dt

    from django.utils import timezone

    cursor = catchup.cursor_of(None)
    assert not catchup.reconcile_due(None)  # the cursor was just made
    week_ago = timezone.now() - dt.timedelta(days=7, seconds=1)
    EventCursor.objects.filter(pk=cursor.pk).update(created_at=week_ago)
    assert catchup.reconcile_due(None)
    catchup.reconcile()
    assert not catchup.reconcile_due(None)
    EventCursor.objects.filter(pk=cursor.pk).update(reconcile_finished_at=None)  # a walk that stopped
    assert catchup.reconcile_due(None)
    with override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "RECONCILE_EVERY": None}):
        assert not catchup.reconcile_due(None)


def test_since_applies_the_events_from_that_time_oldest_first(stripe):
    import datetime as dt

    cus = stripe.add_customer(name="Ann")["id"]
    customer = sync.pull_one(cus)
    since = dt.datetime.fromtimestamp(stripe.clock() - 1, tz=dt.timezone.utc)
    for n in range(3):
        stripe.change_customer(cus, metadata={"n": str(n)})
    catchup.catch_up()  # a first run: the cursor on the newest, the three skipped
    customer.refresh_from_db()
    assert customer.metadata == {}
    stats = catchup.catch_up(since=since, page_size=2)
    assert stats.outcomes == {"applied": 3}
    customer.refresh_from_db()
    assert customer.metadata == {"n": "2"}
    assert EventCursor.objects.get(key="default").event_id == stripe.events[-1]["id"]


def test_one_run_at_a_time_holds_an_accounts_cursor(stripe):
    import datetime as dt

    from django.utils import timezone

    cursor = catchup.cursor_of(None)
    EventCursor.objects.filter(pk=cursor.pk).update(running_until=timezone.now() + dt.timedelta(minutes=1))
    stripe.clear_requests()
    with pytest.raises(catchup.CursorHeld):
        catchup.catch_up()
    with pytest.raises(catchup.CursorHeld):
        catchup.reconcile()
    assert stripe.requests == []
    EventCursor.objects.filter(pk=cursor.pk).update(running_until=timezone.now() - dt.timedelta(seconds=1))
    assert catchup.reconcile().seen == 0  # a hold that expired (its run died) is taken over
