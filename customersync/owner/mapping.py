"""Customers owned by the site's own model: the mapping, kept in step both ways.

``CUSTOMERSYNC["OWNER_FIELDS"]`` says which customer parameter comes from
which owner attribute::

    "OWNER_FIELDS": {
        "email": "billing_email",          # a field
        "name": "get_full_name",           # a method or property (called when callable)
        "phone": "profile.phone",          # a dotted path
        "address[city]": "city",           # one key of an object parameter
        "metadata[org_id]": "pk",          # one metadata key
        "description": lambda org: ...,   # a callable taking the owner
    }

An owner save compares the mapped values with the ones last applied to its
customer (``Customer.owner_values``), not with the customer's current values:
only what the site changed is sent, and a value a customer changed in Stripe
(the Billing Portal) is never pushed back over by an unrelated save. Values
Stripe would refuse raise ``ValidationError`` keyed by the owner's field
*before* the owner row is written (``pre_save``); the customer is written
after it (``post_save``), in the same transaction when the save runs in one
(the admin, ``ATOMIC_REQUESTS``, ``transaction.atomic()``; with ``OwnerMixin``,
the one its ``save()`` opens when none is). Were that second
write lost, the next owner save, or ``sync_from_owners``, sends it still.

With ``owner_model.OwnerMixin`` on the owner model, a save compares the mapped
values with the owner's as it was loaded first: one that changes none reads no
customer, and only the changed values are checked and compared with
``owner_values`` (``owner_save``).

A dotted path passes through relations the site's models hold (``Hop``): a
foreign key or one-to-one field, or the reverse side of a one-to-one field.
Each model on the way is watched (``owner.related``): its save sends the change
to the owners it reaches. An owner's save sends such a value only when it
changes the owner's own key into the path (a foreign key set to another row);
a path entered by the reverse side of a one-to-one field is the related
model's to send. A path through a many-valued relation has no one value and
is refused (``ConfigurationError``; the system check names it).

``OWNER_BOTH_WAYS`` names mapped parameters Stripe may change too: when a
webhook or pull brings a new value, it is written to the owner's field with
``QuerySet.update()`` (no signals, so nothing is pushed back). Each value is
first checked against that field as a form would (its ``clean()``: length,
choices, null and blank, its validators): one that does not fit is not
written, the owner keeps its value, and a ``Conflict`` (resolution
``not_written``) records it for the admin, once per value; the rest of the
owner's values, and of the event or page, apply.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.core.exceptions import NON_FIELD_ERRORS, FieldDoesNotExist, ValidationError
from django.core.signals import setting_changed
from django.db import models

from ..conf import app_settings, owner_model_label
from ..core.merge import norm
from ..core.params import TABLE, Param, Shape, get_path
from ..exceptions import ConfigurationError

logger = logging.getLogger("customersync")

# The metadata key naming a created customer's owner ("app_label.model:pk"):
# a later run finds the customer by it instead of creating another.
OWNER_METADATA_KEY = "customersync_owner"
# Idempotency keys of owners' creates: uuid5 of the owner's identity.
_CREATE_NAMESPACE = uuid.UUID("5c7e3b7e-8f21-4a4e-9d7f-3a0c8f2f4c11")


def parse_key(key: str) -> tuple[str, ...]:
    """``"address[city]"`` -> ``("address", "city")``."""
    head, bracket, rest = key.partition("[")
    parts = [head]
    if bracket:
        if not rest.endswith("]"):
            raise ValueError(key)
        parts += rest[:-1].split("][")
    if not all(parts):
        raise ValueError(key)
    return tuple(parts)


@dataclass(frozen=True)
class Hop:
    """One relation a dotted path passes through, from the model before it to ``model``."""

    model: type[models.Model]  # the model reached
    name: str  # the attribute of the model before (the path's part)
    query: str  # its lookup name from the model before
    # Which side holds the key: the model reached (the reverse side of a one-to-one
    # field) or the model before (a foreign key or one-to-one field).
    reverse: bool
    key: str  # the field holding the key, on the side that holds it
    attname: str  # that field's attribute (``team_id``)


@dataclass(frozen=True)
class Source:
    """One mapped parameter: where its value comes from on the owner."""

    key: str
    path: tuple[str, ...]
    param: Param
    attr: str | Callable[[Any], Any]
    both_ways: bool
    # The owner's field that holds the value (errors go there; both-ways writes
    # go there); None for a callable, a property or a path through a relation.
    field: str | None
    # A dotted path through relations: the relations, then the attribute read on the
    # last model reached (``tail``), and its field when it is one (``tail_field``).
    hops: tuple[Hop, ...] = ()
    tail: str | None = None
    tail_field: str | None = None

    @property
    def computed(self) -> bool:
        """A method, property or callable (or a dotted path through what is no relation):
        its value may come from any of the owner's fields."""
        return self.field is None and not self.hops

    @property
    def owner_key(self) -> Hop | None:
        """The relation whose key the owner holds, when the path starts with one: an owner
        save changes the path's value by setting it."""
        return self.hops[0] if self.hops and not self.hops[0].reverse else None

    @property
    def describe(self) -> str:
        """Where the value comes from, as a message names it."""
        if callable(self.attr):
            return getattr(self.attr, "__name__", "a callable")
        return self.attr

    def read(self, owner: Any) -> Any:
        if callable(self.attr):
            return self.clean(self.attr(owner))
        return self.read_from(owner, self.attr.split("."))

    def read_from(self, obj: Any, parts: Iterable[str]) -> Any:
        """The value found by following ``parts`` from ``obj`` (a method at the end is called)."""
        value = obj
        for part in parts:
            value = getattr(value, part, None)
            if value is None:
                break
        if callable(value) and not isinstance(value, models.Model):
            value = value()
        return self.clean(value)

    def read_related(self, obj: Any, index: int) -> Any:
        """The value as seen from ``obj``, the object the path reaches at hop ``index``."""
        return self.read_from(obj, [*(hop.name for hop in self.hops[index + 1 :]), self.tail or ""])

    def lookup(self, index: int) -> str:
        """The owner model's lookup of the object at hop ``index`` (``profile``, ``contact__address``)."""
        return "__".join(hop.query for hop in self.hops[: index + 1])

    def same(self, a: Any, b: Any) -> bool:
        """Whether two values of this source are the same to Stripe."""
        if len(self.path) > 1:
            return (a if a is not None else "") == (b if b is not None else "")
        return bool(norm(self.param, a) == norm(self.param, b))

    def clean(self, value: Any) -> Any:
        """The value in Stripe's shape: strings for metadata and string params, '' for none."""
        wants_str = self.param.shape is Shape.MAP or len(self.path) > 1 or self.param.type is str
        if value is None:
            return "" if wants_str else None
        if wants_str and not isinstance(value, str):
            return str(value)
        return value


class Mapping:
    """``OWNER_FIELDS`` for the owner model, parsed once (checks report what does not parse)."""

    def __init__(self, model: type[models.Model], fields: dict[str, Any], both_ways: Iterable[str]) -> None:
        self.model = model
        both = set(both_ways)
        sources = []
        for key, attr in fields.items():
            path = parse_key(key)
            param = _param_for(path)
            if param is None:
                raise ConfigurationError(
                    f"CUSTOMERSYNC['OWNER_FIELDS'] maps {key!r}, which is not a customer parameter that is mirrored."
                )
            hops, tail = relation_path(model, attr) if isinstance(attr, str) else ((), None)
            sources.append(
                Source(
                    key=key,
                    path=path,
                    param=param,
                    attr=attr,
                    both_ways=key in both or path[0] in both,
                    field=_owner_field(model, attr),
                    hops=hops,
                    tail=tail,
                    tail_field=_concrete_field(hops[-1].model, tail) if hops and tail else None,
                )
            )
        self.sources: tuple[Source, ...] = tuple(sources)
        self.by_key: dict[str, Source] = {s.key: s for s in self.sources}
        self.both_ways = tuple(s for s in self.sources if s.both_ways)
        # The models the paths pass through, each with the sources and the hop reaching it.
        self.related: dict[type[models.Model], tuple[tuple[Source, int], ...]] = {}
        for source in self.sources:
            for index, hop in enumerate(source.hops):
                self.related[hop.model] = (*self.related.get(hop.model, ()), (source, index))

    def saved_by(self, update_fields: Iterable[str] | None) -> tuple[Source, ...]:
        """The sources an owner save (of only ``update_fields``, when given) can change: its fields,
        its methods and properties, and paths starting with a key it holds. A path entered by the
        reverse side of a one-to-one field changes with the related model's saves, never the owner's."""
        names = None if update_fields is None else set(update_fields)
        kept = []
        for s in self.sources:
            if s.computed:
                kept.append(s)
            elif s.field is not None:
                if names is None or s.field in names:
                    kept.append(s)
            elif s.owner_key is not None and (names is None or s.owner_key.key in names):
                kept.append(s)
        return tuple(kept)

    def touches(self, update_fields: Iterable[str]) -> bool:
        """Whether a save of only ``update_fields`` can change a mapped value."""
        return bool(self.saved_by(update_fields))

    def values(self, owner: Any, sources: Iterable[Source] | None = None) -> dict[str, Any]:
        """The owner's mapped values (of ``sources`` only, when given)."""
        return {s.key: s.read(owner) for s in (self.sources if sources is None else sources)}

    def changed(self, base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        """The values (of those given) that differ from ``base`` (the ones last applied)."""
        return {
            key: value
            for key, value in values.items()
            if key not in base or not self.by_key[key].same(base[key], value)
        }

    def apply(self, customer: Any, values: dict[str, Any]) -> None:
        """Set ``values`` on the customer's fields (object keys set one by one)."""
        for key, value in values.items():
            path = self.by_key[key].path
            if len(path) == 1:
                setattr(customer, path[0], value)
                continue
            top = dict(getattr(customer, path[0]) or {})
            if top == {} and value in ("", None) and getattr(customer, path[0]) is None:
                continue  # no object yet, nothing to put in it
            node = top
            for part in path[1:-1]:
                node[part] = dict(node.get(part) or {})
                node = node[part]
            node[path[-1]] = value
            setattr(customer, path[0], top)
        customer.owner_values = {**(customer.owner_values or {}), **values}

    def fields(self, keys: Iterable[str]) -> list[str]:
        """The customer's fields ``apply`` writes for these keys (with ``owner_values``)."""
        return [*dict.fromkeys(self.by_key[key].path[0] for key in keys), "owner_values"]

    def owner_errors(self, error: ValidationError) -> ValidationError:
        """A customer's ``ValidationError`` (keyed by Stripe params) keyed by the owner's fields: the
        field holding the value, the key starting a path through relations, or, for a method or
        property, a non-field error naming the parameter and the source."""
        return self._errors(error, lambda s: s.field or (s.owner_key.key if s.owner_key else None))

    def related_errors(self, error: ValidationError, model: type[models.Model]) -> ValidationError:
        """A customer's ``ValidationError`` keyed by the fields of ``model``, a model a path passes
        through: the field the path reads there, or a non-field error naming the parameter and the source."""
        return self._errors(error, lambda s: s.tail_field if s.hops and s.hops[-1].model is model else None)

    def _errors(self, error: ValidationError, holder: Callable[[Source], str | None]) -> ValidationError:
        out: dict[str, list[str]] = {}
        for param, messages in error.message_dict.items():
            source = self.source_for_param(param)
            field = holder(source) if source is not None else None
            if field is not None:
                out.setdefault(field, []).extend(messages)
                continue
            label = f"Stripe's {param}" + (f", from {source.describe}" if source is not None else "")
            out.setdefault(NON_FIELD_ERRORS, []).extend(f"{message} ({label})" for message in messages)
        return ValidationError(out)

    def source_for_param(self, param: str) -> Source | None:
        for s in self.sources:
            if s.key == param or s.key.startswith(param + "[") or param.startswith(s.key + "["):
                return s
        return None

    def field_for_param(self, param: str) -> str | None:
        source = self.source_for_param(param)
        return source.field if source is not None else None

    def from_stripe(self, customer: Any, refused: list[Refused] | None = None) -> dict[str, Any]:
        """Both-ways values Stripe changed, as ``{owner_field: value}``; records them as applied.

        A value the owner's field refuses (``field.clean()``) is left out and not recorded as
        applied; it is added to ``refused`` when given."""
        updates: dict[str, Any] = {}
        applied = dict(customer.owner_values or {})
        state = customer.desired_state()
        for s in self.both_ways:
            value = s.clean(get_path(state, s.path))
            if s.key in applied and s.same(applied[s.key], value):
                continue
            if s.field is None:
                continue
            try:
                cleaned = owner_value(self.model._meta.get_field(s.field), value)
            except ValidationError as err:
                if refused is not None:
                    refused.append(Refused(customer, s.key, s.field, applied.get(s.key), value, err))
                continue
            applied[s.key] = value
            updates[s.field] = cleaned
        if updates:
            customer.owner_values = applied
        return updates

    def identity(self, owner_pk: Any) -> str:
        """What the created customer's metadata says about its owner: ``"app_label.model:pk"``."""
        return f"{self.model._meta.label_lower}:{owner_pk}"

    def names_owner(self, customer: Any, owner_pk: Any) -> bool:
        """Whether a customer object from Stripe says it is this owner's: its
        ``metadata[customersync_owner]`` is the owner's identity, exactly (no other customer is ever adopted)."""
        metadata = customer.get("metadata") if isinstance(customer, dict) else None
        return isinstance(metadata, dict) and metadata.get(OWNER_METADATA_KEY) == self.identity(owner_pk)

    def create_key(self, owner_pk: Any, generation: int, account_pk: int | None = None) -> uuid.UUID:
        """The idempotency key of an owner's create in an account: the same from every process and retry."""
        where = "" if account_pk is None else f"@{account_pk}"
        return uuid.uuid5(_CREATE_NAMESPACE, f"{self.model._meta.label_lower}:{owner_pk}:{generation}{where}")


def _param_for(path: tuple[str, ...]) -> Param | None:
    """The mirrored parameter a mapping key lives in (``address[city]`` is in ``address``)."""
    for n in range(len(path), 0, -1):
        param = TABLE.by_name.get(path[0] + "".join(f"[{p}]" for p in path[1:n]))
        if param is not None and param in TABLE.state:
            if param.shape is Shape.MAP and len(path) != 2:
                return None  # metadata[key], one level
            return param
    return None


def relation_path(model: type[models.Model], attr: str) -> tuple[tuple[Hop, ...], str | None]:
    """The relations a dotted path passes through and the attribute it reads after them;
    ``((), None)`` when it is no path through relations (a computed value). Raises
    ``ConfigurationError`` for a many-valued relation (a reverse foreign key, a many-to-many)."""
    parts = attr.split(".")
    if len(parts) < 2 or parts[0] == "pk":
        return (), None
    hops: list[Hop] = []
    current = model
    for part in parts[:-1]:
        hop = _hop(current, part)
        if hop is None:
            return (), None
        hops.append(hop)
        current = hop.model
    return tuple(hops), parts[-1]


def _hop(model: type[models.Model], name: str) -> Hop | None:
    for field in model._meta.get_fields(include_hidden=True):
        if not field.is_relation:
            continue
        rel = isinstance(field, models.ForeignObjectRel)
        accessor = field.get_accessor_name() if rel else field.name
        if accessor != name:
            continue
        if field.many_to_many or field.one_to_many:
            raise ConfigurationError(
                f"{model._meta.label}.{name} is a many-valued relation: a customer's parameter takes one value."
            )
        if isinstance(field, models.OneToOneRel):
            return Hop(field.related_model, name, field.name, True, field.field.name, field.field.attname)
        if isinstance(field, models.ForeignKey):
            return Hop(field.related_model, name, field.name, False, field.name, field.attname)
        return None  # a generic or composite relation: read as a computed value
    return None


def _concrete_field(model: type[models.Model], name: str) -> str | None:
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        return None
    return field.name if field.concrete and not field.is_relation else None


def _owner_field(model: type[models.Model], attr: Any) -> str | None:
    if callable(attr) or "." in attr:
        return None
    if attr == "pk":
        return model._meta.pk.name
    try:
        field = model._meta.get_field(attr)
    except FieldDoesNotExist:
        return None
    return field.name if field.concrete and not field.is_relation else None


def owner_value(field: models.Field, value: Any) -> Any:
    """Stripe's ``value`` as the owner's ``field`` holds it, checked by the field's own ``clean()``
    (length, choices, null and blank, its validators); ``ValidationError`` when it does not fit."""
    return field.clean(_for_field(field, value), None)


def _for_field(field: models.Field, value: Any) -> Any:
    """A value from Stripe as the owner's field stores it ('' or None for none)."""
    if value in ("", None):
        return None if field.null and not isinstance(field, (models.CharField, models.TextField)) else ""
    return value


@dataclass(frozen=True)
class Refused:
    """A both-ways value from Stripe that the owner's field does not take."""

    customer: Any
    key: str
    field: str
    kept: Any  # the owner's value as last applied
    value: Any
    error: ValidationError


def write_back(customers: Iterable[Any], *, source: str = "pull") -> int:
    """Write both-ways values Stripe changed to the customers' owners; returns how many owners.

    Called by the sync (pull, webhook, a push's answer: ``source``) under the customer's
    row lock, before the customer row is written (its ``owner_values`` record
    what was written back). The owner is written with ``QuerySet.update()``:
    no signals, so nothing is pushed back. A value the owner's field refuses is
    not written: a ``Conflict`` records it (once per value), and a warning names
    the field and why (never the value).
    """
    found = mapping()
    if found is None or not found.both_ways:
        return 0
    written = 0
    refused: list[Refused] = []
    for customer in customers:
        owner_id = getattr(customer, "owner_id", None)
        if owner_id is None:
            continue
        updates = found.from_stripe(customer, refused)
        if updates:
            found.model._base_manager.filter(pk=owner_id).update(**updates)
            written += 1
    if refused:
        _record_refused(refused, source)
    return written


def _record_refused(refused: list[Refused], source: str) -> None:
    """A conflict for each value an owner's field refused, unless the same one was recorded before."""
    from django.db import router

    from .. import signals
    from ..models import Conflict, Customer, Resolution

    stored = Conflict.objects.using(router.db_for_write(Conflict))
    new = []
    for r in refused:
        logger.warning(
            "Not written to the owner of customer %s: Stripe's %s does not fit its field %s (%s)",
            r.customer.stripe_id,
            r.key,
            r.field,
            ", ".join(str(e.code or "invalid") for e in r.error.error_list),
        )
        conflicts = stored.filter(customer_id=r.customer.pk, param=r.key, resolution=Resolution.NOT_WRITTEN)
        if r.customer.pk is None or conflicts.filter(remote_value=r.value).exists():
            continue  # one conflict per value Stripe holds, however often it comes back
        new.append(
            Conflict(
                customer=r.customer,
                param=r.key,
                local_value=r.kept,
                remote_value=r.value,
                source=source,
                resolution=Resolution.NOT_WRITTEN,
            )
        )
    if new:
        stored.bulk_create(new)
        signals.conflict_recorded.send(sender=Customer, conflicts=new)


_cache: dict[str, Mapping] = {}


def mapping() -> Mapping | None:
    """The site's mapping, or None when no owner model is set."""
    label = owner_model_label()
    if not label:
        return None
    found = _cache.get(label)
    if found is None:
        found = _cache[label] = Mapping(
            apps.get_model(label), dict(app_settings.OWNER_FIELDS or {}), app_settings.OWNER_BOTH_WAYS or ()
        )
    return found


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "CUSTOMERSYNC":
        _cache.clear()


setting_changed.connect(_reload, dispatch_uid="customersync.owner.mapping.reload")
