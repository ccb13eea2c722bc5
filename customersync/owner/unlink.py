"""Customers unlinked from a deleted owner: nothing in Stripe names it any longer.

A customer created for an owner carries it in ``metadata[customersync_owner]``
(``"app_label.model:pk"``); a create looks customers up by it. When the owner is
deleted (``instance.delete()``, ``QuerySet.delete()``, a cascade), Django sends
its ``pre_delete`` inside the deleting transaction, then sets its customers'
``owner`` to NULL (``on_delete=SET_NULL``) and deletes its row. ``owner_pre_delete``
comes first: it reads the owner's customers (one read, their rows locked
before the owner's, the order a push's write-back takes them in) and saves each
without that key and without ``owner_values`` (no value is applied from an
owner any longer), through the customer's own ``save()``: its diff sends
``metadata[customersync_owner]=`` alone, its outbox record commits with the
delete and its push is queued when it commits. A rolled-back delete leaves
them all as they were, and sends nothing.

A customer whose create is still queued (no Stripe id) is created without the
key: the create sends the customer as it is when the push takes it. One whose
stored values Stripe would refuse (written without a check, by
``QuerySet.update()``) is unlinked all the same: the two fields are written by
``QuerySet.update()`` and queued with ``push.outbox.mark_for_push``, and its push
records Stripe's refusal as any push does; the owner's deletion never fails on it.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import router, transaction
from django.utils import timezone

from ..models import Customer
from ..push.outbox import mark_for_push
from .mapping import OWNER_METADATA_KEY

# What unlinking writes on a customer (``Customer.save`` adds its status).
FIELDS = ("metadata", "owner_values", "updated_at")


def unlink(customer: Customer) -> bool:
    """Drop what names an owner from ``customer`` (in memory): ``metadata[customersync_owner]``
    and ``owner_values``; whether anything changed."""
    metadata = customer.metadata
    named = isinstance(metadata, dict) and OWNER_METADATA_KEY in metadata
    if not named and not customer.owner_values:
        return False
    if named:
        customer.metadata = {key: value for key, value in metadata.items() if key != OWNER_METADATA_KEY}
    customer.owner_values = {}
    return True


def owner_pre_delete(sender: type, instance: Any, using: str | None = None, **kwargs: Any) -> None:
    """pre_delete of the owner model: unlink its customers (see the module), in the deleting transaction."""
    if instance.pk is None:
        return
    using = using or router.db_for_write(sender, instance=instance)
    customers = Customer.objects.using(using).filter(owner_id=instance.pk).order_by()
    if not transaction.get_autocommit(using=using):
        customers = customers.select_for_update()
    for customer in customers:
        if not unlink(customer):
            continue
        try:
            customer.save(using=using, update_fields=FIELDS)
        except ValidationError:
            rows = Customer.objects.using(using).filter(pk=customer.pk)
            rows.update(metadata=customer.metadata, owner_values={}, updated_at=timezone.now())
            mark_for_push(rows)
