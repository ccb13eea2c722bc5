"""Both-ways values from Stripe are checked against the owner's fields before they are written.

A value the owner's field cannot hold (past its ``max_length``, or anything its ``clean()``
refuses) is not written: the owner keeps its value, a ``Conflict`` (resolution ``not_written``)
records it once for the admin, and the rest applies: the owner's other values, the customer
itself, the other customers of the page. By webhook (a 200, never a 500), by pull and by refresh.
"""

from __future__ import annotations

import json
import logging

import pytest
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse

from customersync import sync
from customersync.models import Conflict, Customer, Resolution
from customersync.owner.mapping import owner_value
from tests.owners import field, make_owner
from tests.pull.test_mirror import deliver, event, signed

pytestmark = pytest.mark.django_db

ADDRESS = {"street": "1 rue de Rivoli", "city": "Paris", "postal_code": "75001", "country": "FR"}
FITS = {"line1": "9 Portal Street", "city": "Lyon", "postal_code": "69001", "country": "FR"}

# (id, Stripe's new values, {owner field: value written}, {param refused: the owner field that keeps its value})
CASES = [
    (
        "country-of-30",
        {"address": {**FITS, "country": "C" * 30}},
        {"street": "9 Portal Street", "city": "Lyon", "postal_code": "69001"},
        {"address[country]": "country"},
    ),
    (
        "country-of-3",
        {"address": {**FITS, "country": "FRA"}},
        {"street": "9 Portal Street", "city": "Lyon", "postal_code": "69001"},
        {"address[country]": "country"},
    ),
    (
        "postal-code-of-21",
        {"address": {**FITS, "postal_code": "9" * 21}},
        {"street": "9 Portal Street", "city": "Lyon", "country": "FR"},
        {"address[postal_code]": "postal_code"},
    ),
    (
        "city-of-101",
        {"address": {**FITS, "city": "L" * 101}},
        {"street": "9 Portal Street", "postal_code": "69001", "country": "FR"},
        {"address[city]": "city"},
    ),
    (
        "phone-of-41",
        {"phone": "+" + "1" * 40, "address": FITS},
        {"street": "9 Portal Street", "city": "Lyon"},
        {"phone": "phone"},
    ),
    (
        "two-refused",
        {"address": {**FITS, "city": "L" * 101, "country": "C" * 30}},
        {"street": "9 Portal Street", "postal_code": "69001"},
        {"address[city]": "city", "address[country]": "country"},
    ),
]


@pytest.fixture
def linked(stripe):
    owner = make_owner(**{field("phone"): "+33 1 00 00 00 00", **ADDRESS})
    customer = sync.get_or_create_for(owner, wait=True)
    stripe.clear_requests()
    return owner, customer


def check(owner, customer, changes, written, refused, source):
    """What the owner holds, what the customer holds, and the conflicts recorded."""
    before = {name: getattr(owner, name) for name in ("street", "city", "postal_code", "country", "phone")}
    owner.refresh_from_db()
    for name, value in written.items():
        assert getattr(owner, name) == value, name
    for name in refused.values():
        assert getattr(owner, name) == before[name], name  # kept
    customer.refresh_from_db()
    for name, value in changes.items():  # the mirror holds Stripe's values
        held = getattr(customer, name)
        assert ({k: held[k] for k in value} if isinstance(value, dict) else held) == value
    conflicts = Conflict.objects.filter(customer=customer).order_by("param")
    assert [(c.param, c.resolution, c.source) for c in conflicts] == [
        (param, Resolution.NOT_WRITTEN, source) for param in sorted(refused)
    ]
    for c in conflicts:
        owner_field = refused[c.param]
        assert c.local_value == before[owner_field]
        assert c.remote_value == (changes["phone"] if c.param == "phone" else changes["address"][c.param[8:-1]])


@pytest.mark.parametrize(("changes", "written", "refused"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_by_webhook_the_event_applies_and_what_does_not_fit_is_a_conflict(
    linked, stripe, client, caplog, changes, written, refused
):
    owner, customer = linked
    obj = stripe.update_customer_directly(customer.stripe_id, **changes)
    body = json.dumps(event(obj, event_id="evt_fit")).encode()
    with caplog.at_level(logging.WARNING, logger="customersync"):
        response = deliver(client, body, signed(body))
    assert response.status_code == 200 and response.json() == {"outcome": "applied"}, response.content
    check(owner, customer, changes, written, refused, "webhook")
    messages = [r.getMessage() for r in caplog.records if "Not written to the owner" in r.getMessage()]
    assert len(messages) == len(refused) and "max_length" in messages[0]
    assert not any("C" * 30 in m or "L" * 101 in m for m in messages)  # the field and why, never the value


@pytest.mark.parametrize(("changes", "written", "refused"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_by_pull_the_page_is_stored_and_what_does_not_fit_is_a_conflict_once(linked, stripe, changes, written, refused):
    owner, customer = linked
    other = stripe.add_customer(name="Other on the page")
    stripe.update_customer_directly(customer.stripe_id, **changes)
    stats = sync.pull()
    assert (stats.created, stats.skipped) == (1, 0) and Customer.objects.filter(stripe_id=other["id"]).exists()
    check(owner, customer, changes, written, refused, "pull")
    sync.pull()  # met again: the same value refused is not recorded twice
    sync.pull_one(customer.stripe_id)
    assert Conflict.objects.filter(customer=customer).count() == len(refused)


def test_by_refresh_and_shown_on_the_customers_page(linked, stripe, admin_client):
    owner, customer = linked
    changes = {"address": {**FITS, "country": "C" * 30}}
    stripe.update_customer_directly(customer.stripe_id, **changes)
    response = admin_client.post(reverse("admin:customersync_customer_refresh", args=[customer.pk]), follow=True)
    assert [str(m) for m in response.context["messages"]] == ["Refreshed 1 customer from Stripe."]
    check(owner, customer, changes, {"city": "Lyon"}, {"address[country]": "country"}, "pull")
    page = admin_client.get(reverse("admin:customersync_customer_change", args=[customer.pk])).content.decode()
    assert "Owner kept its value (its field cannot hold Stripe&#x27;s)" in page and "C" * 30 in page


def test_a_value_that_fits_again_is_written(linked, stripe, client):
    owner, customer = linked
    stripe.update_customer_directly(customer.stripe_id, address={**FITS, "country": "C" * 30})
    sync.pull_one(customer.stripe_id)
    stripe.update_customer_directly(customer.stripe_id, address={**FITS, "country": "DE"})
    sync.pull_one(customer.stripe_id)
    owner.refresh_from_db()
    assert owner.country == "DE"
    assert Conflict.objects.filter(customer=customer).count() == 1  # the one refusal stays on record


# (id, the owner's field, Stripe's value, the code of its refusal or None when it is taken)
FIELDS = [
    ("fits", models.CharField(max_length=2, blank=True), "FR", None),
    ("past-max-length", models.CharField(max_length=2, blank=True), "FRA", "max_length"),
    ("not-a-choice", models.CharField(max_length=2, blank=True, choices=[("FR", "France")]), "DE", "invalid_choice"),
    ("a-choice", models.CharField(max_length=2, blank=True, choices=[("FR", "France")]), "FR", None),
    ("cleared-where-blank-is-refused", models.CharField(max_length=20), "", "blank"),
    ("cleared-where-blank-is-taken", models.CharField(max_length=20, blank=True), "", None),
    ("none-for-a-number-without-null", models.IntegerField(), None, "invalid"),
    ("none-for-a-nullable-number", models.IntegerField(null=True, blank=True), None, None),
    ("text-for-a-number", models.IntegerField(null=True), "twelve", "invalid"),
    ("not-an-email", models.EmailField(blank=True), "not an email", "invalid"),
]


@pytest.mark.parametrize(("owner_field", "value", "code"), [f[1:] for f in FIELDS], ids=[f[0] for f in FIELDS])
def test_the_owner_fields_own_clean_decides(owner_field, value, code):
    if code is None:
        owner_value(owner_field, value)
        return
    with pytest.raises(ValidationError) as info:
        owner_value(owner_field, value)
    assert [e.code for e in info.value.error_list] == [code]
