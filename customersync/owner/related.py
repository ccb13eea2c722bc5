"""The models a mapped dotted path passes through, watched: their saves send the change.

With ``"email": "profile.billing_email"`` in ``OWNER_FIELDS``, a save of the
profile is what changes the customer's email, so the profile model is
connected (``connect``, at ``AppConfig.ready()``, each model an explicit
sender): its ``pre_save`` finds the owners the saved object reaches, reads the
value from the object as saved, compares it with what each owner's customers
last had applied (``Customer.owner_values``) and checks the changed values
before the object is written; a value Stripe would refuse raises
``ValidationError`` keyed by the related model's field (``billing_email``), or
a non-field error naming the parameter and the source when the path ends in a
method or property. Its ``post_save`` writes the customers, whose own
``save()`` records the outbox change and queues the push: the same diff,
validation and outbox as an owner save.

Finding the owners: an object entered by the reverse side of a one-to-one
field holds the key to the object before it (a profile's ``team_id`` is its
team's pk: no query); otherwise the owners are those whose path leads to its
pk (one query). A save that names ``update_fields`` without a field the
paths read sends nothing and reads nothing. An object moved to another owner
(its key changed) sends its value to the owner it reaches; the owner it left
keeps the value until ``sync.sync_from_owners`` or its next change.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import router, transaction
from django.db.models.signals import post_save, pre_save

from ..exceptions import ConfigurationError
from ..models import Customer
from . import save
from .mapping import Mapping, Source, mapping

# Where pre_save leaves the customers for post_save to write.
_PENDING = "_customersync_related_customers"


def _entries(found: Mapping, model: type) -> tuple[tuple[Source, int], ...]:
    return found.related.get(model, ())


def _reads(source: Source, index: int, update_fields: Any) -> bool:
    """Whether a save of the object at hop ``index``, writing only ``update_fields``, can change the
    path's value: the field it reads, a key further down the path, or its own key back."""
    if update_fields is None:
        return True
    names = set(update_fields)
    hops = source.hops
    if index == len(hops) - 1 and (source.tail_field is None or source.tail_field in names):
        return True
    if index + 1 < len(hops) and not hops[index + 1].reverse and hops[index + 1].key in names:
        return True
    return hops[index].reverse and hops[index].key in names


def _owner_pks(found: Mapping, source: Source, index: int, instance: Any, using: str) -> list[Any]:
    """The pks of the owners whose path reaches ``instance`` at hop ``index``."""
    hop = source.hops[index]
    if hop.reverse:
        before = getattr(instance, hop.attname)  # the key to the object before it
        if before is None:
            return []
        if index == 0:
            return [before]
        lookup = {source.lookup(index - 1): before}
    else:
        if instance.pk is None:
            return []  # not saved yet: nothing can point to it
        lookup = {source.lookup(index): instance.pk}
    owners = found.model._base_manager.using(router.db_for_read(found.model))
    return list(owners.filter(**lookup).values_list("pk", flat=True))


def prepare(found: Mapping, instance: Any, update_fields: Any, using: str | None) -> list[tuple[Customer, list[str]]]:
    """The customers a save of ``instance`` (a model the paths pass through) changes, with its
    values applied and checked; raises ``ValidationError`` keyed by the instance's fields."""
    model = type(instance)
    values_by_owner: dict[Any, dict[str, Any]] = {}
    for source, index in _entries(found, model):
        if not _reads(source, index, update_fields):
            continue
        pks = _owner_pks(found, source, index, instance, using or router.db_for_read(model))
        if not pks:
            continue
        value = source.read_related(instance, index)
        for pk in pks:
            values_by_owner.setdefault(pk, {})[source.key] = value
    if not values_by_owner:
        return []
    customers = Customer.objects.using(using or router.db_for_write(Customer)).filter(
        owner_id__in=list(values_by_owner)
    )
    if not transaction.get_autocommit(using=customers.db):
        customers = customers.select_for_update()
    changed_customers = []
    for customer in customers.order_by():
        changed = found.changed(customer.owner_values or {}, values_by_owner[customer.owner_id])
        if not changed:
            continue
        error = save.problems(found, changed)
        if error is None:
            found.apply(customer, changed)
            try:
                customer.validate_for_stripe()
            except ValidationError as err:
                error = err
        if error is not None:
            raise found.related_errors(error, model)
        changed_customers.append((customer, [*found.fields(changed), "updated_at"]))
    return changed_customers


def related_pre_save(
    sender: type, instance: Any, raw: bool = False, using: str | None = None, update_fields: Any = None, **kwargs: Any
) -> None:
    """Apply the changed values to the customers of the owners the object reaches and check them,
    before the object is written."""
    instance.__dict__.pop(_PENDING, None)
    found = mapping()
    if raw or found is None or not _entries(found, sender):
        return
    instance.__dict__[_PENDING] = prepare(found, instance, update_fields, using)


def related_post_save(sender: type, instance: Any, raw: bool = False, using: str | None = None, **kwargs: Any) -> None:
    """Write the customers pre_save prepared (their save writes the outbox record and queues the push)."""
    for customer, fields in instance.__dict__.pop(_PENDING, ()):
        customer.save(using=using, update_fields=fields)


def check_related(instance: Any) -> None:
    """Raise ``ValidationError`` keyed by the object's fields if saving it would send a value Stripe
    refuses; for forms of a model the paths pass through (``OwnerFormMixin``), which a save checks itself."""
    found = mapping()
    if found is not None and _entries(found, type(instance)):
        prepare(found, instance, None, None)


def watched_models() -> tuple[type, ...]:
    """The models the site's mapped paths pass through (none without an owner model)."""
    try:
        found = mapping()
    except (ConfigurationError, LookupError, ValueError, TypeError):
        return ()  # a mapping that cannot be built: the system checks report it
    return tuple(found.related) if found is not None else ()


def connect() -> None:
    """Connect the saves of every model the mapped paths pass through, each an explicit sender
    (again when the settings change: a test's ``override_settings``)."""
    for model in watched_models():
        uid = f"customersync.related.{model._meta.label_lower}"
        pre_save.connect(related_pre_save, sender=model, dispatch_uid=f"{uid}.pre_save")
        post_save.connect(related_post_save, sender=model, dispatch_uid=f"{uid}.post_save")
