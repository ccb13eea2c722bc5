"""Owners and their customers at run time: saves, creation once, bulk refresh, write-back.

The mapping itself (what comes from where) is ``owners.Mapping``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connections, router, transaction

from . import owner_save
from .accounts import resolve
from .conf import app_settings
from .exceptions import Busy, ConfigurationError, CreateFailed, RetryLater
from .loading import from_row
from .models import Customer, SyncStatus
from .owners import OWNER_METADATA_KEY, Mapping, mapping

# Where pre_save leaves the customer for post_save to write.
_PENDING = "_customersync_customer"


def _require() -> Mapping:
    found = mapping()
    if found is None:
        raise ConfigurationError(
            "CUSTOMERSYNC['OWNER_MODEL'] is not set: name the model that owns customers to link them."
        )
    return found


def for_owner(owner: Any, account: Any = None) -> Customer | None:
    """The owner's customer in ``account`` (default: the default platform's own account), or None."""
    _require()
    return Customer.objects.filter(owner_id=owner.pk, account=resolve(account)).first()


def owner_pre_save(sender: type, instance: Any, raw: bool = False, using: str | None = None,
                   update_fields: Any = None, **kwargs: Any) -> None:  # fmt: skip
    """Apply changed mapped values to the owner's customers (one per account) and validate them,
    before the owner is written.

    Raises ``ValidationError`` keyed by the owner's fields for a value Stripe would refuse.
    """
    owner_save.forget(instance)
    instance.__dict__.pop(_PENDING, None)
    if raw or instance._state.adding or instance.pk is None:
        return  # a new owner has no customer yet (get_or_create_for makes one)
    found = mapping()
    if found is None or (update_fields is not None and not found.touches(update_fields)):
        return
    if owner_save.prepare(found, instance, using or router.db_for_write(sender, instance=instance), update_fields):
        return  # OwnerMixin: its _do_update writes the customers, in the owner's statement
    customers = _changed_customers(found, instance, _customers_of(instance.pk, using))
    if customers:
        instance.__dict__[_PENDING] = customers


def _customers_of(owner_pk: Any, using: str | None) -> list[Customer]:
    """The owner's customers, as ``Customer.objects.filter(owner_id=owner_pk)`` loads them, with the
    query compiled once per database: compiling it cost more than running it, on every owner save."""
    using = using or router.db_for_read(Customer)
    connection = connections[using]
    key = (using, connection.vendor)
    found = _reads.get(key)
    if found is None:
        compiler = Customer.objects.using(using).filter(owner_id=owner_pk).query.get_compiler(using)
        statement, params = compiler.as_sql()
        columns = [column for column, _, _ in compiler.select]
        if len(params) != 1 or any(getattr(column, "target", None) is None for column in columns):
            return list(Customer.objects.using(using).filter(owner_id=owner_pk))
        converters = [(index, *pair) for index, pair in compiler.get_converters(columns).items()]
        found = _reads[key] = (statement, tuple(column.target.attname for column in columns), converters)
    statement, names, converters = found
    with connection.cursor() as cursor:
        cursor.execute(statement, [Customer._meta.get_field("owner").get_db_prep_value(owner_pk, connection)])
        rows = cursor.fetchall()
    return [from_row(Customer, using, names, row, converters, connection) for row in rows]


# Per database: the statement, the attributes its columns fill, and the converters Django applies.
_reads: dict[tuple, tuple[str, tuple[str, ...], list]] = {}


def _changed_customers(found: Mapping, owner: Any, customers: Any) -> list[tuple[Customer, list[str]]]:
    """The owner's customers its mapped values changed, with the values applied and validated,
    and the fields that were set (the write sets only those: the rest is as it was read)."""
    values = found.values(owner)
    changed_customers = []
    for customer in customers:
        changed = found.changed(customer.owner_values or {}, values)
        if not changed:
            continue
        found.apply(customer, changed)
        try:
            customer.validate_for_stripe()
        except ValidationError as err:
            raise found.owner_errors(err) from None
        changed_customers.append((customer, [*found.fields(changed), "updated_at"]))
    return changed_customers


def owner_post_save(sender: type, instance: Any, created: bool = False, raw: bool = False, using: str | None = None,
                    update_fields: Any = None, **kwargs: Any) -> None:  # fmt: skip
    """Write the customers pre_save prepared: the diff and the outbox do the rest."""
    for customer, fields in instance.__dict__.pop(_PENDING, ()):
        customer.save(using=using, update_fields=fields)
    owner_save.saved(instance, created, update_fields)


def check_owner(owner: Any) -> None:
    """Raise ``ValidationError`` keyed by the owner's fields if saving it would send a value Stripe refuses.

    For forms (``owner_admin.OwnerFormMixin``); a save runs the same check itself.
    """
    found = _require()
    if owner.pk is None:
        return
    _changed_customers(found, owner, _customers_of(owner.pk, None))


@dataclass
class OwnerSyncResult:
    updated: int = 0
    unchanged: int = 0
    unlinked: int = 0
    errors: dict[Any, dict[str, list[str]]] = field(default_factory=dict)


def sync_from_owners(owners: Any) -> OwnerSyncResult:
    """The bulk counterpart of an owner save, for ``QuerySet.update()`` and data migrations.

    Sends each owner's changed mapped values, as a save would; values Stripe
    would refuse are reported per owner in ``errors`` and leave that customer as it was.
    """
    found = _require()
    owners = list(owners)
    result = OwnerSyncResult()
    customers: dict[Any, list[Customer]] = {}
    for customer in Customer.objects.filter(owner_id__in=[o.pk for o in owners]):
        customers.setdefault(customer.owner_id, []).append(customer)
    for owner in owners:
        if owner.pk not in customers:
            result.unlinked += 1
            continue
        try:
            changed = _changed_customers(found, owner, customers[owner.pk])  # errors keyed by the owner's fields
            with transaction.atomic():
                for customer, fields in changed:
                    customer.save(update_fields=fields)
        except ValidationError as err:
            result.errors[owner.pk] = err.message_dict
            continue
        if changed:
            result.updated += 1
        else:
            result.unchanged += 1
    return result


def get_or_create_for(owner: Any, *, account: Any = None, wait: bool = False, timeout: float | None = None) -> Customer:
    """The owner's customer in ``account`` (an ``Account``, ``"platform[/acct_...]"``; default: the
    default platform's own account), created from the mapping when it has none there.

    The Stripe customer is created through the outbox: queued (``wait=False``,
    returns at once, ``stripe_id`` still empty) or in this process
    (``wait=True``, returns once Stripe answered, with the id stored; raises
    ``CreateFailed`` when Stripe refuses). However many processes call this
    at once, one owner gets one customer: the local row is unique per owner,
    the create's idempotency key comes from the owner, and the customer
    carries the owner in ``metadata[customersync_owner]``, which the create
    looks up first.
    """
    found = _require()
    if owner.pk is None:
        raise ValueError("Save the owner before creating its customer.")
    account = resolve(account)
    customer = Customer.objects.filter(owner_id=owner.pk, account=account).first()
    if customer is None:
        customer = _create_local(owner, found, account)
    if wait and not customer.stripe_id:
        _push_until_created(customer, timeout)
    return customer


def _create_local(owner: Any, found: Mapping, account: Any) -> Customer:
    customer = Customer(owner_id=owner.pk, account=account)
    found.apply(customer, found.values(owner))
    customer.metadata = {**(customer.metadata or {}), OWNER_METADATA_KEY: found.identity(owner.pk)}
    try:
        with transaction.atomic():
            customer.save()
    except ValidationError as err:
        raise found.owner_errors(err) from None
    except IntegrityError:
        # Another process linked a customer to this owner first: that one it is.
        existing = Customer.objects.filter(owner_id=owner.pk, account=account).first()
        if existing is None:
            raise
        return existing
    return customer


def _push_until_created(customer: Customer, timeout: float | None) -> None:
    from .push import push

    budget = timeout if timeout is not None else app_settings.TIMEOUT * (app_settings.MAX_RETRIES + 2)
    deadline = time.monotonic() + budget
    delay = 0.05
    while True:
        error: Exception | None = None
        try:
            push(customer.pk)
        except (Busy, RetryLater) as err:
            error = err  # another process is creating it, or a retryable error: try again
        customer.refresh_from_db()
        if customer.stripe_id:
            return
        if customer.sync_status == SyncStatus.FAILED:
            raise CreateFailed(customer.sync_error or {})
        if time.monotonic() >= deadline:
            raise TimeoutError(f"Stripe had not confirmed the customer's creation after {budget:.0f} s.") from error
        time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
        delay = min(delay * 2, 1.0)
