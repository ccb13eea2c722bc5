"""The queries of an edit's save, a promise on every database: the update, guarded by the version of
the confirmed state it was diffed against; when the edit changes what Stripe has, its outbox record,
after a look for a queued push when the copy saved was pending (one most likely is)."""

from __future__ import annotations

import pytest
from django.db import transaction

from customersync import sync
from customersync.models import Customer, PendingPush, PushState, SyncStatus
from customersync.pull.pages import PullStats, store_page
from customersync.push import outbox

pytestmark = pytest.mark.django_db


def mirrored(name="Ann") -> Customer:
    obj = {"id": "cus_Saves", "object": "customer", "name": name, "email": "a@example.com", "created": 1700000000}
    store_page([obj], PullStats())
    return Customer.objects.get(stripe_id="cus_Saves")


def test_a_change_is_its_update_and_its_outbox_record(django_assert_num_queries, django_capture_on_commit_callbacks):
    customer = mirrored()
    customer.name = "Bob"
    with django_capture_on_commit_callbacks() as callbacks, django_assert_num_queries(2):
        customer.save()
    assert len(callbacks) == 1  # the push task, published on commit
    stored = Customer.objects.get(pk=customer.pk)
    assert stored.name == "Bob" and stored.sync_status == SyncStatus.PENDING
    assert list(PendingPush.objects.values_list("state", flat=True)) == [PushState.PENDING]


def test_a_second_change_joins_the_queued_push(django_assert_num_queries, django_capture_on_commit_callbacks):
    customer = mirrored()
    customer.name = "Bob"
    customer.save()
    customer.email = "b@example.com"
    with django_capture_on_commit_callbacks() as callbacks, django_assert_num_queries(2):
        customer.save()
    assert callbacks == []  # the queued push takes both
    assert PendingPush.objects.filter(state=PushState.PENDING).count() == 1
    assert Customer.objects.get(pk=customer.pk).pending_params() == {"email": "b@example.com", "name": "Bob"}


def test_a_copy_loaded_in_sync_joins_a_push_queued_since(django_assert_num_queries, django_capture_on_commit_callbacks):
    customer = mirrored()
    queued = PendingPush.objects.create(customer=customer)  # since the load (an operator's "push now")
    customer.name = "Bob"
    # The copy was in sync: its record is written without a look, and joins the queued push; its
    # task is one more (it finds the customer's push done or under way).
    with django_capture_on_commit_callbacks() as callbacks, django_assert_num_queries(2):
        customer.save()
    assert len(callbacks) == 1
    assert list(PendingPush.objects.values_list("pk", "state")) == [(queued.pk, PushState.PENDING)]
    stored = Customer.objects.get(pk=customer.pk)
    assert stored.name == "Bob" and stored.pending_params() == {"name": "Bob"}


def test_a_record_written_without_a_look_joins_a_push_queued_meanwhile(django_capture_on_commit_callbacks):
    """A record written without a look, a push being queued already (a concurrent save's or
    request's): that one keeps its place, no error, the transaction goes on."""
    customer = mirrored()
    customer.name = "Bob"
    customer.save()
    (queued,) = PendingPush.objects.all()
    with django_capture_on_commit_callbacks(), transaction.atomic():
        outbox.record_change(customer, queued=False)
        assert Customer.objects.filter(pk=customer.pk).exists()  # the transaction goes on
    assert list(PendingPush.objects.values_list("pk", "state")) == [(queued.pk, PushState.PENDING)]


def test_a_save_changing_nothing_syncable_is_one_update_and_no_record(django_assert_num_queries):
    customer = mirrored()
    with django_assert_num_queries(1):
        customer.save()
    assert not PendingPush.objects.exists()
    assert Customer.objects.get(pk=customer.pk).sync_status == SyncStatus.IN_SYNC


def test_a_copy_loaded_before_stripe_changed_is_diffed_against_the_new_state(django_assert_num_queries):
    stale = mirrored()
    # Stripe changes the name meanwhile (a webhook or a pull): the confirmed state moves on.
    store_page([{**stale.stripe_data, "name": "Changed in Stripe"}], PullStats())
    stale.email = "new@example.com"
    # The guarded update misses, the state is read, the edit written again with its outbox record.
    with django_assert_num_queries(4):
        stale.save()
    stored = Customer.objects.get(pk=stale.pk)
    # The copy's old name is an edit now (it differs from what Stripe has): sent, and the email too.
    assert stored.pending_params() == {"email": "new@example.com", "name": "Ann"}
    assert PendingPush.objects.filter(state=PushState.PENDING).count() == 1


def test_an_unchanged_stale_copy_settles_on_the_new_state(stripe):
    obj = stripe.add_customer(name="Ann")
    stale = sync.pull_one(obj["id"])
    stripe.update_customer_directly(obj["id"], name="Changed in Stripe")
    sync.pull_one(obj["id"])
    stale.name = "Changed in Stripe"  # the operator typed what Stripe has now
    stale.save()
    stored = Customer.objects.get(pk=stale.pk)
    assert stored.sync_status == SyncStatus.IN_SYNC and not PendingPush.objects.exists()
