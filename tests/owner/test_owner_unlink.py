"""Deleting an owner unlinks its customers in Stripe too: ``metadata[customersync_owner]`` goes.

Written against whichever owner model the settings name, as ``test_owner.py`` is (``test_owner_setups.py``
runs it again with a custom user model and with owners keyed by a UUID and by a string, on
PostgreSQL and SQLite). Pushes run in-process here, but for the end-to-end test's real worker.
"""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.models.signals import pre_delete
from django.test.utils import CaptureQueriesContext

from customersync import sync
from customersync.core.encoding import decode
from customersync.models import Account, Customer, PendingPush, PushState, SyncStatus
from customersync.owner.mapping import OWNER_METADATA_KEY
from customersync.owner.unlink import owner_pre_delete
from tests.e2e.test_e2e import canary, posts_for  # noqa: F401  (canary: a fixture)
from tests.owners import field, identity, make_owner, owner_metadata_key, owner_model

pytestmark = pytest.mark.django_db

UNSET = b"metadata[customersync_owner]="


def site_key() -> str:
    """The site's own metadata key for the owner's pk (``org_id``), which stays."""
    return owner_metadata_key()[len("metadata[") : -1]


def linked_owner(stripe, **values):
    """An owner with its customer created in Stripe (naming it in its metadata)."""
    owner = make_owner(**{field("email"): "billing@acme.test", **values})
    customer = sync.get_or_create_for(owner, wait=True)
    assert stripe.get_customer(customer.stripe_id)["metadata"][OWNER_METADATA_KEY] == identity(owner)
    return owner, customer


@pytest.fixture
def linked(stripe):
    owner, customer = linked_owner(stripe)
    stripe.clear_requests()
    return owner, customer


def posts(stripe):
    return [r for r in stripe.requests if r.method == "POST" and r.path.startswith("/v1/customers")]


def assert_unlinked(customer, stripe=None, account=None):
    """The customer kept, here and (given the server) in Stripe, with nothing naming an owner but
    the site's own key."""
    customer.refresh_from_db()
    assert customer.owner_id is None and customer.owner_values == {}
    assert OWNER_METADATA_KEY not in customer.metadata and site_key() in customer.metadata
    if stripe is not None:
        metadata = stripe.get_customer(customer.stripe_id, account=account)["metadata"]
        assert OWNER_METADATA_KEY not in metadata and site_key() in metadata


def djangos_delete() -> int:
    """The statements Django's own delete of an owner takes (this app's receiver disconnected)."""
    owner = make_owner("Baseline")
    model, uid = owner_model(), "customersync.owner_pre_delete"
    assert pre_delete.disconnect(sender=model, dispatch_uid=uid)
    try:
        with CaptureQueriesContext(connection) as captured:
            owner.delete()
    finally:
        pre_delete.connect(owner_pre_delete, sender=model, dispatch_uid=uid)
    return len(captured)


# -- one owner --------------------------------------------------------------------------------


def test_deleting_an_owner_sends_exactly_the_unset_of_its_owner_key(linked, stripe, django_capture_on_commit_callbacks):
    owner, customer = linked
    with django_capture_on_commit_callbacks() as callbacks:
        owner.delete()
    assert len(callbacks) == 1  # the push, queued when the delete commits
    assert Customer.objects.get(pk=customer.pk).sync_status == SyncStatus.PENDING
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    (request,) = posts(stripe)
    assert (request.path, request.body) == (f"/v1/customers/{customer.stripe_id}", UNSET)
    assert_unlinked(customer, stripe)
    assert customer.sync_status == SyncStatus.IN_SYNC and customer.pending_params() == {}
    assert stripe.get_customer(customer.stripe_id)["email"] == "billing@acme.test"  # kept, not deleted


def test_deleting_an_owner_with_one_customer_is_a_fixed_number_of_queries(linked, django_assert_num_queries):
    owner, customer = linked
    django = djangos_delete()
    # Django's own, and three: reading the owner's customers (locked), then its customer's own save
    # (its UPDATE and its outbox record).
    with django_assert_num_queries(django + 3):
        owner.delete()
    assert_unlinked(customer)
    assert PendingPush.objects.filter(customer=customer, state=PushState.PENDING).count() == 1


def test_an_owner_without_a_customer_costs_one_read_more_than_djangos_delete(stripe):
    django = djangos_delete()
    owner = make_owner("Alone")
    # Django's own statements (its SET NULL of customers and its DELETE), and the read of the
    # owner's customers: a pre_delete receiver cannot know there are none without it.
    with CaptureQueriesContext(connection) as captured:
        owner.delete()
    assert len(captured) == django + 1
    assert captured[0]["sql"].startswith('SELECT "customersync_customer".')
    assert not PendingPush.objects.exists() and stripe.requests == []


def test_a_rolled_back_delete_sends_nothing(linked, stripe, django_capture_on_commit_callbacks):
    owner, customer = linked
    owner_pk, owner_identity = owner.pk, identity(owner)
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError), transaction.atomic():
        owner.delete()
        raise RuntimeError("the view fails after the delete")
    assert callbacks == []  # no push queued
    assert owner_model().objects.filter(pk=owner_pk).exists()
    customer.refresh_from_db()
    assert customer.owner_id == owner_pk and customer.metadata[OWNER_METADATA_KEY] == owner_identity
    assert customer.owner_values and customer.sync_status == SyncStatus.IN_SYNC
    assert not PendingPush.objects.filter(customer=customer, state=PushState.PENDING).exists()
    assert sync.push(customer.pk).outcome is sync.Outcome.NOTHING
    assert stripe.requests == []


def test_a_customer_whose_create_is_pending_is_created_without_the_owner_key(stripe):
    owner = make_owner(**{field("email"): "queued@acme.test"})
    customer = sync.get_or_create_for(owner)  # queued: no Stripe id yet
    assert not customer.stripe_id and customer.metadata[OWNER_METADATA_KEY] == identity(owner)
    owner_pk = owner.pk
    owner.delete()
    assert PendingPush.objects.filter(customer=customer, state=PushState.PENDING).count() == 1  # the create's
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    # No search for the deleted owner's customer: a plain create, the owner's key not in it.
    (create,) = stripe.requests
    assert (create.method, create.path) == ("POST", "/v1/customers")
    assert OWNER_METADATA_KEY.encode() not in create.body
    assert decode(create.body)["metadata"] == {site_key(): str(owner_pk)}
    assert_unlinked(customer, stripe)


def test_a_customer_naming_no_owner_is_not_written(stripe, django_assert_num_queries):
    owner = make_owner()
    customer = Customer.objects.create(owner=owner, name="linked by hand", metadata={"plan": "gold"})
    before = Customer.objects.get(pk=customer.pk).updated_at
    django = djangos_delete()
    with django_assert_num_queries(django + 1):  # the read alone: nothing of it names the owner
        owner.delete()
    customer.refresh_from_db()
    assert customer.owner_id is None and customer.metadata == {"plan": "gold"} and customer.updated_at == before


def test_a_customer_holding_a_value_stripe_would_refuse_is_unlinked_all_the_same(linked, stripe):
    owner, customer = linked
    # Stored without a check (as QuerySet.update() does): its own save() would refuse it.
    Customer.objects.filter(pk=customer.pk).update(email="not an email")
    owner.delete()  # the owner's deletion does not fail on it
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.PENDING
    assert PendingPush.objects.filter(customer=customer, state=PushState.PENDING).count() == 1
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    (request,) = posts(stripe)
    assert request.body == b"email=not+an+email&" + UNSET  # the refusal, if any, is Stripe's, and recorded
    assert_unlinked(customer, stripe)


def test_an_owner_with_a_customer_in_each_account_unlinks_each(stripe):
    connected = Account.objects.create(platform="default", stripe_account="acct_Connected1")
    owner, own = linked_owner(stripe)
    there = sync.get_or_create_for(owner, account=connected, wait=True)
    stripe.clear_requests()
    owner.delete()
    for customer in (own, there):
        assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    assert sorted((r.path, r.headers.get("Stripe-Context"), r.body) for r in posts(stripe)) == sorted(
        [
            (f"/v1/customers/{own.stripe_id}", None, UNSET),
            (f"/v1/customers/{there.stripe_id}", "acct_Connected1", UNSET),
        ]
    )
    assert_unlinked(own, stripe)
    assert_unlinked(there, stripe, "acct_Connected1")


# -- several owners ------------------------------------------------------------------------------


def test_queryset_delete_of_several_owners_unlinks_each_customer(stripe, django_capture_on_commit_callbacks):
    pairs = [linked_owner(stripe, name=f"Org {n}") for n in range(3)]
    alone = make_owner("No customer")
    kept, kept_customer = linked_owner(stripe, name="Kept")
    stripe.clear_requests()
    doomed = [owner.pk for owner, _ in pairs] + [alone.pk]
    with django_capture_on_commit_callbacks() as callbacks:
        owner_model().objects.filter(pk__in=doomed).delete()
    assert not owner_model().objects.filter(pk__in=doomed).exists()
    assert len(callbacks) == 3  # a push queued for each customer
    for _, customer in pairs:
        assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    assert sorted((r.path, r.body) for r in posts(stripe)) == sorted(
        (f"/v1/customers/{customer.stripe_id}", UNSET) for _, customer in pairs
    )
    for _, customer in pairs:
        assert_unlinked(customer, stripe)
    # Another owner's customer is untouched.
    kept_customer.refresh_from_db()
    assert kept_customer.owner_id == kept.pk and kept_customer.metadata[OWNER_METADATA_KEY] == identity(kept)
    assert sync.push(kept_customer.pk).outcome is sync.Outcome.NOTHING


# -- end to end ----------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_deleting_an_owner_reaches_stripe_through_a_worker_as_exactly_the_unset(stripe, start_worker, canary):  # noqa: F811
    owner, customer = linked_owner(stripe)
    stripe.clear_requests()
    start_worker()
    owner.delete()  # its own transaction: the outbox record commits with it, the push is queued then
    canary()  # everything queued before it has been sent
    (request,) = posts_for(stripe, customer)
    assert request.body == UNSET
    assert_unlinked(customer, stripe)
    assert customer.sync_status == SyncStatus.IN_SYNC
