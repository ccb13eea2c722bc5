"""A save checks again only what changed since the instance last passed, and misses no change."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from customersync.models import Customer, PendingPush, SyncStatus
from customersync.pull.pages import PullStats, store_page

pytestmark = pytest.mark.django_db


def mirrored() -> Customer:
    obj = {"id": "cus_Rechecks", "object": "customer", "name": "Ann", "email": "a@example.com", "created": 1}
    store_page([obj], PullStats())
    return Customer.objects.get(stripe_id="cus_Rechecks")


def test_a_value_changed_in_place_after_a_save_is_checked():
    customer = mirrored()
    customer.metadata = {"plan": "basic"}
    customer.save()
    customer.metadata["plan"] = 7  # the same dict, changed in place
    with pytest.raises(ValidationError) as caught:
        customer.save()
    assert "metadata[plan]" in caught.value.message_dict


def test_a_value_of_another_type_that_compares_equal_is_checked():
    customer = mirrored()
    customer.balance = 1
    customer.save()
    customer.balance = True  # == 1, but not a number Stripe takes
    with pytest.raises(ValidationError) as caught:
        customer.save()
    assert "balance" in caught.value.message_dict


def test_a_refused_save_is_checked_whole_next_time():
    customer = mirrored()
    customer.email = "not an email"
    with pytest.raises(ValidationError):
        customer.save()
    with pytest.raises(ValidationError):
        customer.save()
    customer.email = "b@example.com"
    customer.save()
    assert Customer.objects.get(pk=customer.pk).pending_params() == {"email": "b@example.com"}


def test_saving_again_keeps_the_changes_of_earlier_saves_in_the_status():
    customer = mirrored()
    customer.name = "Bob"
    customer.save()
    customer.phone = "+15550100"
    customer.save()
    customer.name = "Ann"  # back to what Stripe has: the phone is still owed
    customer.save()
    assert customer.sync_status == SyncStatus.PENDING
    customer.phone = ""
    customer.save()
    assert customer.sync_status == SyncStatus.IN_SYNC
    assert Customer.objects.get(pk=customer.pk).pending_params() == {}


def test_a_new_confirmed_state_is_diffed_whole():
    customer = mirrored()
    customer.name = "Bob"
    customer.save()
    customer.stripe_data = {**customer.stripe_data, "name": "Bob"}  # as a pull would leave it
    customer.sync_version += 1
    Customer.objects.filter(pk=customer.pk).update(stripe_data=customer.stripe_data, sync_version=customer.sync_version)
    customer.save()
    assert customer.sync_status == SyncStatus.IN_SYNC


def test_a_form_clean_then_save_writes_what_was_checked():
    customer = mirrored()
    customer.email = "c@example.com"
    customer.full_clean()
    customer.save()
    assert PendingPush.objects.count() == 1
    assert Customer.objects.get(pk=customer.pk).pending_params() == {"email": "c@example.com"}
