"""An owner save with ``OwnerMixin``: what changed is decided against the owner as loaded, only the
changed values are checked (before any query) and compared with what its customers last had
applied; its customers are written through their own save, with their outbox records.

Runs on whichever owner model the settings name (every test owner model has the mixin;
``test_owner.py`` runs its tests without it too), on every database.
"""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, connections, transaction
from django.db.models.signals import pre_save
from django.test import override_settings

from customersync import sync
from customersync.core.encoding import decode
from customersync.models import Customer, PendingPush, PushState, SyncStatus
from customersync.owner.mapping import mapping
from customersync.push import outbox
from customersync.push.send import Outcome
from tests.owners import field, make_owner, owner_metadata_key, owner_model, owner_save_queries, set_name

pytestmark = pytest.mark.django_db

ADDRESS = {"street": "1 rue de Rivoli", "city": "Paris", "postal_code": "75001", "country": "FR"}


@pytest.fixture
def published(monkeypatch, django_capture_on_commit_callbacks):
    """The customers whose push task the block's commit publishes."""
    pks: list = []
    monkeypatch.setattr(outbox.publisher, "submit", pks.append)
    monkeypatch.setattr(outbox, "enqueue", lambda pk, **kwargs: pks.append(pk))

    def capture():
        return django_capture_on_commit_callbacks(execute=True)

    capture.pks = pks
    return capture


def linked_customer(owner, **values) -> Customer:
    """The owner's customer as a link leaves it (its mapped values applied and recorded), nothing queued."""
    customer = Customer(owner=owner, stripe_id=f"cus_Owned{owner.pk}")
    found = mapping()
    found.apply(customer, found.values(owner))
    for name, value in values.items():
        setattr(customer, name, value)
    (customer,) = Customer.objects.bulk_create([customer])
    return Customer.objects.get(pk=customer.pk)


def loaded(owner):
    """The owner as a view has it: loaded from the database."""
    return owner_model().objects.get(pk=owner.pk)


def test_a_mapped_change_writes_its_customer_with_its_outbox_record_and_push(published):
    owner = make_owner(**{field("email"): "billing@acme.test", **ADDRESS})
    customer = linked_customer(owner)
    owner = loaded(owner)
    setattr(owner, field("email"), "accounts@acme.test")
    with published(), owner_save_queries() as queries:
        owner.save()
    # The owner's UPDATE, the read of its customers, the customer's own save: on every database.
    assert (queries.own, queries.customer_saves) == (2, 1)
    assert published.pks == [customer.pk]  # the push task, published on commit
    stored = Customer.objects.get(pk=customer.pk)
    assert stored.email == "accounts@acme.test" and stored.owner_values["email"] == "accounts@acme.test"
    assert stored.sync_status == SyncStatus.PENDING and stored.updated_at > customer.updated_at
    (record,) = PendingPush.objects.all()
    assert (record.customer_id, record.state) == (customer.pk, PushState.PENDING)
    assert getattr(loaded(owner), field("email")) == "accounts@acme.test"


def test_exact_values_written_a_column_an_address_part_and_a_metadata_key(settings):
    fields = {**settings.CUSTOMERSYNC["OWNER_FIELDS"], "metadata[plan]": "plan_note"}
    with override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "OWNER_FIELDS": fields}):
        owner = make_owner(plan_note="silver", **{field("email"): "billing@acme.test", **ADDRESS})
        key = owner_metadata_key()[len("metadata[") : -1]
        customer = linked_customer(owner, metadata={"set": "in Stripe", "plan": "silver", key: str(owner.pk)})
        owner = loaded(owner)
        setattr(owner, field("email"), "accounts@acme.test")
        owner.city, owner.plan_note = "Lyon", "gold"
        with owner_save_queries() as queries:
            owner.save()
    assert (queries.own, queries.customer_saves) == (2, 1)
    stored = Customer.objects.get(pk=customer.pk)
    assert stored.email == "accounts@acme.test"
    assert stored.address == {"line1": "1 rue de Rivoli", "city": "Lyon", "postal_code": "75001", "country": "FR"}
    assert stored.metadata == {"set": "in Stripe", "plan": "gold", key: str(owner.pk)}
    assert {k: stored.owner_values[k] for k in ("email", "address[city]", "metadata[plan]")} == {
        "email": "accounts@acme.test",
        "address[city]": "Lyon",
        "metadata[plan]": "gold",
    }


@pytest.mark.parametrize(
    ("address", "shipping", "city"),
    [
        (None, None, "Lyon"),  # objects created on the way
        (None, None, ""),  # an empty value does not make an object that is NULL
        ({}, {"name": "Ann"}, ""),
        ({"line1": "9 Quai"}, {"name": "Ann", "address": {"line1": "9 Quai"}}, "Lyon"),
        ({"line1": "9 Quai"}, {"name": "Ann", "address": None}, "Lyon"),
    ],
)
def test_object_parts_are_applied_as_the_mapping_applies_them(settings, address, shipping, city):
    """What the save writes against ``Mapping.apply`` on the same customer; where the customer's
    own checks refuse the result (a shipping address without a name), the save is refused and nothing
    is written."""
    fields = {**settings.CUSTOMERSYNC["OWNER_FIELDS"], "shipping[address][city]": "city"}
    with override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "OWNER_FIELDS": fields}):
        owner = make_owner(**{**ADDRESS, "city": "Paris"})
        customer = linked_customer(owner)
        Customer.objects.filter(pk=customer.pk).update(address=address, shipping=shipping)
        before = Customer.objects.get(pk=customer.pk)
        expected = Customer.objects.get(pk=customer.pk)
        found = mapping()
        found.apply(expected, {"address[city]": city, "shipping[address][city]": city})
        try:
            expected.validate_for_stripe()
        except ValidationError:
            expected = before
        owner = loaded(owner)
        owner.city = city
        if expected is before:
            with pytest.raises(ValidationError):
                owner.save()
        else:
            owner.save()
    stored = Customer.objects.get(pk=customer.pk)
    assert (stored.address, stored.shipping) == (expected.address, expected.shipping)


def test_a_key_whose_value_the_customer_already_has_applied_is_not_written():
    owner = make_owner(**{field("email"): "billing@acme.test"})
    customer = linked_customer(owner)
    owner = loaded(owner)
    # Applied already (as by a write-back), while this copy of the owner was loaded before.
    Customer.objects.filter(pk=customer.pk).update(owner_values={**customer.owner_values, "email": "new@acme.test"})
    setattr(owner, field("email"), "new@acme.test")
    with owner_save_queries() as queries:
        owner.save()
    assert (queries.own, queries.customer_saves) == (2, 0)  # read, found applied, not written
    stored = Customer.objects.get(pk=customer.pk)
    assert stored.email == "billing@acme.test" and stored.updated_at == customer.updated_at
    assert stored.sync_status == SyncStatus.IN_SYNC and not PendingPush.objects.exists()


def test_a_value_stripe_would_refuse_raises_on_the_owner_field_before_any_query(django_assert_num_queries):
    owner = make_owner(**{field("email"): "billing@acme.test"})
    customer = linked_customer(owner)
    owner = loaded(owner)
    setattr(owner, field("email"), "not an email")
    with django_assert_num_queries(0), pytest.raises(ValidationError) as info:
        owner.save()
    assert list(info.value.message_dict) == [field("email")]
    assert getattr(loaded(owner), field("email")) == "billing@acme.test"
    stored = Customer.objects.get(pk=customer.pk)
    assert stored.email == "billing@acme.test" and stored.sync_status == SyncStatus.IN_SYNC
    assert not PendingPush.objects.exists()


def test_a_save_changing_nothing_mapped_is_the_owners_update_alone(django_assert_num_queries):
    owner = make_owner(**{field("email"): "billing@acme.test"})
    linked_customer(owner)
    owner = loaded(owner)
    owner.plan_note = "not mapped"
    with django_assert_num_queries(1):
        owner.save()
    assert loaded(owner).plan_note == "not mapped"
    assert not PendingPush.objects.exists()


def test_update_fields_naming_a_mapped_field_writes_that_field_alone():
    owner = make_owner(**{field("email"): "billing@acme.test", **ADDRESS})
    customer = linked_customer(owner)
    owner = loaded(owner)
    setattr(owner, field("email"), "accounts@acme.test")
    owner.city = "Lyon"  # not saved: not sent either
    with owner_save_queries() as queries:
        owner.save(update_fields=[field("email")])
    assert (queries.own, queries.customer_saves) == (2, 1)
    stored = Customer.objects.get(pk=customer.pk)
    assert stored.email == "accounts@acme.test" and stored.address["city"] == "Paris"
    assert loaded(owner).city == "Paris"
    owner.save(update_fields=["city"])  # the city is still a change of this owner's
    assert Customer.objects.get(pk=customer.pk).address["city"] == "Lyon"


def test_an_owner_model_selecting_on_save_has_its_select_and_update_then_the_customers(monkeypatch):
    """``select_on_save``: Django's own SELECT before its UPDATE, the rest as always."""
    monkeypatch.setattr(owner_model()._meta, "select_on_save", True)
    owner = make_owner(**{field("email"): "billing@acme.test"})
    customer = linked_customer(owner)
    owner = loaded(owner)
    setattr(owner, field("email"), "accounts@acme.test")
    with owner_save_queries() as queries:
        owner.save()
    assert (queries.own, queries.customer_saves) == (3, 1)
    assert Customer.objects.get(pk=customer.pk).email == "accounts@acme.test"
    assert PendingPush.objects.filter(customer=customer, state=PushState.PENDING).count() == 1


def test_a_mapped_value_changed_but_left_out_of_update_fields_is_sent_by_a_later_save():
    owner = make_owner(**{field("email"): "billing@acme.test"})
    customer = linked_customer(owner)
    owner = loaded(owner)
    set_name(owner, "Renamed")
    owner.save(update_fields=["plan_note"])  # names no mapped field: the renaming is not saved
    owner.save()
    assert Customer.objects.get(pk=customer.pk).name == "Renamed"


def test_the_owner_as_loaded_decides_and_sync_from_owners_fixes_what_changed_without_a_save():
    owner = make_owner(**{field("email"): "billing@acme.test"})
    customer = linked_customer(owner)
    owner_model().objects.filter(pk=owner.pk).update(**{field("email"): "bulk@acme.test"})
    owner = loaded(owner)
    owner.plan_note = "unrelated"
    owner.save()  # its email is as loaded: not a change of this save's
    assert Customer.objects.get(pk=customer.pk).email == "billing@acme.test"
    result = sync.sync_from_owners(owner_model().objects.filter(pk=owner.pk))
    assert result.updated == 1 and Customer.objects.get(pk=customer.pk).email == "bulk@acme.test"


def test_refresh_from_db_takes_the_values_it_loads_as_the_ones_to_compare_with():
    owner = make_owner(**{field("email"): "billing@acme.test"})
    customer = linked_customer(owner)
    owner_model().objects.filter(pk=owner.pk).update(**{field("email"): "bulk@acme.test"})
    owner.refresh_from_db()
    owner.save()
    assert Customer.objects.get(pk=customer.pk).email == "billing@acme.test"
    setattr(owner, field("email"), "again@acme.test")
    owner.save()
    assert Customer.objects.get(pk=customer.pk).email == "again@acme.test"


def test_a_customer_deleted_in_stripe_keeps_its_status_and_gets_no_record(published):
    owner = make_owner(**{field("email"): "billing@acme.test"})
    customer = linked_customer(owner)
    Customer.objects.filter(pk=customer.pk).mark_deleted()
    owner = loaded(owner)
    setattr(owner, field("email"), "accounts@acme.test")
    with published():
        owner.save()
    stored = Customer.objects.get(pk=customer.pk)
    assert stored.email == "accounts@acme.test" and stored.sync_status == SyncStatus.DELETED
    assert published.pks == [] and not PendingPush.objects.exists()


def test_a_failed_customer_becomes_pending_and_keeps_its_error_as_settle_does():
    owner = make_owner(**{field("email"): "billing@acme.test"})
    customer = linked_customer(owner)
    Customer.objects.filter(pk=customer.pk).mark_failed({"message": "No."})
    owner = loaded(owner)
    setattr(owner, field("email"), "accounts@acme.test")
    owner.save()
    stored = Customer.objects.get(pk=customer.pk)
    expected = Customer.objects.get(pk=customer.pk)
    expected.sync_status = SyncStatus.FAILED
    expected.settle(True)
    assert (stored.sync_status, stored.sync_error) == (expected.sync_status, expected.sync_error)
    assert stored.sync_error == {"message": "No."}


def test_a_second_save_joins_the_queued_push(published):
    owner = make_owner(**{field("email"): "billing@acme.test"})
    customer = linked_customer(owner)
    owner = loaded(owner)
    setattr(owner, field("email"), "one@acme.test")
    owner.save()
    owner.city = "Lyon"
    with published():
        owner.save()
    assert published.pks == []
    assert PendingPush.objects.filter(customer=customer, state=PushState.PENDING).count() == 1


def test_the_push_sends_exactly_what_changed(stripe):
    owner = make_owner(**{field("email"): "billing@acme.test", **ADDRESS})
    customer = sync.get_or_create_for(owner, wait=True)
    stripe.clear_requests()
    owner = loaded(owner)
    owner.postal_code = "75002"
    owner.save()
    assert sync.push(customer.pk).outcome is Outcome.PUSHED
    (request,) = [r for r in stripe.requests if r.method == "POST"]
    address = {"line1": "1 rue de Rivoli", "city": "Paris", "postal_code": "75002", "country": "FR"}
    assert decode(request.body) == {"address": address}  # an object is sent whole


def test_a_value_stripe_already_has_settles_without_a_request(stripe):
    """The customer's save diffs against what Stripe has: nothing to send, nothing queued."""
    owner = make_owner(**{field("email"): "billing@acme.test"})
    customer = sync.get_or_create_for(owner, wait=True)
    stripe.update_customer_directly(customer.stripe_id, email="portal@acme.test")
    sync.pull_one(customer.stripe_id)  # the mirror has it; the owner's field does not (site to Stripe)
    Customer.objects.filter(pk=customer.pk).note_error({"message": "an old retryable error"})
    stripe.clear_requests()
    owner = loaded(owner)
    setattr(owner, field("email"), "portal@acme.test")
    owner.save()
    assert Customer.objects.get(pk=customer.pk).owner_values["email"] == "portal@acme.test"
    assert sync.push(customer.pk).outcome is Outcome.NOTHING
    assert stripe.requests == []
    stored = Customer.objects.get(pk=customer.pk)
    assert (stored.sync_status, stored.sync_error) == (SyncStatus.IN_SYNC, None)
    assert not PendingPush.objects.filter(customer=customer, state=PushState.PENDING).exists()


# Row locks and pg_stat_activity are PostgreSQL's.
@pytest.mark.postgresql
@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit", "atomic"])
@pytest.mark.django_db(transaction=True)
def test_a_save_racing_a_push_waits_for_the_customer_row_and_never_holds_the_owner_first(in_transaction):
    """A push freezes a customer under its row lock, and its write-back then updates the owner: an
    owner save waits for the customer's row without holding the owner's (in a transaction, the
    caller's or, outside one, the one ``OwnerMixin.save`` opens, it locks its customers before its
    UPDATE), and once the push committed it writes its value and queues a record of its own."""
    owner = make_owner(**{field("email"): "billing@acme.test"})
    customer = linked_customer(owner)
    saver = loaded(owner)
    setattr(saver, field("email"), "racing@acme.test")
    errors: list[BaseException] = []

    def save() -> None:
        try:
            with transaction.atomic(durable=True) if in_transaction else nullcontext():
                saver.save()
        except BaseException as err:  # reported below
            errors.append(err)
        finally:
            connections.close_all()

    with transaction.atomic():
        Customer.objects.select_for_update().get(pk=customer.pk)  # as the push's freeze
        PendingPush.objects.create(customer=customer, state=PushState.SENDING)  # the record it froze
        thread = threading.Thread(target=save)
        thread.start()
        deadline = time.monotonic() + 10
        with connection.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute("SELECT pg_stat_clear_snapshot()")  # the view is read once per transaction
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
                if cursor.fetchone()[0]:
                    break
                time.sleep(0.01)
            else:
                pytest.fail("the owner's save did not wait for the customer's row")
            cursor.execute("SET LOCAL lock_timeout = '5s'")
        # The write-back's order: the owner's row after the customer's. Not held by the save.
        owner_model().objects.filter(pk=owner.pk).update(phone="+33 6 00 00 00 00")
    thread.join(10)
    assert not thread.is_alive() and errors == []
    stored = Customer.objects.get(pk=customer.pk)
    assert stored.email == "racing@acme.test" and stored.sync_status == SyncStatus.PENDING
    assert PendingPush.objects.filter(customer=customer, state=PushState.PENDING).count() == 1


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_mapped_change_commits_the_owner_and_its_customers_together(monkeypatch):
    """``OwnerMixin.save`` runs a save changing a mapped value in one transaction: when its
    customer's write fails, the owner's row is not written either, and saving it again sends it."""
    owner = make_owner(**{field("email"): "billing@acme.test"})
    customer = linked_customer(owner)
    owner = loaded(owner)
    setattr(owner, field("email"), "accounts@acme.test")
    write = Customer.save

    def fails(self, *args, **kwargs):
        raise RuntimeError("the customer's write fails")

    monkeypatch.setattr(Customer, "save", fails)
    with pytest.raises(RuntimeError):
        owner.save()
    assert getattr(loaded(owner), field("email")) == "billing@acme.test"
    monkeypatch.setattr(Customer, "save", write)
    owner.save()
    assert getattr(loaded(owner), field("email")) == "accounts@acme.test"
    assert Customer.objects.get(pk=customer.pk).email == "accounts@acme.test"
    assert PendingPush.objects.filter(customer=customer, state=PushState.PENDING).count() == 1


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_only_a_save_changing_a_mapped_value_opens_one():
    owner = make_owner(**{field("email"): "billing@acme.test"})
    linked_customer(owner)
    owner = loaded(owner)
    autocommit: list[bool] = []

    def seen(sender, **kwargs):
        autocommit.append(transaction.get_autocommit())

    pre_save.connect(seen, sender=owner_model(), weak=False, dispatch_uid="test.seen")
    try:
        owner.plan_note = "not mapped"
        owner.save()
        setattr(owner, field("email"), "accounts@acme.test")
        owner.save()
        owner.save(update_fields=["plan_note"])
    finally:
        pre_save.disconnect(sender=owner_model(), dispatch_uid="test.seen")
    assert autocommit == [True, False, True]
