"""An edit's save is a model save to the site: its signals fire as ``Model.save()`` sends them, and
what a ``pre_save`` receiver sets is checked, diffed and sent with the edit."""

from __future__ import annotations

import pytest
from django.db import DatabaseError
from django.db.models.signals import post_save, pre_save

from customersync.models import SYNC_OWNED_FIELDS, Customer, PendingPush, SyncStatus
from customersync.pull.pages import PullStats, store_page

pytestmark = pytest.mark.django_db


def mirrored() -> Customer:
    obj = {"id": "cus_Signals", "object": "customer", "name": "Ann", "email": "a@example.com", "created": 1}
    store_page([obj], PullStats())
    return Customer.objects.get(stripe_id="cus_Signals")


@pytest.fixture
def received():
    calls: list[tuple[str, dict]] = []

    def before(sender, instance, **kwargs):
        calls.append(("pre_save", kwargs))
        instance.description = "set by a receiver"

    def after(sender, instance, **kwargs):
        calls.append(("post_save", kwargs))

    pre_save.connect(before, sender=Customer, dispatch_uid="test_save_signals.before")
    post_save.connect(after, sender=Customer, dispatch_uid="test_save_signals.after")
    yield calls
    pre_save.disconnect(sender=Customer, dispatch_uid="test_save_signals.before")
    post_save.disconnect(sender=Customer, dispatch_uid="test_save_signals.after")


def test_an_edit_sends_pre_save_and_post_save_with_the_fields_written(received):
    customer = mirrored()
    received.clear()
    customer.name = "Bob"
    customer.save()
    assert [name for name, _ in received] == ["pre_save", "post_save"]
    written = received[1][1]["update_fields"]
    assert {"name", "description", "sync_status"} <= written and not written & SYNC_OWNED_FIELDS
    assert received[1][1]["created"] is False and received[1][1]["using"] == "default"
    # What the receiver set is part of the edit: stored, and owed to Stripe.
    stored = Customer.objects.get(pk=customer.pk)
    assert stored.pending_params() == {"name": "Bob", "description": "set by a receiver"}
    assert stored.sync_status == SyncStatus.PENDING and PendingPush.objects.count() == 1


def test_a_new_customer_sends_them_as_created(received):
    Customer.objects.create(name="New")
    assert [(name, kwargs.get("created")) for name, kwargs in received] == [("pre_save", None), ("post_save", True)]


def test_update_fields_writes_only_those_and_the_status(received):
    customer = mirrored()
    customer.name, customer.email = "Bob", "b@example.com"
    customer.save(update_fields=["email"])
    stored = Customer.objects.get(pk=customer.pk)
    assert (stored.name, stored.email) == ("Ann", "b@example.com")
    assert received[-1][1]["update_fields"] == {"email", "sync_status", "sync_error"}


def test_a_customer_deleted_meanwhile_fails_as_django_save_does():
    customer = mirrored()
    Customer.objects.filter(pk=customer.pk).delete()
    customer.name = "Bob"
    with pytest.raises(DatabaseError):
        customer.save()
    assert not PendingPush.objects.exists()
