"""End to end: a real Celery worker process, Redis, the test database, the fake server.

Every assertion is on what the fake server received. To know that the worker
has finished the tasks queued before some point without sleeping, each test
saves a change to a *canary* customer last and waits for the canary's request:
the worker runs one task at a time in queue order, so everything queued before
the canary has been handled by then.
"""

import pytest
from django.db import transaction

from customersync import sync
from customersync.core.encoding import decode
from customersync.models import Customer, SyncStatus
from tests.admin_forms import edit

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ADDRESS = {
    "city": "Paris",
    "country": "FR",
    "line1": "1 rue de Rivoli",
    "line2": None,
    "postal_code": "75001",
    "state": None,
}


def mirrored(stripe, **fields):
    customer = sync.pull_one(stripe.add_customer(**fields)["id"])
    return customer


@pytest.fixture
def canary(stripe):
    customer = mirrored(stripe, name="canary")

    def flush(timeout=30):
        """Queue a push of the canary and wait until the worker sends it."""
        customer.refresh_from_db()
        customer.description = f"flush {customer.description}"
        customer.save()
        stripe.wait_for_requests(
            1 + len(posts_for(stripe, customer)),
            timeout=timeout,
            method="POST",
            path_prefix=f"/v1/customers/{customer.stripe_id}",
        )

    flush.customer = customer
    return flush


def posts_for(stripe, customer):
    return [r for r in stripe.requests if r.method == "POST" and r.path == f"/v1/customers/{customer.stripe_id}"]


def test_admin_edit_reaches_stripe_as_exactly_the_changed_params(stripe, start_worker, canary, client, admin_user):
    customer = mirrored(
        stripe, email="old@example.com", name="Ann", metadata={"keep": "1", "drop": "2"}, address=ADDRESS
    )
    start_worker()
    client.force_login(admin_user)
    response = edit(client, customer, email="new@example.com", metadata={"keep": "1"}, address={"city": "Lyon"})
    assert response.status_code == 302
    canary()

    (request,) = posts_for(stripe, customer)
    assert decode(request.body) == {
        "email": "new@example.com",
        "metadata": {"drop": ""},
        "address": {"city": "Lyon", "country": "FR", "line1": "1 rue de Rivoli", "postal_code": "75001"},
    }
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC
    assert stripe.get_customer(customer.stripe_id)["metadata"] == {"keep": "1"}


def test_orm_edit_reaches_stripe_as_exactly_the_changed_params(stripe, start_worker, canary):
    customer = mirrored(
        stripe, email="a@example.com", metadata={"a": "1"}, preferred_locales=["en"], invoice_settings={"footer": "old"}
    )
    start_worker()
    with transaction.atomic():
        customer.metadata = {"a": "1", "b": "2"}
        customer.preferred_locales = ["fr", "en"]
        customer.invoice_settings = {**customer.invoice_settings, "footer": "new"}
        customer.save()
    canary()
    (request,) = posts_for(stripe, customer)
    assert request.body == (
        b"preferred_locales[0]=fr&preferred_locales[1]=en&metadata[b]=2&invoice_settings[footer]=new"
    )
    assert request.headers["Idempotency-Key"]


def test_five_saves_before_the_worker_runs_send_one_request(stripe, start_worker, canary):
    customer = mirrored(stripe, email="v0@example.com")
    for i in range(1, 6):
        customer.email = f"v{i}@example.com"
        customer.metadata = {"edit": str(i)}
        customer.save()
    start_worker()
    canary()
    (request,) = posts_for(stripe, customer)
    assert request.body == b"email=v5%40example.com&metadata[edit]=5"


def test_unchanged_save_and_reverted_change_send_nothing(stripe, start_worker, canary):
    untouched = mirrored(stripe, email="same@example.com")
    reverted = mirrored(stripe, email="orig@example.com")
    untouched.save()
    reverted.email = "changed@example.com"
    reverted.save()
    reverted.email = "orig@example.com"
    reverted.save()
    start_worker()
    canary()
    assert posts_for(stripe, untouched) == [] and posts_for(stripe, reverted) == []
    assert [r.path for r in stripe.requests if r.method == "POST"] == [f"/v1/customers/{canary.customer.stripe_id}"]


def test_rolled_back_save_sends_nothing(stripe, start_worker, canary):
    customer = mirrored(stripe, email="a@example.com")
    with pytest.raises(RuntimeError), transaction.atomic():
        customer.email = "rolled-back@example.com"
        customer.save()
        raise RuntimeError("roll back")
    start_worker()
    canary()
    assert posts_for(stripe, customer) == []


def test_stripe_400_marks_the_customer_failed(stripe, start_worker, canary):
    customer = mirrored(stripe, name="Ann")
    start_worker()
    customer.default_source = "card_missing"  # only Stripe knows it is not attached
    customer.name = "Bob"
    customer.save()
    canary()
    (request,) = posts_for(stripe, customer)
    assert request.status == 400
    customer = Customer.objects.get(pk=customer.pk)
    assert customer.sync_status == SyncStatus.FAILED
    assert customer.sync_error["param"] == "default_source" and customer.sync_error["message"]
    assert (customer.name, customer.default_source) == ("Bob", "card_missing")


def test_retryable_error_is_retried_with_the_same_idempotency_key(stripe, start_worker, canary):
    customer = mirrored(stripe, name="Ann")
    path = f"/v1/customers/{customer.stripe_id}"
    stripe.inject(status=500, path_prefix=path)
    start_worker()
    customer.name = "Bob"
    customer.save()
    first, second = stripe.wait_for_requests(2, timeout=30, method="POST", path_prefix=path)
    assert (first.status, second.status) == (500, 200)
    assert first.idempotency_key == second.idempotency_key
    assert first.body == second.body == b"name=Bob"
    canary()
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC and customer.sync_error is None


def test_failed_after_the_retries_run_out(stripe, start_worker, canary, settings):
    customer = mirrored(stripe, name="Ann")
    path = f"/v1/customers/{customer.stripe_id}"
    attempts = settings.CUSTOMERSYNC["MAX_RETRIES"] + 1
    stripe.inject(status=503, times=attempts + 1, path_prefix=path)
    start_worker()
    customer.name = "Bob"
    customer.save()
    stripe.wait_for_requests(attempts, timeout=30, method="POST", path_prefix=path)
    canary()
    assert len(posts_for(stripe, customer)) == attempts
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.FAILED
    assert customer.sync_error["http_status"] == 503
    assert customer.name == "Bob"
