"""Signed webhook payloads the mirror cannot use, bad signature headers, and the admin's buttons on bad ids.

Each refusal is a 400 that says what is wrong, and writes nothing: no
``WebhookEvent``, no new or changed ``Customer``. With DEBUG on, Django's
debug page for an error in the webhook view shows neither the signing secret
nor the signature (nor the API key).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from django.db import OperationalError
from django.test import Client
from django.urls import reverse

from customersync import sync
from customersync.models import Customer, PendingPush, WebhookEvent
from customersync.pull.pages import PullStats, store_page
from customersync.webhooks import views
from tests.pull.test_mirror import SECRET, deliver, event, signed

pytestmark = pytest.mark.django_db

NOW = int(time.time())
KNOWN = {
    "id": "cus_known",
    "object": "customer",
    "email": "ann@example.com",
    "name": "Ann",
    "created": 1_700_000_000,
    "livemode": False,
    "currency": "eur",
    "metadata": {"plan": "pro"},
    "address": {"line1": "1 Main St", "city": "Paris", "country": "FR"},
}


@pytest.fixture
def known() -> Customer:
    """A mirrored customer, as a pull leaves it (no network)."""
    store_page([KNOWN], PullStats())
    return Customer.objects.get(stripe_id="cus_known")


def snapshot() -> list[dict[str, Any]]:
    return list(Customer.objects.order_by("pk").values())


def with_customer(**changes: Any) -> dict[str, Any]:
    return event({**KNOWN, "name": "Changed", **changes})


def with_event(**changes: Any) -> dict[str, Any]:
    return {**event({**KNOWN, "name": "Changed"}), **changes}


def without(key: str) -> dict[str, Any]:
    payload = event({**KNOWN, "name": "Changed"})
    del payload[key]
    return payload


def nested(levels: int) -> dict[str, Any]:
    value: Any = "deep"
    for _ in range(levels):
        value = {"k": value}
    return value


BAD_ID = "Unusable Stripe event: id must be a string evt_..."
BAD_OBJECT_ID = "Unusable Stripe event: data.object.id must be a customer id cus_... of letters, digits and _"
BAD_OTHER_ID = "Unusable Stripe event: data.object.id must be null or a string of 1 to 255 characters."
BAD_CREATED = "Unusable Stripe event: created must be an integer number of seconds from 0 to 4102444800."
TOO_DEEP = "nested more than 32 levels deep."

# (payload: an event dict, or the raw body; the message the 400 carries)
UNUSABLE = {
    # The event itself
    "created-a-word": (with_event(created="yesterday"), BAD_CREATED),
    "created-a-float": (with_event(created=NOW + 0.5), BAD_CREATED),
    "created-true": (with_event(created=True), BAD_CREATED),
    "created-negative": (with_event(created=-1), BAD_CREATED),
    "created-past-2100": (with_event(created=10**20), BAD_CREATED),
    "created-missing": (without("created"), BAD_CREATED),
    "id-a-list": (with_event(id=["evt_1"]), BAD_ID),
    "id-an-int": (with_event(id=12345), BAD_ID),
    "id-not-evt": (with_event(id="12345"), BAD_ID),
    "id-with-punctuation": (with_event(id="evt_1'; --"), BAD_ID),
    "id-past-its-column": (with_event(id="evt_" + "a" * 252), BAD_ID),
    "type-missing": (without("type"), "Unusable Stripe event: type must be a string of 1 to 64 characters."),
    "type-an-int": (with_event(type=5), "type must be a string of 1 to 64 characters."),
    "type-past-its-column": (with_event(type="customer." + "x" * 60), "type must be a string of 1 to 64"),
    "data-missing": (without("data"), "Unusable Stripe event: data.object must be an object."),
    "data-a-list": (with_event(data=[KNOWN]), "data.object must be an object."),
    "object-a-list": (with_event(data={"object": [KNOWN]}), "data.object must be an object."),
    "object-a-string": (with_event(data={"object": "cus_known"}), "data.object must be an object."),
    "object-id-an-int": (with_customer(id=12345), BAD_OBJECT_ID),
    "object-id-a-list": (with_customer(id=["cus_known"]), BAD_OBJECT_ID),
    "object-id-missing": (event({"object": "customer", "name": "No id"}), BAD_OBJECT_ID),
    "object-id-past-its-column": (with_customer(id="cus_" + "a" * 252), BAD_OBJECT_ID),
    "object-id-a-path": (with_customer(id="../charges"), BAD_OBJECT_ID),
    "object-id-not-a-customers": (with_customer(id="12345"), BAD_OBJECT_ID),
    "other-object-id-an-int": (event({"object": "plan", "id": 12345}, kind="plan.created"), BAD_OTHER_ID),
    "other-object-id-empty": (event({"object": "plan", "id": ""}, kind="plan.created"), BAD_OTHER_ID),
    "other-object-id-past-its-column": (event({"object": "plan", "id": "p" * 256}, kind="plan.created"), BAD_OTHER_ID),
    "idempotency-key-a-list": (
        with_event(request={"id": "req_1", "idempotency_key": ["k"]}),
        "request.idempotency_key must be null or a string of at most 255",
    ),
    "idempotency-key-past-its-column": (
        with_event(request={"id": "req_1", "idempotency_key": "k" * 256}),
        "request.idempotency_key must be null or a string of at most 255",
    ),
    # Anywhere in the payload
    "nested-too-deep": (with_customer(metadata={"plan": nested(40)}), TOO_DEEP),
    "nested-past-the-parser": (b'{"id": "evt_1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", TOO_DEEP),
    "nul-in-text": (with_customer(name="Ann\x00"), "text in data.object.name holds a NUL character."),
    "nul-in-a-key": (with_customer(metadata={"a\x00": "1"}), "text in data.object.metadata holds a NUL"),
    "lone-surrogate": (b'{"id": "evt_1", "type": "x", "note": "\\ud800"}', "text in note is not valid Unicode"),
    "nan": (b'{"id": "evt_1", "type": "x", "amount": NaN}', "amount is NaN or infinite"),
    "not-json": (b"{not json", "The payload is not JSON."),
    "not-utf8": (b'{"id": "evt_\xff"}', "The payload is not JSON."),
    "a-huge-integer": (b'{"id": "evt_1", "created": ' + b"9" * 5000 + b"}", "The payload is not JSON."),
    "not-an-object": (b'["evt_1"]', "The payload is not a Stripe event."),
    "no-id": (b'{"type": "customer.updated"}', "The payload is not a Stripe event."),
    # The customer's fields, against the columns that hold them
    "email-past-its-column": (with_customer(email="a" * 600 + "@example.com"), "data.object.email must be null or"),
    "name-a-list": (with_customer(name=["Ann"]), "data.object.name must be null or a string of at most 256"),
    "phone-past-its-column": (with_customer(phone="1" * 65), "data.object.phone must be null or a string of at most"),
    "currency-past-its-column": (with_customer(currency="euro"), "data.object.currency must be null or a string of at"),
    "invoice-prefix-past-its-column": (with_customer(invoice_prefix="A" * 13), "data.object.invoice_prefix must"),
    "tax-exempt-past-its-column": (with_customer(tax_exempt="exemptish"), "data.object.tax_exempt must be null"),
    "expanded-source-id-too-long": (
        with_customer(default_source={"id": "card_" + "x" * 300, "object": "card"}),
        "data.object.default_source must be null or a string of at most 255 characters.",
    ),
    "description-a-number": (with_customer(description=5), "data.object.description must be a string."),
    "balance-a-word": (with_customer(balance="lots"), "data.object.balance must be null or an integer from"),
    "balance-past-64-bits": (with_customer(balance=2**70), "data.object.balance must be null or an integer from"),
    "balance-true": (with_customer(balance=True), "data.object.balance must be null or an integer from"),
    "invoice-sequence-negative": (with_customer(next_invoice_sequence=-1), "next_invoice_sequence must be null or"),
    "metadata-a-string": (with_customer(metadata="plan=pro"), "data.object.metadata must be an object of keys"),
    "address-a-list": (with_customer(address=["1 Main St"]), "data.object.address must be an object or null."),
    "locales-a-string": (with_customer(preferred_locales="fr"), "data.object.preferred_locales must be a list."),
    "delinquent-a-word": (with_customer(delinquent="yes"), "data.object.delinquent must be null, true or false."),
    "customer-created-a-word": (with_customer(created="yesterday"), "data.object.created must be null or an integer"),
}


@pytest.mark.parametrize(("payload", "message"), UNUSABLE.values(), ids=UNUSABLE.keys())
def test_a_signed_event_the_mirror_cannot_use_is_a_400_and_writes_nothing(client, known, payload, message):
    before = snapshot()
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = deliver(client, body, signed(body))
    assert response.status_code == 400, response.content
    assert message in response.content.decode(errors="replace")
    assert snapshot() == before
    assert not WebhookEvent.objects.exists() and not PendingPush.objects.exists()


def test_the_same_event_well_formed_is_applied(client, known):
    """The rows above differ from a usable event only where they say."""
    body = json.dumps(with_customer(default_source={"id": "card_1", "object": "card"})).encode()
    response = deliver(client, body, signed(body))
    assert response.status_code == 200 and response.json() == {"outcome": "applied"}
    known.refresh_from_db()
    assert (known.name, known.default_source) == ("Changed", "card_1")


@pytest.mark.parametrize(
    "obj",
    [
        {"object": "balance", "available": [{"amount": 0, "currency": "eur"}]},  # balance.available: no id
        {"object": "plan", "id": "gold-monthly 2024"},  # an id the account chose
    ],
    ids=["no-id", "an-account-chosen-id"],
)
def test_other_stripe_events_are_recorded_and_ignored(client, known, obj):
    body = json.dumps(event(obj, kind=f"{obj['object']}.updated")).encode()
    response = deliver(client, body, signed(body))
    assert response.status_code == 200 and response.json() == {"outcome": "ignored"}
    assert WebhookEvent.objects.get().stripe_id == obj.get("id", "")


def test_an_event_from_an_old_api_version_with_a_request_string_is_applied(client, known):
    body = json.dumps(with_event(request="req_old")).encode()
    assert deliver(client, body, signed(body)).json() == {"outcome": "applied"}
    assert WebhookEvent.objects.get().idempotency_key == ""


def test_handle_event_called_directly_refuses_too(known):
    from customersync.exceptions import EventError

    with pytest.raises(EventError, match="created must be an integer"):
        sync.handle_event(with_event(created="yesterday"))
    with pytest.raises(ValueError, match="data.object.id must be"):  # an EventError is a ValueError
        sync.handle_event(with_customer(id=12345))
    assert not WebhookEvent.objects.exists() and not Customer.objects.filter(stripe_id="12345").exists()


# -- the Stripe-Signature header ---------------------------------------------------------------

BODY = json.dumps(with_event()).encode()
MAC = re.search(r"v1=(\w+)", signed(BODY)).group(1)

BAD_T = "Bad signature header: t must be 1 to 12 ASCII digits."
BAD_V1 = "Bad signature header: each v1 must be 64 lowercase hexadecimal digits."
E_ACUTE = "\u00e9"
# (header; the message the 400 carries)
HEADERS = {
    "superscript-two": (f"t=\u00b2,v1={MAC}", BAD_T),
    "arabic-indic-digits": (f"t=\u0661\u0662\u0663,v1={MAC}", BAD_T),
    "fullwidth-digits": (f"t=\uff11\uff12,v1={MAC}", BAD_T),
    "1000-digits": (f"t={'1' * 1000},v1={MAC}", BAD_T),
    "5000-digits": (f"t={'1' * 5000},v1={MAC}", "Bad signature header: longer than 4096 characters."),
    "13-digits": (f"t={'1' * 13},v1={MAC}", BAD_T),
    "signed-t": (f"t=-{NOW},v1={MAC}", BAD_T),
    "empty-t": (f"t=,v1={MAC}", BAD_T),
    "two-t": (f"t={NOW},t={NOW},v1={MAC}", "Bad signature header: more than one t."),
    "v1-not-hex": (f"t={NOW},v1={'z' * 64}", BAD_V1),
    "v1-uppercase": (f"t={NOW},v1={MAC.upper()}", BAD_V1),
    "v1-non-ascii": (f"t={NOW},v1={E_ACUTE * 64}", BAD_V1),
    "v1-short": (f"t={NOW},v1=abc", BAD_V1),
    "too-long": (f"t={NOW},v1={MAC}," + "v0=x," * 1000, "Bad signature header: longer than 4096 characters."),
    "no-v1": (f"t={NOW}", "No timestamp or no v1 signature in the Stripe-Signature header."),
}


@pytest.mark.parametrize(("header", "message"), HEADERS.values(), ids=HEADERS.keys())
def test_a_bad_signature_header_is_a_400_saying_so(client, known, header, message):
    before = snapshot()
    response = deliver(client, BODY, header.encode().decode("latin-1"))  # as WSGI hands headers over
    assert response.status_code == 400, response.content
    assert response.content.decode() == message
    assert snapshot() == before and not WebhookEvent.objects.exists()


# -- Django's debug page -------------------------------------------------------------------------


def database_outage(monkeypatch, settings):
    def outage(event, **kwargs):
        raise OperationalError("the database went away")

    monkeypatch.setattr(sync, "handle_event", outage)


def signing_breaks(monkeypatch, settings):
    # A failure inside the signature check itself, with the secret in its frames.
    def broken(payload, secret, timestamp):
        raise ValueError("the HMAC broke")

    monkeypatch.setattr(views, "sign", broken)


@pytest.mark.parametrize("failure", [database_outage, signing_breaks], ids=lambda f: f.__name__)
def test_the_debug_page_shows_neither_the_secret_nor_the_signature(monkeypatch, settings, known, failure):
    settings.DEBUG = True
    failure(monkeypatch, settings)
    body = json.dumps(with_event()).encode()
    header = signed(body)
    response = deliver(Client(raise_request_exception=False), body, header)
    assert response.status_code == 500
    page = response.content.decode()
    assert "Traceback" in page and "customersync/webhooks/views.py" in page  # Django's technical 500 page
    for name in ("secrets", "header"):  # the view's locals, shown cleansed
        assert re.search(rf"<td>{name}</td>\s*<td class=\"code\"><pre>&#x27;\*+&#x27;</pre></td>", page), name
    for value in (SECRET, re.search(r"v1=(\w+)", header).group(1), settings.CUSTOMERSYNC["API_KEY"]):
        assert value not in page
    assert not WebhookEvent.objects.exists()


def test_the_row_four_event_is_a_400_without_the_secret_in_debug(settings, client, known):
    settings.DEBUG = True
    body = json.dumps(with_event(created="yesterday")).encode()
    response = deliver(client, body, signed(body))
    assert response.status_code == 400 and response.content.decode() == BAD_CREATED
    assert SECRET not in response.content.decode()


# -- the admin's buttons -------------------------------------------------------------------------

BUTTON_IDS = {"not-a-number": "abc", "no-such-customer": "999999", "a-path": "1/2", "quoted-junk": "_5B_5D"}


@pytest.mark.parametrize("button", ["push", "retry", "refresh"])
@pytest.mark.parametrize("object_id", BUTTON_IDS.values(), ids=BUTTON_IDS.keys())
def test_an_admin_button_on_a_bad_id_is_a_404(admin_client, known, button, object_id):
    before = snapshot()
    url = reverse(f"admin:customersync_customer_{button}", args=[object_id])
    assert admin_client.post(url).status_code == 404
    assert snapshot() == before and not PendingPush.objects.exists()
