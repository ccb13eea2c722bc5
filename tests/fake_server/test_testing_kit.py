"""The fake_stripe fixture that sites use in their own tests (customersync.testing.pytest_plugin)."""

import pytest
from celery.signals import before_task_publish

from customersync import sync
from customersync.models import Customer, SyncStatus


@pytest.fixture
def broker_publishes():
    """Everything published to a real broker during the test."""
    published = []

    def remember(**kwargs):
        published.append(kwargs.get("routing_key"))

    before_task_publish.connect(remember, weak=False)
    yield published
    before_task_publish.disconnect(remember)


@pytest.mark.django_db
def test_a_save_reaches_the_fake_server_when_the_test_pushes(fake_stripe):
    customer = sync.pull_one(fake_stripe.add_customer(email="old@example.com", name="Ann")["id"])
    customer.email = "new@example.com"
    customer.save()
    assert fake_stripe.requests_for("POST") == []  # nothing runs behind the test's back
    fake_stripe.push_pending()
    (request,) = fake_stripe.requests_for("POST")
    assert (request.path, request.body) == (f"/v1/customers/{customer.stripe_id}", b"email=new%40example.com")
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC
    assert fake_stripe.push_pending() == []  # nothing left


@pytest.mark.django_db(transaction=True)
def test_a_committed_save_is_listed_not_published_to_the_broker(fake_stripe, broker_publishes):
    customer = sync.pull_one(fake_stripe.add_customer(email="old@example.com")["id"])
    customer.email = "new@example.com"
    customer.save()  # commits: the push is "queued"
    sync.mark_for_push(Customer.objects.filter(pk=customer.pk))
    assert fake_stripe.published == [customer.pk, "drain"]
    assert broker_publishes == []
    fake_stripe.push_pending()
    assert [r.body for r in fake_stripe.requests_for("POST")] == [b"email=new%40example.com"]


@pytest.mark.django_db
def test_a_retryable_error_is_retried_and_a_refusal_is_kept_on_the_customer(fake_stripe):
    ok = sync.pull_one(fake_stripe.add_customer(name="Ok")["id"])
    ok.name = "Ok 2"
    ok.save()
    fake_stripe.inject(status=500)
    fake_stripe.push_pending()
    assert [r.status for r in fake_stripe.requests_for("POST")] == [500, 200]
    refused = sync.pull_one(fake_stripe.add_customer(name="No")["id"])
    refused.default_source = "card_missing"  # only Stripe knows it is not attached
    refused.save()
    fake_stripe.push_pending()
    refused.refresh_from_db()
    assert refused.sync_status == SyncStatus.FAILED and refused.sync_error["param"] == "default_source"
