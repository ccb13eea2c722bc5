"""An owner save in one statement (``owner_model.OwnerMixin``, PostgreSQL).

The owner remembers its mapped values as loaded (``remember``, from ``from_db``); its pre_save
(``owner_sync.owner_pre_save``) compares them with what it holds now and validates only the keys
that changed, on a scratch customer, without reading the customers (``prepare``); its
``_do_update`` writes its row, those keys to its customers (where their ``owner_values`` differ)
and their outbox records in one statement (``write``, ``ownersql``), and queues their pushes.

What a save compares against is the owner as it was loaded, not its customers: a value changed
without a save (``QuerySet.update()``) is sent by ``sync_from_owners``, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connections
from django.db.models import sql

from . import ownersql, snapshot
from .edits import plain_update
from .models import Customer
from .outbox import schedule_push
from .owners import Mapping, Source, mapping
from .validation import field_errors

# The owner's mapped values as loaded (snapshots), and the keys its save writes (pre_save -> _do_update).
LOADED = "_customersync_loaded"
PLAN = "_customersync_plan"
FRESH = "_customersync_fresh"


def enabled(instance: Any) -> bool:
    """Whether ``instance`` takes ``OwnerMixin``'s one-statement save (its class attribute
    ``customersync_one_statement``: False turns it off, keeping the mixin)."""
    return getattr(instance, "customersync_one_statement", False) is True


def _watched(found: Mapping) -> tuple[tuple[tuple[str, str], ...], tuple[Source, ...], tuple[Source, ...]]:
    """The mapping's sources by how a save finds whether they changed: fields (their attribute is
    remembered), methods, properties and callables (their value is remembered), paths through a
    relation (read at each save: remembering them would load the relation with every owner)."""
    found_watch = _watch.get(found)
    if found_watch is None:
        fields, computed, always = [], [], []
        for source in found.sources:
            if source.field is not None:
                fields.append((source.key, found.model._meta.get_field(source.field).attname))
            elif isinstance(source.attr, str) and "." in source.attr:
                always.append(source)
            else:
                computed.append(source)
        found_watch = _watch[found] = (tuple(fields), tuple(computed), tuple(always))
    return found_watch


_watch: dict[Mapping, tuple] = {}


def remember(instance: Any, fields: Any = None) -> None:
    """Remember ``instance``'s mapped values as they are now (those of ``fields`` only, when given)."""
    found = mapping()
    if found is None or not enabled(instance) or not isinstance(instance, found.model):
        return
    data = instance.__dict__
    by_field, computed, _ = _watched(found)
    loaded = dict(data.get(LOADED) or {}) if fields is not None else {}
    for key, name in by_field:
        if name in data and (fields is None or name in fields):
            loaded[key] = snapshot.of(data[name])
    # Methods and callables may read any field: only a whole save or load makes their values "as saved".
    if computed and fields is None and all(f.attname in data for f in instance._meta.concrete_fields):
        for source in computed:
            try:
                loaded[source.key] = snapshot.of(source.read(instance))
            except Exception:  # noqa: BLE001 - never fail a load: a save reads it again
                loaded.pop(source.key, None)
    data[LOADED] = loaded


def forget(instance: Any) -> None:
    """pre_save: nothing left from a save that did not finish."""
    instance.__dict__.pop(PLAN, None)
    instance.__dict__.pop(FRESH, None)


def _same(then: Any, now: Any) -> bool:
    return type(then) is type(now) and then == now


def prepare(found: Mapping, instance: Any, using: str, update_fields: Any) -> bool:
    """pre_save: whether this save takes the one-statement path; if so, the changed mapped values
    are validated (raises ``ValidationError`` keyed by the owner's fields) and left for ``_do_update``."""
    data = instance.__dict__
    loaded = data.get(LOADED)
    if loaded is None or not enabled(instance) or instance._meta.parents or connections[using].vendor != "postgresql":
        return False
    by_field, computed, always = _watched(found)
    changed: dict[str, Any] = {}
    fresh: dict[str, Any] = {}  # the snapshots of the changed values, remembered once saved
    for key, name in by_field:
        if name not in data or (update_fields is not None and name not in update_fields):
            continue  # deferred and never loaded, or not written by this save
        now = snapshot.of(data[name])
        if key in loaded and _same(loaded[key], now):
            continue
        changed[key], fresh[key] = found.by_key[key].read(instance), now
    for source in computed:
        value = source.read(instance)
        now = snapshot.of(value)
        if source.key not in loaded or not _same(loaded[source.key], now):
            changed[source.key], fresh[source.key] = value, now
    for source in always:
        changed[source.key] = source.read(instance)
    if changed:
        check(found, changed)
        data[PLAN] = changed
    data[FRESH] = fresh
    return True


def check(found: Mapping, values: dict[str, Any]) -> None:
    """Raise ``ValidationError`` keyed by the owner's fields for a value Stripe would refuse, checking
    ``values`` alone, applied to a scratch customer (no Stripe id, every other field at its default):
    the checks ``validate_for_stripe`` runs, on the fields they change."""
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
    if errors:
        raise found.owner_errors(ValidationError(errors))


_template: dict[str, Any] = {}


def write(owner: Any, values: dict[str, Any], base_qs: Any, using: str, pk_val: Any, updates: list,
          update_fields: Any, forced_update: Any, rest: tuple, django_update: Callable[..., Any]) -> Any:  # fmt: skip
    """``_do_update`` with the keys pre_save left: the owner's row, its customers and their outbox
    records in one statement; what Django expects back (5.2: whether a row was updated; 6.x: the
    rows' returned values)."""
    found = mapping()
    connection = connections[using]
    model = base_qs.model
    quote = connection.ops.quote_name
    own_pk = f"{quote(model._meta.db_table)}.{quote(model._meta.pk.column)}"
    one = bool(updates) and not (rest and rest[0]) and (forced_update or not model._meta.select_on_save)
    if found is None or not one:
        # Django's own update first (it returns values, or checks the row exists), then the customers.
        updated = django_update(base_qs, using, pk_val, updates, update_fields, forced_update, *rest)
        if updated and found is not None:
            _queue(ownersql.run(found, values, pk_val, None, own_pk, connection)[0])
        return updated
    own = plain_update(model, pk_val, updates, connection)
    if own is None:  # an expression, or a field with a placeholder of its own: Django's compiler
        query = base_qs.filter(pk=pk_val).query.chain(sql.UpdateQuery)
        query.add_update_fields(updates)
        text, params = query.get_compiler(using).as_sql()
        own = (text, list(params))
    queued, count = ownersql.run(found, values, pk_val, own, own_pk, connection)
    _queue(queued)
    return ([()] if count else []) if rest else count > 0


def _queue(queued: list[Any]) -> None:
    for customer_pk in queued:
        schedule_push(customer_pk)


def saved(instance: Any, created: bool, update_fields: Any) -> None:
    """post_save: the values just saved are the ones a later save compares with."""
    data = instance.__dict__
    data.pop(PLAN, None)  # not used (an insert)
    fresh = data.pop(FRESH, None)
    if fresh is None or created:
        remember(instance, update_fields)
    elif fresh:
        data[LOADED] = {**data[LOADED], **fresh}
