"""A customer linked to an owner is pulled, and its webhooks applied, whatever the owner's key.

The site's owner model is the one ``CUSTOMERSYNC_TEST_OWNER`` picks: keyed by a
number (the organization, the custom user), by a UUID (``uuid``) or by a string
(``code``). A page's values reach their columns through each field's own
preparation, so the owner's key is stored as its column's type on every database.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import time

import pytest
from django.conf import settings
from django.core.management import call_command
from django.urls import reverse

from customersync import sync
from customersync.models import Customer, WebhookEvent
from customersync.pull.pages import PullStats, store_page
from tests.owners import field, make_owner

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not settings.CUSTOMERSYNC.get("OWNER_MODEL"), reason="the site has no owner model"),
]

PHONE = "+15550000100"


def linked(stripe, name="Keyed"):
    """An owner, and its customer imported from Stripe and linked to it."""
    owner = make_owner(name, **{field("phone"): PHONE})
    stripe_id = stripe.add_customer(name=name, phone=PHONE)["id"]
    customer = sync.pull_one(stripe_id)
    Customer.objects.filter(pk=customer.pk).update(owner=owner, owner_values={"phone": PHONE})
    return owner, stripe_id


def deliver(client, obj):
    """A signed ``customer.updated`` event for ``obj``, posted to the webhook."""
    body = json.dumps(
        {
            "id": "evt_keyed",
            "object": "event",
            "type": "customer.updated",
            "created": int(time.time()),
            "data": {"object": obj},
            "request": {"id": "req_keyed", "idempotency_key": None},
        }
    ).encode()
    stamp = int(time.time())
    mac = hmac.new(settings.CUSTOMERSYNC["WEBHOOK_SECRET"].encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    return client.post(
        reverse("customersync:webhook"),
        body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=f"t={stamp},v1={mac.hexdigest()}",
    )


def test_the_pull_command_refreshes_a_linked_customer(stripe):
    owner, stripe_id = linked(stripe)
    stripe.update_customer_directly(stripe_id, name="Keyed Ltd", phone="+15550000199")
    call_command("customersync_pull", stdout=io.StringIO())
    customer = Customer.objects.get(stripe_id=stripe_id)
    assert customer.owner_id == owner.pk and customer.name == "Keyed Ltd" and customer.phone == "+15550000199"
    owner.refresh_from_db()
    assert getattr(owner, field("phone")) == "+15550000199"  # a both-ways value, written back to the owner


def test_a_webhook_for_a_linked_customer_is_applied(stripe, client):
    owner, stripe_id = linked(stripe)
    response = deliver(client, {**stripe.get_customer(stripe_id), "name": "Renamed in Stripe"})
    assert response.status_code == 200
    customer = Customer.objects.get(stripe_id=stripe_id)
    assert customer.name == "Renamed in Stripe" and customer.owner_id == owner.pk
    assert WebhookEvent.objects.get(event_id="evt_keyed").outcome == "applied"


def test_a_page_mixing_linked_new_and_unchanged_customers_is_stored(stripe):
    owners = [linked(stripe, f"Keyed {i}") for i in range(3)]
    new = stripe.add_customer(name="Not linked")
    page = [stripe.get_customer(stripe_id) for _owner, stripe_id in owners] + [new]
    page[0]["name"] = "Changed in Stripe"
    stats = PullStats()
    store_page(page, stats)
    assert (stats.created, stats.updated, stats.skipped) == (1, 3, 0)
    by_id = {c.stripe_id: c for c in Customer.objects.all()}
    assert {by_id[stripe_id].owner_id for _owner, stripe_id in owners} == {owner.pk for owner, _id in owners}
    assert by_id[page[0]["id"]].name == "Changed in Stripe" and by_id[new["id"]].owner_id is None
