"""Owners and their customers at run time: saves, creation once, bulk refresh, write-back.

The mapping itself (what comes from where) is ``owners.Mapping``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from .conf import app_settings
from .exceptions import Busy, ConfigurationError, CreateFailed, RetryLater
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


def for_owner(owner: Any) -> Customer | None:
    """The owner's customer, or None."""
    _require()
    return Customer.objects.filter(owner_id=owner.pk).first()


def owner_pre_save(sender: type, instance: Any, raw: bool = False, using: str | None = None,
                   update_fields: Any = None, **kwargs: Any) -> None:  # fmt: skip
    """Apply changed mapped values to the owner's customer and validate them, before the owner is written.

    Raises ``ValidationError`` keyed by the owner's fields for a value Stripe would refuse.
    """
    instance.__dict__.pop(_PENDING, None)
    if raw or instance._state.adding or instance.pk is None:
        return  # a new owner has no customer yet (get_or_create_for makes one)
    found = mapping()
    if found is None or (update_fields is not None and not found.touches(update_fields)):
        return
    customer = Customer.objects.using(using).filter(owner_id=instance.pk).first()
    if customer is None:
        return
    changed = found.changed(customer.owner_values or {}, found.values(instance))
    if not changed:
        return
    found.apply(customer, changed)
    try:
        customer.validate_for_stripe()
    except ValidationError as err:
        raise found.owner_errors(err) from None
    instance.__dict__[_PENDING] = customer


def owner_post_save(sender: type, instance: Any, raw: bool = False, using: str | None = None, **kwargs: Any) -> None:
    """Write the customer pre_save prepared: the diff and the outbox do the rest."""
    customer = instance.__dict__.pop(_PENDING, None)
    if customer is not None:
        customer.save(using=using)


def check_owner(owner: Any) -> None:
    """Raise ``ValidationError`` keyed by the owner's fields if saving it would send a value Stripe refuses.

    For forms (``owner_admin.OwnerFormMixin``); a save runs the same check itself.
    """
    found = _require()
    if owner.pk is None:
        return
    customer = Customer.objects.filter(owner_id=owner.pk).first()
    if customer is None:
        return
    changed = found.changed(customer.owner_values or {}, found.values(owner))
    if changed:
        found.apply(customer, changed)
        try:
            customer.validate_for_stripe()
        except ValidationError as err:
            raise found.owner_errors(err) from None


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
    customers = {c.owner_id: c for c in Customer.objects.filter(owner_id__in=[o.pk for o in owners])}
    for owner in owners:
        customer = customers.get(owner.pk)
        if customer is None:
            result.unlinked += 1
            continue
        changed = found.changed(customer.owner_values or {}, found.values(owner))
        if not changed:
            result.unchanged += 1
            continue
        found.apply(customer, changed)
        try:
            with transaction.atomic():
                customer.save()
        except ValidationError as err:
            result.errors[owner.pk] = found.owner_errors(err).message_dict
            continue
        result.updated += 1
    return result


def get_or_create_for(owner: Any, *, wait: bool = False, timeout: float | None = None) -> Customer:
    """The owner's customer, created from the mapping when it has none.

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
    customer = Customer.objects.filter(owner_id=owner.pk).first()
    if customer is None:
        customer = _create_local(owner, found)
    if wait and not customer.stripe_id:
        _push_until_created(customer, timeout)
    return customer


def _create_local(owner: Any, found: Mapping) -> Customer:
    customer = Customer(owner_id=owner.pk)
    found.apply(customer, found.values(owner))
    customer.metadata = {**(customer.metadata or {}), OWNER_METADATA_KEY: found.identity(owner.pk)}
    try:
        with transaction.atomic():
            customer.save()
    except ValidationError as err:
        raise found.owner_errors(err) from None
    except IntegrityError:
        # Another process linked a customer to this owner first: that one it is.
        existing = Customer.objects.filter(owner_id=owner.pk).first()
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
