"""An owner has at most one customer per Stripe account: created in each, kept in step in each."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from customersync import sync
from customersync.models import Account, Customer, SyncStatus
from customersync.owner.mapping import OWNER_METADATA_KEY
from tests.owners import field, identity, make_owner

pytestmark = pytest.mark.django_db


@pytest.fixture
def connected(stripe):
    """A connected account of the default platform (legacy fake server: its own store per acct id)."""
    return Account.objects.create(platform="default", stripe_account="acct_Connected1")


def test_one_owner_gets_one_customer_in_each_account(stripe, connected):
    owner = make_owner(**{field("email"): "billing@acme.test"})
    own = sync.get_or_create_for(owner, wait=True)
    there = sync.get_or_create_for(owner, account=connected, wait=True)
    assert own.pk != there.pk and own.account is None and there.account == connected
    assert sync.get_or_create_for(owner, account=connected) == there  # not created twice
    assert sync.for_owner(owner) == own and sync.for_owner(owner, account=connected) == there
    creates = [r for r in stripe.requests if r.method == "POST" and r.path == "/v1/customers"]
    assert [r.headers.get("Stripe-Context") for r in creates] == [None, "acct_Connected1"]
    assert creates[0].idempotency_key != creates[1].idempotency_key  # one create key per account
    found = stripe.get_customer(there.stripe_id, account="acct_Connected1")
    assert found["metadata"][OWNER_METADATA_KEY] == identity(owner)
    with pytest.raises(IntegrityError), transaction.atomic():
        Customer.objects.create(owner=owner, account=connected, name="a second one there")


def test_an_owner_save_updates_its_customer_in_every_account(stripe, connected):
    owner = make_owner(**{field("email"): "billing@acme.test"})
    own = sync.get_or_create_for(owner, wait=True)
    there = sync.get_or_create_for(owner, account=connected, wait=True)
    stripe.clear_requests()
    setattr(owner, field("email"), "accounts@acme.test")
    owner.save()
    for customer in (own, there):
        assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    posts = [r for r in stripe.requests if r.method == "POST"]
    assert sorted((r.path, r.headers.get("Stripe-Context"), r.body) for r in posts) == sorted(
        [
            (f"/v1/customers/{own.stripe_id}", None, b"email=accounts%40acme.test"),
            (f"/v1/customers/{there.stripe_id}", "acct_Connected1", b"email=accounts%40acme.test"),
        ]
    )
    assert not Customer.objects.exclude(sync_status=SyncStatus.IN_SYNC).exists()


def test_a_refused_value_stops_the_owner_save_for_every_account(stripe, connected):
    from django.core.exceptions import ValidationError

    owner = make_owner(**{field("email"): "billing@acme.test"})
    sync.get_or_create_for(owner, wait=True)
    sync.get_or_create_for(owner, account=connected, wait=True)
    setattr(owner, field("email"), "x" * 600)  # longer than Stripe takes
    with pytest.raises(ValidationError) as raised:
        owner.save()
    assert field("email") in raised.value.message_dict
    assert set(Customer.objects.values_list("email", flat=True)) == {"billing@acme.test"}
