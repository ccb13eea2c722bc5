"""Values Stripe would refuse or the database cannot hold, from code, the admin and Stripe itself.

Each refused value is a ``ValidationError`` naming the field by Stripe's name,
raised before anything is written: the row is unchanged and nothing reaches
the outbox. A customer from Stripe whose values do not fit is skipped, and the
rest of its page is stored.
"""

from __future__ import annotations

import logging

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.forms.models import model_to_dict

from customersync import sync
from customersync.exceptions import Unstorable
from customersync.models import Customer, PendingPush, SyncStatus
from tests.admin_forms import edit

pytestmark = pytest.mark.django_db

ADDRESS = {"city": "Paris", "country": "FR", "line1": "1 rue", "line2": None, "postal_code": "75001", "state": None}
SETTINGS = {
    "custom_fields": [{"name": "PO", "value": "1"}],
    "default_payment_method": "",
    "footer": "Thanks",
    "rendering_options": None,
}
NUL = "\x00"
INT64 = (-(2**63), 2**63 - 1)
NOT_TEXT = "Expected text, not an object."
NUL_MESSAGE = "The database cannot store the NUL character (\\x00): remove it."
PREFIX_RULE = "Use 1 to 12 uppercase letters or digits, like ACME01."


def inv(**changes):
    return {"invoice_settings": {**SETTINGS, **changes}}


# (id, attributes set from code, the error's field, its message)
CASES = [
    # wrong types, unknown keys
    ("address-line1-object", {"address": {**ADDRESS, "line1": {"nested": 1}}}, "address[line1]", NOT_TEXT),
    ("footer-object", inv(footer={"nested": 1}), "invoice_settings[footer]", NOT_TEXT),
    ("name-object", {"name": {"nested": 1}}, "name", NOT_TEXT),
    ("name-number", {"name": 5}, "name", "Expected text, not a number."),
    (
        "shipping-name-list",
        {"shipping": {"name": ["Ann"], "address": ADDRESS}},
        "shipping[name]",
        "Expected text, not a list.",
    ),
    ("address-not-an-object", {"address": "1 rue, Paris"}, "address", "Expected an object or null, not text."),
    (
        "address-unknown-key",
        {"address": {**ADDRESS, "line3": "Bat. B"}},
        "address[line3]",
        "Stripe has no parameter address[line3]; remove the key 'line3'.",
    ),
    (
        "shipping-address-unknown-key",
        {"shipping": {"name": "Ann", "address": {**ADDRESS, "zip": "1"}}},
        "shipping[address][zip]",
        "Stripe has no parameter shipping[address][zip]; remove the key 'zip'.",
    ),
    (
        "invoice_settings-unknown-key",
        inv(memo="Net 30"),
        "invoice_settings[memo]",
        "Stripe has no parameter invoice_settings[memo]; remove the key 'memo'.",
    ),
    ("invoice_settings-null", {"invoice_settings": None}, "invoice_settings", "Expected an object, not null."),
    (
        "custom_fields-item-text",
        inv(custom_fields=["PO 1"]),
        "invoice_settings[custom_fields]",
        "Item 1: expected an object with name, value, not text.",
    ),
    (
        "custom_fields-value-number",
        inv(custom_fields=[{"name": "PO", "value": 1}]),
        "invoice_settings[custom_fields]",
        "Item 1: value must be text, not a number.",
    ),
    (
        "metadata-value-object",
        {"metadata": {"plan": {"tier": 1}}},
        "metadata[plan]",
        "Key 'plan': the value must be text, not an object.",
    ),
    ("metadata-not-a-map", {"metadata": "plan=pro"}, "metadata", "Expected an object of keys and values, not text."),
    ("balance-text", {"balance": "12"}, "balance", "Enter a whole number, not text."),
    ("balance-fraction", {"balance": 12.5}, "balance", "Enter a whole number, not a decimal number."),
    (
        "pending_once-unknown-key",
        {"pending_once": {"foo": "bar"}},
        "pending_once[foo]",
        "foo is not a write-once value or request option Stripe takes; remove it.",
    ),
    (
        "pending_once-state-field",
        {"pending_once": {"email": "b@example.com"}},
        "pending_once[email]",
        "email is not a write-once value or request option Stripe takes; set the field email instead.",
    ),
    (
        "pending_once-nested-unknown",
        {"pending_once": {"tax": {"ip": "203.0.113.7"}}},
        "pending_once[tax][ip]",
        "tax[ip] is not a write-once value or request option Stripe takes; remove it.",
    ),
    ("pending_once-token-object", {"pending_once": {"source": {"id": "tok_visa"}}}, "source", NOT_TEXT),
    ("pending_once-not-an-object", {"pending_once": ["source"]}, "pending_once", "Expected an object, not a list."),
    # preferred_locales from code
    ("locales-junk", {"preferred_locales": ["xx-junk"]}, "preferred_locales", "'xx-junk' is not a locale Stripe takes"),
    (
        "locales-wrong-types",
        {"preferred_locales": [5, None, {"en": 1}]},
        "preferred_locales",
        "Item 1: expected text, not a number.",
    ),
    (
        "locales-ten",
        {"preferred_locales": ["fr", "en", "de", "es", "it", "nl", "pt", "sv", "da", "fi"]},
        "preferred_locales",
        "Use at most 5 locales (this has 10).",
    ),
    (
        "locales-empty-text",
        {"preferred_locales": ["fr", ""]},
        "preferred_locales",
        "Item 2: expected text, not empty text.",
    ),
    ("locales-not-a-list", {"preferred_locales": "fr"}, "preferred_locales", "Expected a list, not text."),
    # "never stricter than Stripe": invoice_prefix is 1-12 uppercase letters or digits
    ("invoice_prefix-newline", {"invoice_prefix": "ACME\n"}, "invoice_prefix", PREFIX_RULE),
    ("invoice_prefix-lowercase", {"invoice_prefix": "acme"}, "invoice_prefix", PREFIX_RULE),
    ("invoice_prefix-13", {"invoice_prefix": "ACME123456789"}, "invoice_prefix", PREFIX_RULE),
    ("business_name-151", {"business_name": "b" * 151}, "business_name", "Use at most 150 characters (this has 151)."),
    (
        "individual_name-300",
        {"individual_name": "i" * 300},
        "individual_name",
        "Use at most 150 characters (this has 300).",
    ),
    # values past their column
    (
        "balance-2**63",
        {"balance": 2**63},
        "balance",
        f"Use a whole number from {INT64[0]} to {INT64[1]}, the range its database column holds.",
    ),
    (
        "balance-below-int64",
        {"balance": -(2**63) - 1},
        "balance",
        f"Use a whole number from {INT64[0]} to {INT64[1]}, the range its database column holds.",
    ),
    (
        "next_invoice_sequence-2**31",
        {"next_invoice_sequence": 2**31},
        "next_invoice_sequence",
        "Use a whole number from 0 to 2147483647, the range its database column holds.",
    ),
    ("name-257", {"name": "n" * 257}, "name", "Use at most 256 characters (this has 257)."),
    ("phone-65", {"phone": "1" * 65}, "phone", "Use at most 64 characters (this has 65)."),
    ("name-null", {"name": None}, "name", "Cannot be null: use '' for no value."),
    ("name-nul", {"name": f"Ann{NUL}"}, "name", NUL_MESSAGE),
    ("description-nul", {"description": f"VIP{NUL}"}, "description", NUL_MESSAGE),
    ("address-nul", {"address": {**ADDRESS, "line1": f"1 rue{NUL}"}}, "address[line1]", NUL_MESSAGE),
    ("footer-nul", inv(footer=f"Thanks{NUL}"), "invoice_settings[footer]", NUL_MESSAGE),
    ("metadata-value-nul", {"metadata": {"plan": f"pro{NUL}"}}, "metadata[plan]", NUL_MESSAGE),
    (
        "metadata-key-nul",
        {"metadata": {f"pl{NUL}an": "pro"}},
        "metadata",
        "Key 'pl\\x00an': the database cannot store the NUL character (\\x00) in a key.",
    ),
    ("pending_once-token-nul", {"pending_once": {"source": f"tok_visa{NUL}"}}, "source", NUL_MESSAGE),
]


def mirrored(stripe):
    obj = stripe.add_customer(
        email="a@example.com",
        name="Ann",
        address=ADDRESS,
        metadata={"plan": "basic"},
        preferred_locales=["fr"],
        invoice_settings=SETTINGS,
        balance=100,
        next_invoice_sequence=3,
    )
    customer = sync.pull_one(obj["id"])
    stripe.clear_requests()
    return customer


def stored(customer) -> dict:
    return model_to_dict(Customer.objects.get(pk=customer.pk))


@pytest.mark.parametrize("how", ["save", "full_clean"])
@pytest.mark.parametrize("changes, field, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_from_code_naming_the_field_with_nothing_written(stripe, how, changes, field, message):
    customer = mirrored(stripe)
    before = stored(customer)
    for name, value in changes.items():
        setattr(customer, name, value)
    with pytest.raises(ValidationError) as info:
        customer.save() if how == "save" else customer.full_clean()
    errors = info.value.message_dict
    assert field in errors, errors
    assert any(text.startswith(message) for text in errors[field]), errors[field]
    assert stored(customer) == before
    assert not PendingPush.objects.exists()
    for name, value in changes.items():
        assert getattr(customer, name) == value  # never converted on the way (a dict to its repr)


def test_refused_for_a_new_customer_too(stripe):
    customer = Customer(email="a@example.com", address={"line1": {"nested": 1}})
    with pytest.raises(ValidationError) as info:
        customer.save()
    assert info.value.message_dict == {"address[line1]": [NOT_TEXT]}
    assert not Customer.objects.exists() and not PendingPush.objects.exists()


ACCEPTED = [
    ("invoice_prefix-one", {"invoice_prefix": "A"}, b"invoice_prefix=A"),
    ("invoice_prefix-twelve", {"invoice_prefix": "ACME12345678"}, b"invoice_prefix=ACME12345678"),
    ("business_name-150", {"business_name": "b" * 150}, b"business_name=" + b"b" * 150),
    (
        "locales-regional",
        {"preferred_locales": ["en-US", "es-419"]},
        b"preferred_locales[0]=en-US&preferred_locales[1]=es-419",
    ),
    ("balance-int64-max", {"balance": 2**63 - 1}, b"balance=9223372036854775807"),
    ("next_invoice_sequence-max", {"next_invoice_sequence": 2**31 - 1}, b"next_invoice_sequence=2147483647"),
    ("name-256", {"name": "n" * 256}, b"name=" + b"n" * 256),
    (
        "shipping-without-line1",
        {"shipping": {"name": "Bo", "address": {"city": "Lyon"}}},
        b"shipping[address][city]=Lyon&shipping[name]=Bo",
    ),
]


@pytest.mark.parametrize("changes, body", [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_values_at_the_limits_are_saved_and_sent(stripe, changes, body):
    customer = mirrored(stripe)
    for name, value in changes.items():
        setattr(customer, name, value)
    customer.save()
    assert PendingPush.objects.filter(customer=customer).count() == 1
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    (request,) = [r for r in stripe.requests if r.method == "POST"]
    assert request.body == body


def test_keys_stripe_reports_itself_do_not_block_an_edit(stripe):
    # The fake server's shipping carries carrier and tracking_number, as the mirror then holds them.
    obj = stripe.add_customer(shipping={"name": "Ann", "address": ADDRESS})
    customer = sync.pull_one(obj["id"])
    assert "carrier" in customer.shipping
    customer.shipping = {**customer.shipping, "name": "Bo"}
    customer.save()
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    customer.shipping = {**customer.shipping, "carrier": "UPS"}  # not a parameter: it cannot be sent
    with pytest.raises(ValidationError) as info:
        customer.save()
    assert list(info.value.message_dict) == ["shipping[carrier]"]


def test_admin_refuses_what_its_column_cannot_hold(stripe, admin_client):
    # On SQLite Django itself would take 2147483648 for a PositiveIntegerField.
    customer = mirrored(stripe)
    before = stored(customer)
    response = edit(admin_client, customer, next_invoice_sequence=2**31, business_name="b" * 151)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["next_invoice_sequence"] == [
        "Use a whole number from 0 to 2147483647, the range its database column holds."
    ]
    assert errors["business_name"] == ["Use at most 150 characters (this has 151)."]
    assert stored(customer) == before and not PendingPush.objects.exists()
    response = edit(admin_client, customer, next_invoice_sequence=2**31 - 1, invoice_prefix="A")
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert PendingPush.objects.filter(customer=customer).count() == 1


# -- values from Stripe -----------------------------------------------------------


def test_pull_skips_a_customer_that_does_not_fit_and_stores_the_rest_of_its_page(stripe, caplog):
    long = stripe.add_customer(name="L" * 300, email="long@example.com")
    fine = stripe.add_customer(name="Fine", email="fine@example.com")
    with caplog.at_level(logging.WARNING, logger="customersync"):
        stats = sync.pull(page_size=10)
    assert (stats.pages, stats.created, stats.skipped) == (1, 1, 1)
    assert Customer.objects.get(stripe_id=fine["id"]).name == "Fine"
    assert not Customer.objects.filter(stripe_id=long["id"]).exists()
    assert stats.unstorable == {long["id"]: {"name": ["Use at most 256 characters (this has 300)."]}}
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert long["id"] in warning.getMessage() and "name: Use at most 256" in warning.getMessage()
    assert "L" * 300 not in warning.getMessage()  # names the field, never logs the value


def test_an_update_that_does_not_fit_leaves_the_mirror_as_it_was(stripe, caplog):
    obj = stripe.add_customer(name="Ann", email="a@example.com")
    customer = sync.pull_one(obj["id"])
    before = stored(customer)
    stripe.update_customer_directly(obj["id"], name="Ann", description=f"VIP{NUL}")
    stripe.add_customer(name="Other")
    stats = sync.pull()
    assert (stats.skipped, stats.created, stats.deleted) == (1, 1, 0)
    assert stats.unstorable[obj["id"]] == {"description": [NUL_MESSAGE], "stripe_data[description]": [NUL_MESSAGE]}
    after = Customer.objects.get(pk=customer.pk)
    assert model_to_dict(after) == before and after.sync_status == SyncStatus.IN_SYNC  # met: not marked deleted
    with pytest.raises(Unstorable) as info:
        sync.pull_one(obj["id"])
    assert info.value.stripe_id == obj["id"] and list(info.value.errors) == ["description", "stripe_data[description]"]
    with pytest.raises(CommandError, match=f"{obj['id']}: not stored"):
        call_command("customersync_pull", obj["id"])


def test_a_webhook_that_does_not_fit_is_refused_naming_the_field(stripe):
    from customersync.exceptions import EventError

    obj = stripe.add_customer(name="Ann")
    customer = sync.pull_one(obj["id"])
    before = stored(customer)
    event = {
        "id": "evt_long",
        "type": "customer.updated",
        "created": 2_000_000_000,
        "data": {"object": {**stripe.get_customer(obj["id"]), "phone": "1" * 65}},
    }
    with pytest.raises(EventError) as info:  # the view answers 400 with this message
        sync.handle_event(event)
    assert "data.object.phone" in str(info.value)
    assert stored(customer) == before
