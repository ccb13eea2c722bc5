"""An outage of the webhook endpoint, caught up by the ``customersync.catch_up`` task in a real worker.

While deliveries are held, Stripe's customers change in 200 ways (updates, some twice, deletes,
creations, the owners' both-ways address, a field also edited here); edits made here meanwhile
wait in the outbox. The catch-up brings every mirrored customer and owner to Stripe's state, each
event applied once, the edits pushed and kept as the conflict policy says; the webhooks delivered
late change nothing.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings
from django.urls import reverse

from customersync import sync
from customersync.models import Conflict, Customer, EventCursor, EventOutcome, Resolution, SyncStatus, WebhookEvent
from customersync.pull import catchup
from customersync.tasks import catch_up
from tests.owners import field, make_owner, owner_model
from tests.support import wait_for_tasks

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SECRET = "whsec_test_secret"  # tests/settings.py's WEBHOOK_SECRET
COMPARED = ("name", "email", "description", "metadata", "address")


def address(n: int, round_: int) -> dict[str, str]:
    return {"line1": f"{n} rue {round_}", "city": f"City {round_}", "postal_code": f"{75000 + n}", "country": "FR"}


def snapshot() -> tuple[list, list]:
    customers = list(Customer.objects.order_by("pk").values_list("stripe_id", "sync_status", *COMPARED))
    owners = list(owner_model().objects.order_by("pk").values_list("pk", "street", "city", "postal_code", "country"))
    return customers, owners


def test_after_an_outage_the_catch_up_task_brings_the_mirror_and_owners_to_stripe(
    stripe, start_worker, live_server, published_tasks
):
    owners = [make_owner(f"Org {n}", **{field("email"): f"org{n}@example.com"}) for n in range(30)]
    owned = [sync.get_or_create_for(owner, wait=True) for owner in owners]
    plain = [sync.pull_one(stripe.add_customer(name=f"Plain {n}", email=f"p{n}@example.com")["id"]) for n in range(30)]
    catchup.catch_up()  # the cursor, on the newest event: the mirror is in step here
    stripe.forward_to(live_server.url + reverse("customersync:webhook"), SECRET)
    stripe.hold_deliveries()

    # Edits made here during the outage: queued, not yet pushed (no worker yet). The first three
    # wait out a long coalescing delay, so the catch-up meets them pending: Stripe changed their
    # description too (below), a conflict. The other two are pushed before the catch-up runs.
    for n, customer in enumerate(plain[:5]):
        customer.description = f"edited here {customer.pk}"
        with override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "COALESCE_SECONDS": 30 if n < 3 else 0}):
            customer.save()
            assert sync.publisher.flush()  # published with that delay, before the setting changes back

    made = []
    for n, customer in enumerate(owned):  # the owners' both-ways address, ten of them twice
        made.append(stripe.change_customer(customer.stripe_id, address=address(n, 1)))
        if n < 10:
            made.append(stripe.change_customer(customer.stripe_id, address=address(n, 2)))
    for n, customer in enumerate(plain):  # names, and twenty emails too
        # The first three: their description too, which was also edited here (a conflict).
        both = {"description": f"changed in Stripe {n}"} if n < 3 else {}
        made.append(stripe.change_customer(customer.stripe_id, name=f"Renamed {n}", **both))
        if n < 20:
            made.append(stripe.change_customer(customer.stripe_id, email=f"moved{n}@example.com"))
    for customer in plain[20:]:
        made.append(stripe.remove_customer(customer.stripe_id))
    for n in range(50):  # created in Stripe, and changed again
        created = stripe.create_customer(name=f"Created {n}", email=f"c{n}@example.com")
        made.append(created)
        made.append(stripe.change_customer(created["data"]["object"]["id"], metadata={"n": str(n)}))
    assert len(made) == 200
    assert stripe.deliveries == []  # held

    start_worker()
    result = catch_up.apply_async(kwargs={"account": None, "every": False})
    summary = result.get(timeout=120)
    newest = stripe.events[-1]["id"]  # the delayed pushes make events of their own later
    wait_for_tasks(published_tasks, timeout=60)  # the pushes of the edits made here
    assert summary["applied"] >= 200

    # Every mirrored customer is Stripe's, every owner's address is its customer's.
    live = stripe.customers
    for customer in Customer.objects.exclude(stripe_id=None):
        theirs = live.get(customer.stripe_id)
        if theirs is None or theirs.get("deleted"):
            assert customer.sync_status == SyncStatus.DELETED, customer.stripe_id
            continue
        assert customer.sync_status == SyncStatus.IN_SYNC, customer.stripe_id
        mine = (customer.name, customer.email, customer.metadata, customer.address, customer.description)
        assert mine == (
            theirs["name"],
            theirs["email"],
            theirs["metadata"],
            theirs["address"],
            theirs["description"] or "",
        )
    assert Customer.objects.filter(sync_status=SyncStatus.DELETED).count() == 10
    created_ids = {e["data"]["object"]["id"] for e in made if e["type"] == "customer.created"}
    assert created_ids <= set(Customer.objects.values_list("stripe_id", flat=True))
    for n, owner in enumerate(owner_model().objects.order_by("pk")):
        expected = address(n, 2 if n < 10 else 1)
        assert (owner.street, owner.city, owner.postal_code) == (
            expected["line1"],
            expected["city"],
            expected["postal_code"],
        )
    # The edits made here reached Stripe and were not overwritten. Where Stripe changed the same
    # field, the catch-up met the edit pending: a conflict, the local edit kept (the policy,
    # local_wins) and pushed over Stripe's value.
    for customer in plain[:5]:
        customer.refresh_from_db()
        assert customer.description == f"edited here {customer.pk}"
        assert live[customer.stripe_id]["description"] == f"edited here {customer.pk}"
    conflicts = Conflict.objects.order_by("customer_id")
    assert [(c.customer_id, c.param, c.resolution) for c in conflicts] == [
        (customer.pk, "description", Resolution.LOCAL_WINS) for customer in plain[:3]
    ]
    # Each event applied once.
    claimed = WebhookEvent.objects.exclude(outcome__in=[EventOutcome.DUPLICATE, EventOutcome.REFUSED])
    ids = sorted(claimed.filter(event_id__in=[e["id"] for e in made]).values_list("event_id", flat=True))
    assert ids == sorted(e["id"] for e in made)
    assert EventCursor.objects.get(key="default").event_id == newest

    # Delivery resumes: the late webhooks are duplicates and change nothing.
    before = snapshot()
    deliveries = stripe.resume_deliveries()
    assert len(deliveries) == 200 and {d.status for d in deliveries} == {200}
    late = WebhookEvent.objects.filter(event_id__in=[e["id"] for e in made], outcome=EventOutcome.DUPLICATE)
    assert late.count() == 200
    assert snapshot() == before
