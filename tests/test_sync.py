"""The push and pull paths in-process against the fake server (no worker)."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from customersync import sync
from customersync.core.encoding import decode
from customersync.models import Customer, SyncStatus

pytestmark = pytest.mark.django_db


def mirror(stripe, **fields):
    """A Stripe customer on the fake server, pulled into the local mirror."""
    obj = stripe.add_customer(**fields)
    customer = sync.pull_one(obj["id"])
    stripe.clear_requests()
    return customer


def posts(stripe):
    return [r for r in stripe.requests if r.method == "POST"]


def test_pull_one_mirrors_every_field(stripe):
    customer = mirror(
        stripe,
        email="a@b.c",
        name="Ann",
        metadata={"k": "v"},
        preferred_locales=["fr"],
        address={"city": "Paris", "country": "FR", "line1": None, "line2": None, "postal_code": None, "state": None},
    )
    assert (customer.email, customer.name, customer.metadata, customer.preferred_locales) == (
        "a@b.c",
        "Ann",
        {"k": "v"},
        ["fr"],
    )
    assert customer.address["city"] == "Paris"
    assert customer.sync_status == SyncStatus.IN_SYNC
    assert customer.pending_params() == {}
    assert customer.stripe_data["id"] == customer.stripe_id
    assert customer.created is not None


def test_push_sends_only_the_changed_params(stripe, django_capture_on_commit_callbacks):
    customer = mirror(
        stripe,
        email="old@example.com",
        name="Ann",
        metadata={"a": "1", "b": "2"},
        address={"city": "Paris", "country": "FR", "line1": "1 rue", "line2": None, "postal_code": None, "state": None},
    )
    customer.email = "new@example.com"
    customer.metadata = {"a": "1"}
    customer.address = {**customer.address, "city": "Lyon"}
    with django_capture_on_commit_callbacks() as callbacks:
        customer.save()
    assert len(callbacks) == 1  # a push is queued on commit
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.PENDING

    result = sync.push(customer.pk)
    assert result.outcome is sync.Outcome.PUSHED
    (req,) = posts(stripe)
    assert req.path == f"/v1/customers/{customer.stripe_id}"
    assert req.body == (
        b"email=new%40example.com&metadata[b]=&address[city]=Lyon&address[country]=FR&address[line1]=1+rue"
    )
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC and customer.last_pushed_at
    assert customer.stripe_data["email"] == "new@example.com"
    assert stripe.get_customer(customer.stripe_id)["metadata"] == {"a": "1"}
    assert customer.pending_params() == {}


def test_save_without_change_queues_nothing(stripe, django_capture_on_commit_callbacks):
    customer = mirror(stripe, email="a@b.c")
    with django_capture_on_commit_callbacks() as callbacks:
        customer.save()
    assert callbacks == []
    assert sync.push(customer.pk).outcome is sync.Outcome.NOTHING
    assert posts(stripe) == []


def test_reverted_change_sends_nothing(stripe):
    customer = mirror(stripe, email="a@b.c")
    customer.email = "x@example.com"
    customer.save()
    customer.email = "a@b.c"
    customer.save()
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC
    assert sync.push(customer.pk).outcome is sync.Outcome.NOTHING
    assert posts(stripe) == []


def test_stripe_400_marks_failed_and_keeps_the_edit(stripe):
    customer = mirror(stripe, name="Ann")
    customer.default_source = "card_missing"  # only Stripe knows it is not attached
    customer.name = "Bob"
    customer.save()
    result = sync.push(customer.pk)
    assert result.outcome is sync.Outcome.FAILED
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.FAILED
    assert customer.sync_error["param"] == "default_source"
    assert customer.sync_error["http_status"] == 400
    assert customer.sync_error["message"]
    assert customer.sync_error["request_id"].startswith("req_")
    assert (customer.default_source, customer.name) == ("card_missing", "Bob")  # nothing lost
    assert stripe.get_customer(customer.stripe_id)["name"] == "Ann"  # a 400 changes nothing


def test_fixing_the_bad_value_pushes_again(stripe):
    customer = mirror(stripe)
    customer.default_source = "card_missing"
    customer.save()
    sync.push(customer.pk)
    customer.refresh_from_db()
    stripe.attach_source(customer.stripe_id, "card_good")
    customer.default_source = "card_good"
    customer.save()
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC and customer.sync_error is None
    assert posts(stripe)[-1].body == b"default_source=card_good"


def test_unexpressible_change_is_refused_at_save(stripe):
    from django.core.exceptions import ValidationError

    customer = mirror(stripe, preferred_locales=["en"], name="Ann")
    customer.preferred_locales = []
    customer.name = "Bob"
    with pytest.raises(ValidationError) as info:
        customer.save()
    assert "preferred_locales" in info.value.message_dict
    customer.refresh_from_db()
    assert (customer.preferred_locales, customer.name) == (["en"], "Ann")  # nothing written
    assert not customer.pushes.exists()  # nothing reached the outbox


def test_404_marks_deleted(stripe):
    customer = mirror(stripe, name="Ann")
    stripe.delete_customer(customer.stripe_id)
    customer.name = "Bob"
    customer.save()
    assert sync.push(customer.pk).outcome is sync.Outcome.DELETED
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.DELETED
    assert customer.sync_error["code"] == "resource_missing"


def test_retryable_error_is_raised_and_recorded(stripe):
    customer = mirror(stripe)
    customer.name = "Bob"
    customer.save()
    stripe.inject(status=500)
    with pytest.raises(sync.RetryLater) as info:
        sync.push(customer.pk)
    assert info.value.error.http_status == 500 and info.value.attempts == 1
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.PENDING
    assert customer.sync_error["http_status"] == 500


def test_write_once_values_are_sent_once_and_cleared(stripe):
    customer = mirror(stripe)
    customer.pending_once = {"source": "tok_visa", "tax": {"ip_address": "1.2.3.4"}}
    customer.save()
    sync.push(customer.pk)
    (req,) = posts(stripe)
    assert decode(req.body) == {"source": "tok_visa", "tax": {"ip_address": "1.2.3.4"}}
    customer.refresh_from_db()
    assert customer.pending_once == {}
    assert customer.default_source.startswith("card_")  # mirrored from Stripe's answer
    assert customer.sync_status == SyncStatus.IN_SYNC


def test_tokens_are_redacted_in_logs(stripe, caplog):
    customer = mirror(stripe)
    customer.pending_once = {"source": "tok_secretish"}
    customer.save()
    with caplog.at_level("INFO", logger="customersync"):
        sync.push(customer.pk)
    assert "source=[redacted]" in caplog.text
    assert "tok_secretish" not in caplog.text


def test_pull_command_paginates_and_keeps_local_edits(stripe):
    for i in range(5):
        stripe.add_customer(name=f"c{i}", email=f"c{i}@example.com")
    call_command("customersync_pull", "--page-size=2")
    assert Customer.objects.count() == 5
    assert [r.query.get("limit") for r in stripe.requests] == ["2", "2", "2"]
    edited = Customer.objects.get(name="c1")
    edited.email = "local@example.com"
    edited.save()
    stripe.update_customer_directly(edited.stripe_id, name="remote name")
    call_command("customersync_pull")
    edited.refresh_from_db()
    assert edited.email == "local@example.com"  # pending local edit kept
    assert edited.name == "remote name"  # remote change taken
    assert edited.sync_status == SyncStatus.PENDING
    assert edited.pending_params() == {"email": "local@example.com"}


def test_push_command_reports_each_outcome(stripe, capsys):
    good = mirror(stripe, name="Ann")
    bad = mirror(stripe, name="Bob")
    good.name = "Ann 2"
    good.save()
    bad.default_source = "card_missing"
    bad.save()
    with pytest.raises(CommandError, match="1 of 2"):
        call_command("customersync_push", good.stripe_id, bad.stripe_id)
    out = capsys.readouterr().out
    assert f"{good.stripe_id}: pushed [name=Ann+2]" in out
    assert f"{bad.stripe_id}: failed [default_source=card_missing]" in out and "(param default_source)" in out


def test_push_command_unknown_id(stripe):
    with pytest.raises(CommandError, match="cus_nope"):
        call_command("customersync_push", "cus_nope")
