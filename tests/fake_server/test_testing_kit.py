"""The fake_stripe fixture that sites use in their own tests (customersync.testing.pytest_plugin)."""

import json

import pytest
from celery.signals import before_task_publish
from django.urls import reverse

from customersync import sync
from customersync.models import Customer, SyncStatus, WebhookEvent
from customersync.testing.pytest_plugin import KIT_CONNECT_WEBHOOK_SECRET, KIT_WEBHOOK_SECRET
from customersync.webhooks import sign, views
from tests.owners import field, make_owner


@pytest.fixture
def broker_publishes():
    """Everything published to a real broker during the test."""
    published = []

    def remember(**kwargs):
        published.append(kwargs.get("routing_key"))

    before_task_publish.connect(remember, weak=False)
    yield published
    before_task_publish.disconnect(remember)


@pytest.mark.django_db
def test_a_save_reaches_the_fake_server_when_the_test_pushes(fake_stripe):
    customer = sync.pull_one(fake_stripe.add_customer(email="old@example.com", name="Ann")["id"])
    customer.email = "new@example.com"
    customer.save()
    assert fake_stripe.requests_for("POST") == []  # nothing runs behind the test's back
    fake_stripe.push_pending()
    (request,) = fake_stripe.requests_for("POST")
    assert (request.path, request.body) == (f"/v1/customers/{customer.stripe_id}", b"email=new%40example.com")
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC
    assert fake_stripe.push_pending() == []  # nothing left


@pytest.mark.django_db(transaction=True)
def test_a_committed_save_is_listed_not_published_to_the_broker(fake_stripe, broker_publishes):
    customer = sync.pull_one(fake_stripe.add_customer(email="old@example.com")["id"])
    customer.email = "new@example.com"
    customer.save()  # commits: the push is "queued"
    sync.mark_for_push(Customer.objects.filter(pk=customer.pk))
    assert fake_stripe.published == [customer.pk, "drain"]
    assert broker_publishes == []
    fake_stripe.push_pending()
    assert [r.body for r in fake_stripe.requests_for("POST")] == [b"email=new%40example.com"]


@pytest.mark.django_db
def test_a_retryable_error_is_retried_and_a_refusal_is_kept_on_the_customer(fake_stripe):
    ok = sync.pull_one(fake_stripe.add_customer(name="Ok")["id"])
    ok.name = "Ok 2"
    ok.save()
    fake_stripe.inject(status=500)
    fake_stripe.push_pending()
    assert [r.status for r in fake_stripe.requests_for("POST")] == [500, 200]
    refused = sync.pull_one(fake_stripe.add_customer(name="No")["id"])
    refused.default_source = "card_missing"  # only Stripe knows it is not attached
    refused.save()
    fake_stripe.push_pending()
    refused.refresh_from_db()
    assert refused.sync_status == SyncStatus.FAILED and refused.sync_error["param"] == "default_source"


# --------------------------------------------------------------------------
# changes made in Stripe, delivered to the site's webhook endpoints

PARIS = {"line1": "1 rue de Rivoli", "city": "Paris", "postal_code": "75001", "country": "FR"}
SITE_SECRET = "whsec_test_secret"  # tests/settings.py's WEBHOOK_SECRET: the site's own


def address_of(owner) -> dict[str, str]:
    return {part: getattr(owner, field(f"address[{part}]")) for part in ("line1", "city", "postal_code", "country")}


@pytest.fixture
def linked(fake_stripe):
    """An owner and its customer, created in the fake server by the app's own push."""
    owner = make_owner(**{field("address[line1]"): "9 Old Street", field("address[city]"): "Lyon"})
    customer = sync.get_or_create_for(owner, wait=True)
    fake_stripe.clear_requests()
    return owner, customer


@pytest.fixture
def verified(monkeypatch):
    """The body and ``Stripe-Signature`` header each request to the site's webhook view held, as the
    view verifies them (in the live server's thread too), byte for byte; the view's check runs as ever."""
    seen: list[tuple[bytes, str]] = []
    check = views.verify_any

    def spy(payload, header, secrets, **options):
        seen.append((payload, header))
        return check(payload, header, secrets, **options)

    monkeypatch.setattr(views, "verify_any", spy)
    return seen


@pytest.mark.django_db
def test_an_address_changed_in_stripe_reaches_the_owner_through_the_sites_webhook_view(fake_stripe, linked):
    owner, customer = linked
    event = fake_stripe.change_customer(customer.stripe_id, address=PARIS)
    response = fake_stripe.deliver(event)
    assert (response.status_code, response.json()) == (200, {"outcome": "applied"})
    owner.refresh_from_db()
    assert address_of(owner) == PARIS
    customer.refresh_from_db()
    assert customer.address == {**PARIS, "line2": None, "state": None}
    logged = WebhookEvent.objects.get(event_id=event["id"])
    assert (logged.type, logged.stripe_id, logged.outcome) == ("customer.updated", customer.stripe_id, "applied")
    assert fake_stripe.push_pending() == [] and fake_stripe.requests == []  # nothing pushed back to Stripe


@pytest.mark.django_db
def test_a_wrong_secret_is_refused_by_the_site_and_changes_nothing(fake_stripe, linked):
    owner, customer = linked
    event = fake_stripe.change_customer(customer.stripe_id, address=PARIS)
    response = fake_stripe.deliver(event, secret="whsec_" + "not_the_sites")
    assert (response.status_code, response.content) == (400, b"No signature matches the payload.")
    owner.refresh_from_db()
    assert address_of(owner)["city"] == "Lyon" and not WebhookEvent.objects.exists()
    assert fake_stripe.webhook_secrets() == (SITE_SECRET,)  # the site's own secret signs by default
    assert fake_stripe.deliver(event).status_code == 200


@pytest.fixture
def site_without_webhook_secrets(settings):
    settings.CUSTOMERSYNC = {
        key: value
        for key, value in settings.CUSTOMERSYNC.items()
        if key not in ("WEBHOOK_SECRET", "CONNECT_WEBHOOK_SECRET")
    }


@pytest.mark.django_db
def test_a_site_without_webhook_secrets_gets_the_kits_own(site_without_webhook_secrets, fake_stripe, settings):
    assert settings.CUSTOMERSYNC["WEBHOOK_SECRET"] == KIT_WEBHOOK_SECRET
    assert settings.CUSTOMERSYNC["CONNECT_WEBHOOK_SECRET"] == KIT_CONNECT_WEBHOOK_SECRET != KIT_WEBHOOK_SECRET
    response = fake_stripe.deliver(fake_stripe.create_customer(email="new@example.com"))
    assert (response.status_code, response.json()) == (200, {"outcome": "created"})


@pytest.mark.django_db
def test_created_and_deleted_in_the_dashboard_reach_the_mirror(fake_stripe):
    created = fake_stripe.create_customer(name="Made in the dashboard", metadata={"plan": "pro"})
    stripe_id = created["data"]["object"]["id"]
    assert fake_stripe.deliver(created).json() == {"outcome": "created"}
    customer = Customer.objects.get(stripe_id=stripe_id)
    assert (customer.name, customer.metadata) == ("Made in the dashboard", {"plan": "pro"})
    deleted = fake_stripe.remove_customer(stripe_id)
    assert deleted["data"]["object"] == created["data"]["object"]  # the customer as it was
    assert fake_stripe.deliver(deleted).json() == {"outcome": "deleted"}
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.DELETED


@pytest.mark.django_db
def test_a_connected_accounts_event_goes_to_the_connect_endpoint_with_its_secret(fake_stripe):
    stripe_id = fake_stripe.add_customer(account="acct_shop", name="The shop's")["id"]
    event = fake_stripe.change_customer(stripe_id, account="acct_shop", name="Renamed")
    assert event["account"] == "acct_shop"
    assert fake_stripe.webhook_path(event) == reverse("customersync:webhook-connect")
    response = fake_stripe.deliver(event)  # signed with the Connect endpoint's secret, verified there
    assert (response.status_code, response.json()) == (200, {"outcome": "ignored: account not mirrored"})
    assert fake_stripe.deliver(event, secret=SITE_SECRET).status_code == 400  # the account endpoint's secret


@pytest.mark.django_db
@pytest.mark.urls("tests.fake_server.urls_without_webhooks")
def test_a_site_without_the_webhook_urls_is_told_what_to_add(fake_stripe):
    event = fake_stripe.create_customer(name="Ann")
    with pytest.raises(LookupError, match=r'add path\("stripe/", include\("customersync.urls"\)\)'):
        fake_stripe.deliver(event)


@pytest.mark.django_db(transaction=True)
def test_forwarded_to_a_live_site_the_exact_signed_bytes_arrive_and_apply(fake_stripe, linked, live_server, verified):
    owner, customer = linked
    url = live_server.url + fake_stripe.webhook_path()
    fake_stripe.forward_to(url)  # the site's own secret for the endpoint at that path
    event = fake_stripe.change_customer(customer.stripe_id, address=PARIS)

    (delivery,) = fake_stripe.deliveries  # sent before change_customer returned
    body = json.dumps(event, indent=2).encode()
    assert (delivery.url, delivery.event_id, delivery.status) == (url, event["id"], 200)
    assert (delivery.body, json.loads(delivery.response)) == (body, {"outcome": "applied"})
    assert verified == [(body, delivery.signature)]  # what the site's view got and verified
    timestamp = int(delivery.signature.split(",")[0].removeprefix("t="))
    assert delivery.signature == f"t={timestamp},v1={sign(body, SITE_SECRET, timestamp)}"
    owner.refresh_from_db()
    assert address_of(owner) == PARIS


@pytest.mark.django_db(transaction=True)
def test_sent_to_a_live_site_with_a_wrong_secret_the_site_answers_400(fake_stripe, linked, live_server, verified):
    owner, customer = linked
    url = live_server.url + fake_stripe.webhook_path()
    event = fake_stripe.change_customer(customer.stripe_id, address=PARIS)
    assert fake_stripe.deliveries == []  # nothing forwarded unless asked
    delivery = fake_stripe.send_event(event, url, "whsec_" + "not_the_sites")
    assert (delivery.status, delivery.response, delivery.ok) == (400, b"No signature matches the payload.", False)
    assert [payload for payload, _ in verified] == [json.dumps(event, indent=2).encode()]
    owner.refresh_from_db()
    assert address_of(owner)["city"] == "Lyon"
    with pytest.raises(LookupError, match="no customersync webhook endpoint"):
        fake_stripe.forward_to(live_server.url + "/admin/")
