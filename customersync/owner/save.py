"""What ``owner_model.OwnerMixin`` remembers: the owner's mapped values as loaded.

An owner loaded from the database (``Model.from_db``, ``refresh_from_db``) remembers its mapped
values (``remember``). Its pre_save (``owner.customers.owner_pre_save``) compares them with what it holds
now (``changes``): a save that changes none costs nothing but the owner's own ``UPDATE``; the
changed ones are checked alone, on a scratch customer, before any query (``check``), and only
those are compared with what its customers last had applied. A key missing from what was
remembered (the mapping changed since the load) counts as changed.

The values a save wrote are remembered when its transaction commits (``keep_on_commit``): a save
rolled back leaves the owner remembering what the database still has, so saving it again sends
its change.

What a save compares against is the owner as it was loaded, not its customers: a value changed
without a save (``QuerySet.update()``) is sent by ``sync_from_owners``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from django.core.exceptions import ValidationError
from django.db import router, transaction

from ..core import snapshot
from ..models import Customer
from ..models.validation import field_errors
from .mapping import Mapping, Source, mapping

# The owner's mapped values as loaded (snapshots), in the instance's ``__dict__``.
LOADED = "_customersync_loaded"


def _watched(found: Mapping) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[Source, str], ...], tuple[Source, ...]]:
    """The sources an owner save can change, by how it finds whether they did: fields (their
    attribute is remembered), paths starting with a key the owner holds (the key's attribute is
    remembered: the path's value changes with it, or with the related model's own saves), and
    methods, properties and callables (their value is remembered). A path entered by the reverse
    side of a one-to-one field is the related model's to send (``owner.related``)."""
    found_watch = _watch.get(found)
    if found_watch is None:
        fields, keyed, computed = [], [], []
        for source in found.sources:
            if source.field is not None:
                fields.append((source.key, found.model._meta.get_field(source.field).attname))
            elif source.owner_key is not None:
                keyed.append((source, source.owner_key.attname))
            elif source.computed:
                computed.append(source)
        found_watch = _watch[found] = (tuple(fields), tuple(keyed), tuple(computed))
    return found_watch


_watch: dict[Mapping, tuple] = {}


def _remembers(instance: Any) -> Mapping | None:
    found = mapping()
    remembers = getattr(type(instance), "customersync_remembers_loaded", False) is True  # OwnerMixin
    if found is None or not remembers or not isinstance(instance, found.model):
        return None
    return found


def current(instance: Any, fields: Any = None) -> dict[str, Any] | None:
    """Snapshots of ``instance``'s mapped values as they are now (those of ``fields`` only, when
    given); None for an instance that does not remember (no ``OwnerMixin``, no mapping)."""
    found = _remembers(instance)
    if found is None:
        return None
    data = instance.__dict__
    by_field, keyed, computed = _watched(found)
    now = {
        key: snapshot.of(data[name]) for key, name in by_field if name in data and (fields is None or name in fields)
    }
    for source, name in keyed:
        if name in data and (fields is None or source.owner_key.key in fields or name in fields):
            now[source.key] = snapshot.of(data[name])
    # Methods and callables may read any field: only a whole save or load makes their values "as saved".
    if computed and fields is None and all(f.attname in data for f in instance._meta.concrete_fields):
        for source in computed:
            try:
                now[source.key] = snapshot.of(source.read(instance))
            except Exception:  # noqa: BLE001 - never fail a load: missing, it counts as changed at the save
                continue
    return now


def keep(instance: Any, values: dict[str, Any], replace: bool = False) -> None:
    """Remember ``values`` (snapshots) as ``instance``'s mapped values in the database."""
    data = instance.__dict__
    data[LOADED] = dict(values) if replace else {**(data.get(LOADED) or {}), **values}


def remember(instance: Any, fields: Any = None) -> None:
    """Remember ``instance``'s mapped values as they are now: it was just loaded, or inserted."""
    now = current(instance, fields)
    if now is not None:
        keep(instance, now, replace=fields is None)


def keep_on_commit(instance: Any, values: dict[str, Any], using: str) -> None:
    """Remember ``values`` once the save's transaction commits (at once outside one)."""
    if values:
        transaction.on_commit(lambda: keep(instance, values), using=using)


def _same(then: Any, now: Any) -> bool:
    return type(then) is type(now) and then == now


def changes(found: Mapping, instance: Any, update_fields: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The mapped values this save changes, against those remembered: (the values, their snapshots
    to remember once saved); None when the owner remembers nothing (the caller compares every value
    with its customers')."""
    loaded = instance.__dict__.get(LOADED)
    if loaded is None or _remembers(instance) is None:
        return None
    data = instance.__dict__
    by_field, keyed, computed = _watched(found)
    changed: dict[str, Any] = {}
    fresh: dict[str, Any] = {}
    for key, name in by_field:
        if name not in data or (update_fields is not None and name not in update_fields):
            continue  # deferred and never loaded, or not written by this save
        now = snapshot.of(data[name])
        if key in loaded and _same(loaded[key], now):
            continue
        changed[key], fresh[key] = found.by_key[key].read(instance), now
    for source, name in keyed:
        if name not in data or (update_fields is not None and source.owner_key.key not in update_fields):
            continue
        now = snapshot.of(data[name])
        if source.key in loaded and _same(loaded[source.key], now):
            continue  # the same related row: its own saves send its changes
        changed[source.key], fresh[source.key] = source.read(instance), now
    for source in computed:
        value = source.read(instance)
        now = snapshot.of(value)
        if source.key not in loaded or not _same(loaded[source.key], now):
            changed[source.key], fresh[source.key] = value, now
    return changed, fresh


def one_transaction(instance: Any, using: str | None, update_fields: Any) -> AbstractContextManager[Any]:
    """For ``OwnerMixin.save``: a transaction around the save when it changes a mapped value and
    none is open, so the owner's ``UPDATE`` and its customers' writes (its ``post_save``) commit
    together, at one commit's cost instead of two; otherwise nothing (a save changing nothing
    mapped is the owner's ``UPDATE`` alone; a caller's transaction already holds them all). Decided
    from what the owner remembers; its ``pre_save`` decides again what to write."""
    found = _remembers(instance)
    if found is None or instance._state.adding or instance.pk is None:
        return nullcontext()
    if update_fields is not None and not found.touches(update_fields):
        return nullcontext()
    using = using or router.db_for_write(type(instance), instance=instance)
    if not transaction.get_autocommit(using=using):
        return nullcontext()
    planned = changes(found, instance, update_fields)
    if planned is not None and not planned[0]:
        return nullcontext()
    return transaction.atomic(using=using)


def problems(found: Mapping, values: dict[str, Any]) -> ValidationError | None:
    """The ``ValidationError`` (keyed by Stripe params) of the values Stripe would refuse, checking
    ``values`` alone, applied to a scratch customer (no Stripe id, every other field at its default):
    the checks ``validate_for_stripe`` runs, on the fields they change; None when all would do."""
    customer = Customer.__new__(Customer)
    if not _template:
        _template.update(Customer().__dict__)
    customer.__dict__.update(_template)
    found.apply(customer, values)
    errors = field_errors(customer, found.fields(values))
    # Only what these values make wrong: a rule on the object around them (shipping's name for a
    # mapped shipping[address][city]) is about values this scratch customer lacks.
    errors = {
        param: messages
        for param, messages in errors.items()
        if any(param == key or key.startswith(param + "[") or param.startswith(key + "[") for key in values)
    }
    return ValidationError(errors) if errors else None


def check(found: Mapping, values: dict[str, Any]) -> None:
    """Raise ``ValidationError`` keyed by the owner's fields for a value of ``values`` Stripe would
    refuse (``problems``)."""
    error = problems(found, values)
    if error is not None:
        raise found.owner_errors(error)


_template: dict[str, Any] = {}
