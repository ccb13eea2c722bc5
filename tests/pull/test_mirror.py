"""Bulk import, webhooks, conflicts and creation."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from customersync import sync
from customersync.exceptions import APIConnectionError
from customersync.models import Conflict, Customer, PendingPush, SyncStatus, WebhookEvent
from customersync.pull.pages import store_page
from customersync.stripe.client import StripeClient
from tests.support import push_in_thread

pytestmark = pytest.mark.django_db

SECRET = "whsec_test_secret"  # tests/settings.py


# -- bulk import --------------------------------------------------------------


def queries_for_page(stripe, size):
    stripe.reset()
    for i in range(size):
        stripe.add_customer(email=f"c{i}@example.com", metadata={"i": str(i)})
    page = stripe.seed(0) or list(stripe.customers.values())
    with CaptureQueriesContext(connection) as new_rows:
        store_page(page, sync.PullStats())
    for obj in page:
        obj["name"] = "renamed"
    with CaptureQueriesContext(connection) as updated_rows:
        store_page(page, sync.PullStats())
    return len(new_rows), len(updated_rows)


# Django splits a SQLite bulk_create by its 999 parameters: there the count grows with the page.
@pytest.mark.postgresql
def test_queries_per_page_do_not_grow_with_the_page(stripe, django_assert_max_num_queries):
    small, large = queries_for_page(stripe, 10), queries_for_page(stripe, 100)
    assert small == large, (small, large)
    with django_assert_max_num_queries(4):
        store_page(list(stripe.customers.values()), sync.PullStats())


def test_pull_queries_are_linear_in_pages_not_customers(stripe):
    for i in range(60):
        stripe.add_customer(email=f"c{i}@example.com")
    totals = {}
    for size in (10, 20, 30):  # 6, 3 and 2 pages of the same 60 customers
        Customer.objects.all().delete()
        with CaptureQueriesContext(connection) as ctx:
            stats = sync.pull(page_size=size)
        assert stats.created == 60
        totals[stats.pages] = len(ctx)
    per_page = totals[3] - totals[2]
    assert totals[6] - totals[3] == 3 * per_page, totals  # each page costs the same, whatever its size
    assert per_page <= 6, totals


def test_import_of_ten_thousand_customers(stripe):
    stripe.seed(10_000)
    started = time.monotonic()
    stats = sync.pull()
    elapsed = time.monotonic() - started
    assert stats.created == 10_000 and stats.pages == 100
    assert Customer.objects.count() == 10_000
    assert not Customer.objects.exclude(sync_status=SyncStatus.IN_SYNC).exists()
    print(f"imported 10,000 customers in {elapsed:.1f}s")


def test_resume_after_an_interruption(stripe):
    for i in range(25):
        stripe.add_customer(name=f"c{i}")
    stripe.inject(status=500, method="GET", path_prefix="/v1/customers", times=1)
    stripe.inject(status=200, method="GET")  # placeholder consumed below
    stripe.reset()
    for i in range(25):
        stripe.add_customer(name=f"c{i}")
    calls = []

    real = StripeClient.list_customers

    def failing_third_page(self, **kwargs):
        calls.append(kwargs.get("starting_after"))
        if len(calls) == 3:
            raise APIConnectionError("network down")
        return real(self, **kwargs)

    StripeClient.list_customers = failing_third_page
    try:
        with pytest.raises(CommandError, match="--resume"):
            call_command("customersync_pull", "--page-size=10")
    finally:
        StripeClient.list_customers = real
    assert Customer.objects.count() == 20
    stripe.clear_requests()
    call_command("customersync_pull", "--page-size=10", "--resume")
    (request,) = [r for r in stripe.requests if r.path == "/v1/customers"]
    assert request.query["starting_after"] == calls[2]  # from where it stopped
    assert Customer.objects.count() == 25


def test_since_limit_and_ids(stripe):
    old = stripe.add_customer(name="old", created=1_600_000_000)
    for i in range(5):
        stripe.add_customer(name=f"new{i}", created=1_700_000_000 + i)
    call_command("customersync_pull", "--since=2023-11-01")
    assert set(Customer.objects.values_list("name", flat=True)) == {f"new{i}" for i in range(5)}
    assert stripe.requests[0].query["created[gte]"] == "1698796800"
    Customer.objects.all().delete()
    call_command("customersync_pull", "--limit=3", "--page-size=2")
    assert Customer.objects.count() == 3
    assert [r.query["limit"] for r in stripe.requests if r.path == "/v1/customers"][-2:] == ["2", "1"]
    call_command("customersync_pull", old["id"])
    assert Customer.objects.filter(stripe_id=old["id"], name="old").exists()


def test_whole_walk_marks_customers_gone_from_stripe(stripe):
    kept, gone = stripe.add_customer(name="kept"), stripe.add_customer(name="gone")
    sync.pull()
    stripe.delete_customer(gone["id"])
    call_command("customersync_pull", "--limit=100")  # a limited pull proves nothing
    assert Customer.objects.get(stripe_id=gone["id"]).sync_status == SyncStatus.IN_SYNC
    stats = sync.pull()
    assert stats.deleted == 1
    assert Customer.objects.get(stripe_id=gone["id"]).sync_status == SyncStatus.DELETED
    assert Customer.objects.get(stripe_id=kept["id"]).sync_status == SyncStatus.IN_SYNC


def test_progress_bar_only_on_a_terminal(stripe, capsys):
    for i in range(3):
        stripe.add_customer(name=f"c{i}")

    class Tty:
        def __init__(self):
            self.text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

        def isatty(self):
            return True

    tty = Tty()
    call_command("customersync_pull", "--page-size=1", stdout=tty)
    assert "\r[" in tty.text and "customers" in tty.text and "/s" in tty.text
    call_command("customersync_pull", "--page-size=1")
    out = capsys.readouterr().out
    assert "\r" not in out and out.startswith("Pulled 3 customers")


# -- conflicts ----------------------------------------------------------------


@pytest.mark.parametrize("policy", ["local_wins", "remote_wins"])
def test_pull_conflict_policies(stripe, settings, policy):
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "CONFLICT_POLICY": policy}
    obj = stripe.add_customer(email="a@example.com", name="Ann", phone="+1")
    customer = sync.pull_one(obj["id"])
    customer.email = "local@example.com"  # both change the email: a conflict
    customer.phone = "+2"  # only we change the phone
    customer.save()
    stripe.update_customer_directly(obj["id"], email="remote@example.com", name="Remote Ann")  # and the name
    stats = sync.pull()
    assert stats.conflicts == 1
    customer.refresh_from_db()
    conflict = Conflict.objects.get(customer=customer)
    assert (conflict.param, conflict.local_value, conflict.remote_value, conflict.source) == (
        "email",
        "local@example.com",
        "remote@example.com",
        "pull",
    )
    assert customer.name == "Remote Ann" and customer.phone == "+2"  # one-sided changes merge
    stripe.clear_requests()
    sync.push(customer.pk)
    (request,) = [r for r in stripe.requests if r.method == "POST"]
    if policy == "local_wins":
        assert customer.email == "local@example.com"
        assert request.body == b"email=local%40example.com&phone=%2B2"
    else:
        assert customer.email == "remote@example.com"
        assert request.body == b"phone=%2B2"
    assert stripe.get_customer(obj["id"])["name"] == "Remote Ann"


def test_conflict_shown_on_the_change_page(stripe, admin_client):
    obj = stripe.add_customer(email="a@example.com")
    customer = sync.pull_one(obj["id"])
    customer.email = "local@example.com"
    customer.save()
    stripe.update_customer_directly(obj["id"], email="remote@example.com")
    sync.pull_one(obj["id"])
    page = admin_client.get(reverse("admin:customersync_customer_change", args=[customer.pk])).content.decode()
    assert "Conflicts" in page and "remote@example.com" in page and "local@example.com" in page


@pytest.mark.parametrize(
    "initial, local, remote",
    [
        ({"metadata": {"a": "1"}}, {"metadata": {"a": "local"}}, {"metadata": {"a": "remote"}}),
        ({"address": {"city": "Paris"}}, {"address": {"city": "Lyon"}}, {"address": {"city": "Nice"}}),
        (
            {"shipping": {"name": "Ann", "address": {"line1": "1 Rue"}}},
            {"shipping": {"name": "Ann", "address": {"line1": "2 Rue"}}},
            {"shipping": {"name": "Ann", "address": {"line1": "3 Rue"}}},
        ),
        ({"preferred_locales": ["en"]}, {"preferred_locales": ["fr"]}, {"preferred_locales": ["de"]}),
        (
            {"invoice_settings": {"custom_fields": [{"name": "PO", "value": "1"}]}},
            {"invoice_settings": {"custom_fields": [{"name": "PO", "value": "2"}]}},
            {"invoice_settings": {"custom_fields": [{"name": "PO", "value": "3"}]}},
        ),
    ],
    ids=["metadata", "address", "shipping", "preferred_locales", "custom_fields"],
)
def test_change_page_opens_after_a_conflict_on_a_structured_parameter(stripe, admin_client, initial, local, remote):
    obj = stripe.add_customer(**initial)
    customer = sync.pull_one(obj["id"])
    for name, value in local.items():
        if name == "invoice_settings":
            value = {**customer.invoice_settings, **value}
        setattr(customer, name, value)
    customer.save()
    stripe.update_customer_directly(obj["id"], **remote)
    sync.pull_one(obj["id"])
    assert Conflict.objects.filter(customer=customer).exists()
    response = admin_client.get(reverse("admin:customersync_customer_change", args=[customer.pk]))
    assert response.status_code == 200
    assert "Conflicts" in response.content.decode()


# -- creation -------------------------------------------------------------------


def test_admin_add_creates_one_stripe_customer_despite_a_retry(stripe, admin_client):
    url = reverse("admin:customersync_customer_add")
    page = admin_client.get(url)
    assert page.status_code == 200
    from tests.admin_forms import _FormParser

    parser = _FormParser("customer_form")
    parser.feed(page.content.decode())
    data = {
        **parser.data,
        "email": "new@example.com",
        "name": "New Co",
        "metadata_0_key": "plan",
        "metadata_0_value": "pro",
    }
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    customer = Customer.objects.get(email="new@example.com")
    assert customer.stripe_id is None and customer.sync_status == SyncStatus.PENDING

    stripe.inject(action="drop_after", path_prefix="/v1/customers")  # created, answer lost
    with pytest.raises(sync.RetryLater):
        sync.push(customer.pk)
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED  # the retry, same key
    creates = [r for r in stripe.requests if r.method == "POST" and r.path == "/v1/customers"]
    assert len(creates) == 2 and creates[0].idempotency_key == creates[1].idempotency_key
    assert creates[1].replayed
    assert creates[0].body == b"email=new%40example.com&name=New+Co&metadata[plan]=pro"
    assert len(stripe.customers) == 1  # one Stripe customer
    customer.refresh_from_db()
    (stripe_id,) = stripe.customers
    assert customer.stripe_id == stripe_id and customer.sync_status == SyncStatus.IN_SYNC


def test_local_delete_keeps_the_stripe_customer_unless_asked(stripe, settings, django_capture_on_commit_callbacks):
    obj = stripe.add_customer(name="Ann")
    with django_capture_on_commit_callbacks(execute=True):
        sync.pull_one(obj["id"]).delete()
    assert not stripe.get_customer(obj["id"]).get("deleted")
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "DELETE_IN_STRIPE": True}
    other = stripe.add_customer(name="Bob")
    with django_capture_on_commit_callbacks(execute=True):
        sync.pull_one(other["id"]).delete()
    assert stripe.get_customer(other["id"]).get("deleted") is True


# -- webhooks -------------------------------------------------------------------


def signed(payload: bytes, secret: str = SECRET, timestamp: int | None = None, extra: list[str] = ()) -> str:
    """A Stripe-Signature header computed here, independently of the app's code."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return ",".join([f"t={timestamp}", *[f"v1={s}" for s in extra], f"v1={mac}", "v0=legacy"])


def event(obj, kind="customer.updated", event_id="evt_1", created=None, key=None):
    return {
        "id": event_id,
        "object": "event",
        "type": kind,
        "created": int(time.time()) if created is None else created,
        "data": {"object": obj},
        "request": {"id": "req_x", "idempotency_key": key},
    }


def deliver(client, payload, header):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return client.post(
        reverse("customersync:webhook"), body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )


@pytest.fixture
def known(stripe):
    obj = stripe.add_customer(email="a@example.com", name="Ann")
    customer = sync.pull_one(obj["id"])
    Customer.objects.filter(pk=customer.pk).update(confirmed_at=customer.confirmed_at.replace(year=2020))
    return customer, {**stripe.get_customer(obj["id"]), "name": "Changed in the dashboard"}


def test_webhook_valid_signature_applies_the_event(client, known):
    customer, obj = known
    payload = json.dumps(event(obj)).encode()
    response = deliver(client, payload, signed(payload))
    assert response.status_code == 200 and response.json() == {"outcome": "applied"}
    customer.refresh_from_db()
    assert customer.name == "Changed in the dashboard" and customer.pending_params() == {}
    assert WebhookEvent.objects.get(event_id="evt_1").outcome == "applied"
    assert not PendingPush.objects.exists()  # nothing sent back


@pytest.mark.parametrize(
    "header_for",
    [
        pytest.param(lambda p: signed(p + b" "), id="tampered-body"),
        pytest.param(lambda p: signed(p, secret="whsec_wrong"), id="wrong-secret"),
        pytest.param(lambda p: signed(p, timestamp=int(time.time()) - 301), id="too-old"),
        pytest.param(lambda p: "", id="no-header"),
        pytest.param(lambda p: signed(p).replace("v1=", "v0="), id="no-v1"),
    ],
)
def test_webhook_bad_signature_is_400_and_changes_nothing(client, known, header_for):
    customer, obj = known
    payload = json.dumps(event(obj)).encode()
    response = deliver(client, payload, header_for(payload))
    assert response.status_code == 400
    customer.refresh_from_db()
    assert customer.name == "Ann" and not WebhookEvent.objects.exists()


def test_webhook_one_of_two_signatures_matches(client, known):
    customer, obj = known
    payload = json.dumps(event(obj)).encode()
    response = deliver(client, payload, signed(payload, extra=["0" * 64]))
    assert response.status_code == 200
    customer.refresh_from_db()
    assert customer.name == "Changed in the dashboard"


def test_webhook_duplicate_delivery_is_a_no_op(client, known):
    customer, obj = known
    payload = json.dumps(event(obj)).encode()
    assert deliver(client, payload, signed(payload)).json() == {"outcome": "applied"}
    Customer.objects.filter(pk=customer.pk).update(name="edited since")
    again = deliver(client, payload, signed(payload))
    assert again.status_code == 200 and again.json() == {"outcome": "duplicate"}
    assert Customer.objects.get(pk=customer.pk).name == "edited since"
    outcomes = WebhookEvent.objects.order_by("pk").values_list("event_id", "outcome")
    assert list(outcomes) == [("evt_1", "applied"), ("evt_1", "duplicate")]  # each delivery recorded


def test_webhook_out_of_order_events(client, known):
    customer, obj = known
    now = int(time.time())
    newer = json.dumps(event({**obj, "name": "Newer"}, event_id="evt_new", created=now)).encode()
    older = json.dumps(event({**obj, "name": "Older"}, event_id="evt_old", created=now - 60)).encode()
    assert deliver(client, newer, signed(newer)).json() == {"outcome": "applied"}
    assert deliver(client, older, signed(older)).json() == {"outcome": "out of order"}
    customer.refresh_from_db()
    assert customer.name == "Newer"


def test_webhook_echo_of_an_own_push(client, stripe, known):
    customer, _ = known
    customer.name = "Pushed by us"
    customer.save()
    record = PendingPush.objects.get(customer=customer)
    stripe_obj = stripe.update_customer_directly(customer.stripe_id, name="Pushed by us")
    payload = json.dumps(event(stripe_obj, key=record.idempotency_key)).encode()
    assert deliver(client, payload, signed(payload)).json() == {"outcome": "echo"}
    customer.refresh_from_db()
    assert customer.stripe_data["name"] == "Pushed by us"  # confirmed state refreshed
    assert customer.sync_status == SyncStatus.IN_SYNC and customer.pending_params() == {}
    assert PendingPush.objects.count() == 1  # nothing new queued
    assert [r for r in stripe.requests if r.method == "POST"] == []  # nothing sent back


def test_webhook_created_and_deleted(client, stripe):
    obj = stripe.add_customer(email="fresh@example.com")
    payload = json.dumps(event(obj, kind="customer.created", event_id="evt_c")).encode()
    assert deliver(client, payload, signed(payload)).json() == {"outcome": "created"}
    assert Customer.objects.get(stripe_id=obj["id"]).email == "fresh@example.com"
    gone = json.dumps(
        event({"id": obj["id"], "object": "customer", "deleted": True}, kind="customer.deleted", event_id="evt_d")
    ).encode()
    assert deliver(client, gone, signed(gone)).json() == {"outcome": "deleted"}
    assert Customer.objects.get(stripe_id=obj["id"]).sync_status == SyncStatus.DELETED


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("policy", ["local_wins", "remote_wins"])
def test_webhook_arriving_while_a_push_is_in_flight(client, stripe, settings, policy):
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "CONFLICT_POLICY": policy}
    obj = stripe.add_customer(email="a@example.com", name="Ann")
    customer = sync.pull_one(obj["id"])
    customer.email = "local@example.com"
    customer.save()
    stripe.inject(delay=1.0, path_prefix=f"/v1/customers/{obj['id']}")
    thread, _ = push_in_thread(customer.pk)
    stripe.wait_for_arrivals(1, method="POST", path_prefix=f"/v1/customers/{obj['id']}")
    # Meanwhile someone changes the email in the dashboard, and Stripe tells us.
    remote = {**stripe.get_customer(obj["id"]), "email": "dashboard@example.com"}
    payload = json.dumps(event(remote, event_id="evt_race")).encode()
    assert deliver(client, payload, signed(payload)).status_code == 200
    thread.join()

    assert Conflict.objects.get(customer=customer).param == "email"
    final = Customer.objects.get(pk=customer.pk)
    if policy == "remote_wins":
        # Our in-flight push wrote the old local value; the remote value wins next.
        sync.push(customer.pk)
        assert final.email == "dashboard@example.com"
    assert stripe.get_customer(obj["id"])["email"] == final.email
    assert Customer.objects.get(pk=customer.pk).pending_params() == {}
