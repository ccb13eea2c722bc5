"""Owners and their customers at run time: saves, creation once, bulk refresh, write-back.

The mapping itself (what comes from where) is ``owner.mapping.Mapping``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, router, transaction

from ..accounts import resolve
from ..conf import app_settings
from ..exceptions import Busy, ConfigurationError, CreateFailed, RetryLater
from ..models import Customer, SyncStatus
from . import save
from .mapping import OWNER_METADATA_KEY, Mapping, mapping

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


def owner_pre_save(
    sender: type, instance: Any, raw: bool = False, using: str | None = None, update_fields: Any = None, **kwargs: Any
) -> None:
    """Apply changed mapped values to the owner's customers (one per account) and validate them,
    before the owner is written.

    Raises ``ValidationError`` keyed by the owner's fields for a value Stripe would refuse.
    """
    instance.__dict__.pop(_PENDING, None)
    if raw or instance._state.adding or instance.pk is None:
        return  # a new owner has no customer yet (get_or_create_for makes one)
    found = mapping()
    if found is None or (update_fields is not None and not found.touches(update_fields)):
        return
    using = using or router.db_for_write(sender, instance=instance)
    values, fresh = _saved_values(found, instance, update_fields)
    if not values:
        return  # nothing mapped changed: the owner's own UPDATE alone
    customers = _changed_customers(found, instance, _customers_of(instance.pk, using, lock=True), values)
    instance.__dict__[_PENDING] = (customers, fresh)


def _saved_values(found: Mapping, instance: Any, update_fields: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The mapped values a save of the owner changes, checked (``ValidationError`` keyed by the
    owner's fields), and their snapshots to remember once saved. With ``OwnerMixin``, those that
    changed since the owner was loaded; without it, every value the save can change
    (``Mapping.saved_by``), for comparing with its customers'."""
    planned = save.changes(found, instance, update_fields)
    if planned is None:  # nothing remembered (no OwnerMixin)
        return found.values(instance, found.saved_by(update_fields)), save.current(instance, update_fields)
    values, fresh = planned
    if values:
        save.check(found, values)  # before any query
    return values, fresh


def _customers_of(owner_pk: Any, using: str | None, lock: bool = False) -> list[Customer]:
    """The owner's customers. ``lock``: for a save inside a transaction, their rows are locked
    now, before the owner's: a push locks a customer's row, then its write-back updates the owner's,
    so the two never wait on each other in a circle. Outside one, each statement commits on its own
    and holds nothing. Unordered: compiling the default ORDER BY costs a third of the read's CPU."""
    customers = Customer.objects.using(using or router.db_for_read(Customer)).filter(owner_id=owner_pk).order_by()
    if lock and not transaction.get_autocommit(using=customers.db):
        customers = customers.select_for_update()
    return list(customers)


def _changed_customers(
    found: Mapping, owner: Any, customers: Any, values: dict[str, Any] | None = None
) -> list[tuple[Customer, list[str]]]:
    """The owner's customers its mapped values (``values``: those given; default: every one)
    changed, with the values applied and validated, and the fields that were set (the write sets
    only those: the rest is as it was read)."""
    if values is None:
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


def owner_post_save(
    sender: type,
    instance: Any,
    created: bool = False,
    raw: bool = False,
    using: str | None = None,
    update_fields: Any = None,
    **kwargs: Any,
) -> None:
    """Write the customers pre_save prepared (their save writes the outbox record and queues the
    push); the values saved are remembered when the transaction commits."""
    if created:
        save.remember(instance)  # an insert rolled back and saved again is an insert again
        return
    customers, fresh = instance.__dict__.pop(_PENDING, ((), None))
    for customer, fields in customers:
        customer.save(using=using, update_fields=fields)
    if fresh is not None:
        save.keep_on_commit(instance, fresh, using or router.db_for_write(sender, instance=instance))


def check_owner(owner: Any) -> None:
    """Raise ``ValidationError`` keyed by the owner's fields if saving it would send a value Stripe refuses.

    For forms (``admin.owner.OwnerFormMixin``); a save runs the same check itself.
    """
    found = _require()
    if owner.pk is None:
        return
    values, _ = _saved_values(found, owner, None)
    if values:
        _changed_customers(found, owner, _customers_of(owner.pk, None), values)


def unsent(owner: Any) -> dict[str, list[str]]:
    """The owner's mapped values that differ from what its customers last had applied and that
    Stripe would refuse, as ``{parameter: messages}``: held somewhere a save did not check (a
    ``QuerySet.update()``, a raw write), they are not sent, and no save that leaves them alone is
    refused for them. Reads the owner's customers and the relations its paths pass through."""
    found = _require()
    if owner.pk is None:
        return {}
    values = found.values(owner)
    out: dict[str, list[str]] = {}
    for customer in _customers_of(owner.pk, None):
        changed = found.changed(customer.owner_values or {}, values)
        for key in changed:
            error = save.problems(found, {key: changed[key]})
            if error is not None:
                for messages in error.message_dict.values():
                    out.setdefault(key, [])
                    out[key].extend(m for m in messages if m not in out[key])
    return out


@dataclass
class OwnerSyncResult:
    """What ``sync_from_owners`` did, counted in owners: ``updated`` (a changed value was sent),
    ``unchanged`` (nothing to send), ``unlinked`` (no customer); ``errors``: owner pk to the
    values Stripe would refuse, ``{field: [messages]}``, whose customers were left as they were."""

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
    from ..push.send import push

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
