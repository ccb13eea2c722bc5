"""Customers linked to the site's own model, its fields mapped and kept in step.

Written against whichever owner model the settings name (an organization by
default; ``CUSTOMERSYNC_TEST_OWNER=user`` runs the same tests on a custom
user model, as ``test_owner_setups.py`` does). Pushes run in-process here;
``test_owner_e2e.py`` runs them in a real worker.
"""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.test import override_settings
from django.urls import reverse

from customersync import signals, sync
from customersync.core.encoding import decode
from customersync.models import Conflict, Customer, PendingPush, PushState, SyncStatus
from customersync.owner import save
from tests.owners import (
    field,
    identity,
    make_owner,
    owner_metadata_key,
    owner_model,
    owner_save_queries,
    set_name,
)
from tests.pull.test_mirror import deliver, event, signed

pytestmark = pytest.mark.django_db

ADDRESS = {"street": "1 rue de Rivoli", "city": "Paris", "postal_code": "75001", "country": "FR"}


def posts(stripe, path_prefix="/v1/customers"):
    return [r for r in stripe.requests if r.method == "POST" and r.path.startswith(path_prefix)]


@pytest.fixture(params=["mixin", "signals"])
def save_path(request, monkeypatch):
    """How owner saves know what changed: the owner model's ``OwnerMixin`` (its values as loaded),
    or what a site without the mixin has (nothing remembered: every value against the customers')."""
    if request.param == "signals":
        monkeypatch.setattr(save, "_remembers", lambda instance: None)
    return request.param


@pytest.fixture
def linked(stripe, save_path):
    """An owner with its customer created in Stripe; the server's log emptied (run on both save paths)."""
    owner = make_owner(**{field("email"): "billing@acme.test", field("phone"): "+33 1 00 00 00 00", **ADDRESS})
    customer = sync.get_or_create_for(owner, wait=True)
    stripe.clear_requests()
    return owner, customer


def push_now(customer):
    return sync.push(customer.pk)


# -- the link -------------------------------------------------------------------------


def test_customer_has_a_real_foreign_key_to_the_owner_model(linked):
    owner, customer = linked
    fk = Customer._meta.get_field("owner")
    assert fk.related_model is owner_model()
    assert Customer.objects.get(owner=owner) == customer
    assert sync.for_owner(owner) == customer
    assert sync.for_owner(make_owner("Nobody")) is None


def test_one_customer_per_owner_in_the_database(linked):
    from django.db import IntegrityError, transaction

    owner, _ = linked
    with pytest.raises(IntegrityError), transaction.atomic():
        Customer.objects.create(owner=owner, name="second")


def test_deleting_the_owner_unlinks_its_customer_and_keeps_it(linked, stripe):
    owner, customer = linked
    owner.delete()
    customer.refresh_from_db()
    assert customer.owner_id is None and customer.stripe_id
    assert stripe.get_customer(customer.stripe_id) is not None
    assert stripe.requests == []


# -- creation ---------------------------------------------------------------------------


def test_get_or_create_for_creates_from_the_mapping_with_the_owner_in_metadata(stripe):
    owner = make_owner("Acme", **{field("email"): "billing@acme.test", **ADDRESS})
    customer = sync.get_or_create_for(owner, wait=True)
    assert customer.stripe_id and customer.sync_status == SyncStatus.IN_SYNC
    search, create = stripe.requests
    assert (search.method, search.path) == ("GET", "/v1/customers/search")
    assert search.query == {"query": f"metadata['customersync_owner']:'{identity(owner)}'", "limit": "10"}
    assert (create.method, create.path) == ("POST", "/v1/customers")
    sent = decode(create.body)
    assert sent["email"] == "billing@acme.test" and sent["name"] == "Acme"
    assert sent["address"] == {"line1": "1 rue de Rivoli", "city": "Paris", "postal_code": "75001", "country": "FR"}
    assert sent["metadata"] == {"customersync_owner": identity(owner), owner_metadata_key()[9:-1]: str(owner.pk)}
    assert stripe.get_customer(customer.stripe_id)["metadata"]["customersync_owner"] == identity(owner)
    # Again: the same customer, nothing sent.
    stripe.clear_requests()
    assert sync.get_or_create_for(owner, wait=True) == customer
    assert stripe.requests == []


def test_get_or_create_for_queued_returns_at_once_with_the_push_in_the_outbox(stripe):
    owner = make_owner(**{field("email"): "q@acme.test"})
    customer = sync.get_or_create_for(owner)
    assert customer.pk and not customer.stripe_id and customer.sync_status == SyncStatus.PENDING
    assert PendingPush.objects.filter(customer=customer, state=PushState.PENDING).count() == 1
    assert stripe.requests == []
    push_now(customer)
    customer.refresh_from_db()
    assert customer.stripe_id in stripe.customers


def test_create_key_comes_from_the_owner(stripe):
    owner = make_owner()
    customer = sync.get_or_create_for(owner, wait=True)
    (create,) = posts(stripe)
    record = PendingPush.objects.get(customer=customer, operation="create")
    assert create.idempotency_key == record.idempotency_key
    # Derived from the owner's identity: another database would send the same key.
    from customersync.owner.mapping import mapping

    assert str(mapping().create_key(owner.pk, 0)) in create.idempotency_key


def test_a_dropped_create_answer_makes_one_customer(stripe):
    owner = make_owner(**{field("email"): "drop@acme.test"})
    stripe.inject(action="drop_after", method="POST", path_prefix="/v1/customers")
    customer = sync.get_or_create_for(owner, wait=True)
    assert list(stripe.customers) == [customer.stripe_id]


def test_an_earlier_runs_customer_is_found_not_created_again(stripe):
    owner = make_owner("Acme", **{field("email"): "new@acme.test"})
    earlier = stripe.add_customer(email="old@acme.test", name="Acme", metadata={"customersync_owner": identity(owner)})
    customer = sync.get_or_create_for(owner, wait=True)
    assert customer.stripe_id == earlier["id"] and len(stripe.customers) == 1
    # Not created: the owner's values that differ are pushed as an update.
    (update,) = posts(stripe)
    assert update.path == f"/v1/customers/{earlier['id']}"
    assert decode(update.body)["email"] == "new@acme.test"
    assert stripe.get_customer(earlier["id"])["email"] == "new@acme.test"


def test_created_signal_carries_owner_and_stripe_id(stripe):
    seen = []

    def receiver(sender, **kwargs):
        seen.append(kwargs)

    signals.customer_created.connect(receiver, sender=Customer)
    try:
        owner = make_owner()
        customer = sync.get_or_create_for(owner, wait=True)
    finally:
        signals.customer_created.disconnect(receiver, sender=Customer)
    (kwargs,) = seen
    assert kwargs["owner"] == owner and kwargs["stripe_id"] == customer.stripe_id
    assert kwargs["customer_pk"] == customer.pk and kwargs["found"] is False


def test_create_with_a_value_stripe_refuses_is_an_error_on_the_owner_field(stripe):
    owner = make_owner(**{field("email"): "not an email"})
    with pytest.raises(ValidationError) as info:
        sync.get_or_create_for(owner)
    assert set(info.value.message_dict) == {field("email")}
    assert not Customer.objects.exists() and stripe.requests == []


def test_create_refused_by_stripe_raises_with_stripes_message(stripe):
    from customersync.exceptions import CreateFailed

    owner = make_owner()
    stripe.inject(status=400, error={"type": "invalid_request_error", "message": "No.", "param": "email"})
    with pytest.raises(CreateFailed) as info:
        sync.get_or_create_for(owner, wait=True)
    assert info.value.error["message"] == "No." and info.value.error["param"] == "email"


# -- owner saves ---------------------------------------------------------------------------


def test_owner_edit_of_one_mapped_field_sends_exactly_that_param(linked, stripe):
    owner, customer = linked
    setattr(owner, field("email"), "new@acme.test")
    owner.save()
    push_now(customer)
    (request,) = posts(stripe)
    assert request.body == b"email=new%40acme.test"


def test_owner_edit_of_an_address_part_sends_the_address_whole(linked, stripe):
    owner, customer = linked
    owner.city = "Lyon"
    owner.save()
    push_now(customer)
    (request,) = posts(stripe)
    assert decode(request.body) == {
        "address": {"line1": "1 rue de Rivoli", "city": "Lyon", "postal_code": "75001", "country": "FR"}
    }


def test_owner_edit_of_a_callable_mapping(linked, stripe):
    owner, customer = linked
    set_name(owner, "Acme Two")
    owner.save()
    push_now(customer)
    (request,) = posts(stripe)
    body = decode(request.body)
    assert body["name"] == "Acme Two"
    assert set(body) <= {"name", "description"}  # the description is computed from the name


def test_owner_save_changing_nothing_mapped_writes_nothing(linked, stripe, django_assert_num_queries, save_path):
    owner, customer = linked
    before = Customer.objects.get(pk=customer.pk).updated_at
    owner.plan_note = "not mapped"
    # The owner's UPDATE alone with the mixin (compared with the owner as loaded); without it, the
    # owner's UPDATE and finding its customer.
    with django_assert_num_queries(1 if save_path == "mixin" else 2):
        owner.save()
    assert Customer.objects.get(pk=customer.pk).updated_at == before
    assert not PendingPush.objects.filter(customer=customer, state=PushState.PENDING).exists()
    push_now(customer)
    assert stripe.requests == []


def test_owner_save_changing_a_mapped_value_writes_only_what_it_applied(linked, save_path):
    owner, customer = linked
    # Changed in the row since the owner's customer was last written (as by an edit meanwhile).
    Customer.objects.filter(pk=customer.pk).update(description="set elsewhere")
    setattr(owner, field("email"), "accounts@acme.test")
    # The owner's UPDATE and finding its customer, then the customer's own save (with its outbox
    # record): the same on every database, with the mixin or without.
    with owner_save_queries() as queries:
        owner.save()
    assert (queries.own, queries.customer_saves) == (2, 1)
    stored = Customer.objects.get(pk=customer.pk)
    assert stored.email == "accounts@acme.test" and stored.description == "set elsewhere"
    assert stored.owner_values["email"] == "accounts@acme.test"
    assert stored.sync_status == SyncStatus.PENDING
    assert PendingPush.objects.filter(customer=customer, state=PushState.PENDING).count() == 1


def test_an_owner_save_rolled_back_then_saved_again_sends_its_change(linked, stripe, save_path):
    owner, customer = linked
    owner = owner_model().objects.get(pk=owner.pk)  # as a view loads it
    setattr(owner, field("email"), "again@acme.test")
    with pytest.raises(RuntimeError), transaction.atomic():
        owner.save()
        raise RuntimeError("the view fails after the save")
    assert Customer.objects.get(pk=customer.pk).email == "billing@acme.test"
    owner.save()
    push_now(customer)
    (request,) = posts(stripe)
    assert request.body == b"email=again%40acme.test"


def test_a_committed_owner_save_then_saved_unchanged_sends_nothing_more(
    linked, stripe, save_path, django_capture_on_commit_callbacks
):
    owner, customer = linked
    owner = owner_model().objects.get(pk=owner.pk)
    setattr(owner, field("email"), "once@acme.test")
    with django_capture_on_commit_callbacks(execute=True):
        owner.save()
    push_now(customer)
    stripe.clear_requests()
    with owner_save_queries() as queries:
        owner.save()
    # The mixin remembered the values saved once they committed: the owner's UPDATE alone.
    assert (queries.total, queries.customer_saves) == (1 if save_path == "mixin" else 2, 0)
    push_now(customer)
    assert posts(stripe) == []


def test_a_key_added_to_the_mapping_is_sent_by_the_next_save(linked, stripe, settings, save_path):
    owner, customer = linked
    owner_model().objects.filter(pk=owner.pk).update(plan_note="gold")
    owner = owner_model().objects.get(pk=owner.pk)  # loaded with the mapping as it was
    mapping = {**settings.CUSTOMERSYNC["OWNER_FIELDS"], "metadata[plan]": "plan_note"}
    with override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "OWNER_FIELDS": mapping}):
        owner.save()  # nothing of the owner changed: the mapping did
        push_now(customer)
    (request,) = posts(stripe)
    assert request.body == b"metadata[plan]=gold"
    assert Customer.objects.get(pk=customer.pk).owner_values["metadata[plan]"] == "gold"


def test_owner_value_stripe_would_refuse_is_an_error_on_the_owner_field(linked, stripe):
    owner, customer = linked
    setattr(owner, field("email"), "not an email")
    with pytest.raises(ValidationError) as info:
        owner.save()
    assert list(info.value.message_dict) == [field("email")]
    assert "valid email" in info.value.message_dict[field("email")][0]
    assert getattr(owner_model().objects.get(pk=owner.pk), field("email")) == "billing@acme.test"
    customer.refresh_from_db()
    assert customer.email == "billing@acme.test" and customer.sync_status == SyncStatus.IN_SYNC
    assert not PendingPush.objects.filter(customer=customer, state=PushState.PENDING).exists()


def test_check_owner_reports_before_saving(linked):
    owner, _ = linked
    setattr(owner, field("email"), "nope")
    with pytest.raises(ValidationError) as info:
        sync.check_owner(owner)
    assert list(info.value.message_dict) == [field("email")]


def test_sync_from_owners_is_the_bulk_counterpart_of_update(linked, stripe):
    owner, customer = linked
    other = make_owner("Other", **{field("email"): "o@acme.test"})
    other_customer = sync.get_or_create_for(other, wait=True)
    bad = make_owner("Bad")
    sync.get_or_create_for(bad, wait=True)
    stripe.clear_requests()
    model = owner_model()
    model.objects.filter(pk__in=[owner.pk, other.pk]).update(city="Nice")
    model.objects.filter(pk=bad.pk).update(**{field("email"): "nope"})
    model.objects.filter(pk=owner.pk).update(plan_note="x")
    result = sync.sync_from_owners(model.objects.filter(pk__in=[owner.pk, other.pk, bad.pk, make_owner().pk]))
    assert (result.updated, result.unchanged, result.unlinked) == (2, 0, 1)
    assert list(result.errors) == [bad.pk] and list(result.errors[bad.pk]) == [field("email")]
    for c in (customer, other_customer):
        push_now(c)
    assert sorted(r.path for r in posts(stripe)) == sorted(
        f"/v1/customers/{c.stripe_id}" for c in (customer, other_customer)
    )
    assert all(set(decode(r.body)) == {"address"} for r in posts(stripe))


# -- both ways, and no clobbering ----------------------------------------------------------------


def webhook(client, stripe, customer, created=None, **changes):
    obj = stripe.update_customer_directly(customer.stripe_id, **changes)
    payload = event(obj, event_id=f"evt_{len(stripe.requests)}_{customer.pk}", created=created)
    body = json.dumps(payload).encode()
    response = deliver(client, body, signed(body))
    assert response.status_code == 200, response.content
    return response.json()["outcome"]


def test_both_ways_field_changed_in_stripe_is_written_to_the_owner_not_pushed_back(linked, stripe, client):
    owner, customer = linked
    address = {"line1": "9 Portal Street", "city": "Lyon", "postal_code": "69001", "country": "FR"}
    assert webhook(client, stripe, customer, address=address) == "applied"
    owner.refresh_from_db()
    assert (owner.street, owner.city, owner.postal_code) == ("9 Portal Street", "Lyon", "69001")
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC
    assert not PendingPush.objects.filter(customer=customer, state=PushState.PENDING).exists()
    # Saving the owner afterwards sends nothing back.
    owner.plan_note = "later"
    owner.save()
    push_now(customer)
    assert posts(stripe) == []


def test_site_to_stripe_field_changed_in_stripe_is_never_pushed_back_by_an_unrelated_save(linked, stripe, client):
    """Cashier's issue #1577: a save must not overwrite what the customer changed in Stripe."""
    owner, customer = linked
    assert webhook(client, stripe, customer, email="changed-in-portal@acme.test") == "applied"
    owner.refresh_from_db()
    assert getattr(owner, field("email")) == "billing@acme.test"  # site -> Stripe only: not written back
    owner.plan_note = "unrelated"
    owner.city = "Lyon"
    owner.save()
    push_now(customer)
    (request,) = posts(stripe)
    assert "email" not in decode(request.body)
    assert stripe.get_customer(customer.stripe_id)["email"] == "changed-in-portal@acme.test"
    # Changing that field on the site does send it: the site's newest edit wins.
    setattr(owner, field("email"), "site@acme.test")
    owner.save()
    push_now(customer)
    assert stripe.get_customer(customer.stripe_id)["email"] == "site@acme.test"


def test_both_ways_pull_writes_the_owner_too(linked, stripe):
    owner, customer = linked
    stripe.update_customer_directly(customer.stripe_id, phone="+44 20 0000 0000")
    sync.pull_one(customer.stripe_id)
    owner.refresh_from_db()
    assert owner.phone == "+44 20 0000 0000"


@pytest.mark.parametrize("policy", ["local_wins", "remote_wins"])
def test_conflict_with_an_unpushed_owner_edit_is_recorded_under_the_policy(linked, stripe, client, settings, policy):
    owner, customer = linked
    owner.phone = "+33 6 11 11 11 11"  # saved, not yet pushed
    owner.save()
    recorded = []

    def receiver(sender, conflicts, **kwargs):
        recorded.extend(conflicts)

    signals.conflict_recorded.connect(receiver, sender=Customer)
    try:
        with override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "CONFLICT_POLICY": policy}):
            webhook(client, stripe, customer, phone="+33 6 22 22 22 22")
    finally:
        signals.conflict_recorded.disconnect(receiver, sender=Customer)
    conflict = Conflict.objects.get(customer=customer)
    assert (conflict.param, conflict.local_value, conflict.remote_value) == (
        "phone",
        "+33 6 11 11 11 11",
        "+33 6 22 22 22 22",
    )
    assert [c.pk for c in recorded] == [conflict.pk]
    owner.refresh_from_db()
    customer.refresh_from_db()
    if policy == "local_wins":
        assert owner.phone == customer.phone == "+33 6 11 11 11 11"
        push_now(customer)
        (request,) = posts(stripe)
        assert decode(request.body) == {"phone": "+33 6 11 11 11 11"}
    else:
        assert owner.phone == customer.phone == "+33 6 22 22 22 22"
        push_now(customer)
        assert posts(stripe) == []


def test_admin_shows_the_owner_on_the_customer_page(linked, admin_client):
    owner, customer = linked
    page = admin_client.get(reverse("admin:customersync_customer_change", args=[customer.pk])).content.decode()
    assert str(owner) in page


def test_save_with_update_fields_naming_no_mapped_field_does_not_look_for_the_customer(
    linked, settings, django_assert_num_queries
):
    owner, _ = linked
    fields_only = {k: v for k, v in settings.CUSTOMERSYNC["OWNER_FIELDS"].items() if k != "name" and k != "description"}
    with override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "OWNER_FIELDS": fields_only}):
        owner.plan_note = "x"
        with django_assert_num_queries(1):  # the owner's UPDATE only
            owner.save(update_fields=["plan_note"])
        setattr(owner, field("email"), "changed@acme.test")
        owner.save(update_fields=[field("email")])
    assert sync.for_owner(owner).email == "changed@acme.test"


def test_owner_edit_of_a_mapped_metadata_key_sends_that_key_alone(stripe, settings):
    mapping = {**settings.CUSTOMERSYNC["OWNER_FIELDS"], "metadata[plan]": "plan_note"}
    with override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "OWNER_FIELDS": mapping}):
        owner = make_owner(plan_note="silver")
        customer = sync.get_or_create_for(owner, wait=True)
        stripe.clear_requests()
        owner.plan_note = "gold"
        owner.save()
        push_now(customer)
    (request,) = posts(stripe)
    assert request.body == b"metadata[plan]=gold"
    assert stripe.get_customer(customer.stripe_id)["metadata"]["plan"] == "gold"
    assert stripe.get_customer(customer.stripe_id)["metadata"]["customersync_owner"] == identity(owner)
