"""The pull's common cases, answered without the general merge, and a page written in one statement.

Almost every customer a pull meets is *plain*: each mirrored value has the
type Stripe documents (text or null, a whole number or null, an object of
text, a list of text). For a plain customer the answers of the general path in
``pull.store_page`` are known in advance:

- new to the mirror: ``merge.merge`` against no base takes every Stripe value
  (a blank customer's defaults compare equal to unset, checked once per page),
  keeps nothing and records no conflict; the diff behind ``needs_push`` of
  Stripe's own values is empty, so the customer is in sync;
- already mirrored, its ``stripe_data`` equal to Stripe's object, its values
  Stripe's, in sync with nothing queued: the merge changes nothing, so only
  ``last_pulled_at`` and ``confirmed_at`` move (one UPDATE for the page).

A customer that is not plain, does not fit its columns (``values.column_errors``
would name something) or has local edits goes the general way: same answers,
only slower. ``NUL`` characters and non-finite numbers are found in the JSON
text each row is encoded to anyway; lengths and ranges by the model's limits.

``PageWriter`` writes rows. On PostgreSQL a page's rows travel as one JSON
document, exploded by ``jsonb_populate_recordset``: one INSERT and one
UPDATE ... FROM, where Django's ``bulk_update`` builds a CASE per column and
row. What every new customer of a page holds besides Stripe's values travels
once, as the record the rows' missing columns are taken from. Other databases
use ``bulk_create`` and ``bulk_update``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

from django.db import connections, models, router

from .merge import norm
from .models import Customer, SyncStatus
from .params import TABLE, Param, Shape, get_path, set_path
from .values import INTEGER_RANGES

__all__ = ["PageWriter", "remote_state"]

# Encoded JSON holds a NUL character only as this escape (json.dumps escapes every control character).
_NUL_ESCAPE = "\\u0000"


_NOT_PLAIN: Any = object()


def remote_state(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """Stripe's updatable values as the mirror stores them (``merge.to_local`` of each, by
    model field), or None when one is not plain."""
    state: dict[str, Any] = {}
    for key, path, convert in _plan():
        value = convert(obj.get(key) if path is None else get_path(obj, path))
        if value is _NOT_PLAIN:
            return None
        if path is None:
            state[key] = value
        else:
            set_path(state, path, value)
    return state


_plans: list[tuple[tuple[Param, ...], list[tuple[str, tuple[str, ...] | None, Callable[[Any], Any]]]]] = []


def _plan() -> list[tuple[str, tuple[str, ...] | None, Callable[[Any], Any]]]:
    """For each updatable parameter: its top-level key, its path when nested, and its conversion
    (made once for the table as it stands: tests extend it)."""
    if not _plans or _plans[0][0] is not TABLE.state:
        plan = [(p.path[0], p.path if len(p.path) > 1 else None, _converter(p)) for p in TABLE.state]
        _plans[:] = [(TABLE.state, plan)]
    return _plans[0][1]


def _converter(param: Param) -> Callable[[Any], Any]:
    """``merge.to_local`` for a plain value of ``param``; ``_NOT_PLAIN`` for any other."""
    if param.shape is Shape.SCALAR:
        kind = param.type
        unset = (param.unset_value or "") if kind is str else None
        plain = kind in (str, int, bool)
        return lambda value: unset if value is None else value if plain and type(value) is kind else _NOT_PLAIN
    if param.shape is Shape.MAP:
        return lambda value: (
            {}
            if not value
            else dict(value)
            if type(value) is dict and all(type(k) is str and type(v) is str for k, v in value.items())
            else _NOT_PLAIN
        )
    if param.shape is Shape.OBJECT:
        children = param.children or {}
        return lambda value: None if not value else value if _plain_object(value, children) else _NOT_PLAIN
    return lambda value: (
        [] if not value else list(value) if type(value) is list and _plain_items(param, value) else _NOT_PLAIN
    )


def _plain_object(value: Any, children: Mapping[str, Any]) -> bool:
    """An object whose parameters are text or null, or objects of the same (other keys: Stripe's own)."""
    if type(value) is not dict:
        return False
    for key, sub in children.items():
        item = value.get(key)
        if item is None:
            continue
        if sub is None:
            if type(item) is not str:
                return False
        elif not _plain_object(item, sub):
            return False
    return True


def _plain_items(param: Param, items: list[Any]) -> bool:
    if not param.item_keys:
        return all(type(item) is str and item for item in items)
    keys = param.item_keys
    return all(
        type(item) is dict and all(k in keys and (v is None or type(v) is str) for k, v in item.items())
        for item in items
    )


def _stripe_owned(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The columns Stripe owns, as ``Customer.merge_remote`` sets them; None when ``delinquent``
    is not a boolean or null (the general path decides what happens then)."""
    delinquent = obj.get("delinquent")
    if delinquent is not None and type(delinquent) is not bool:
        return None
    created = obj.get("created")
    return {
        "created": dt.datetime.fromtimestamp(created, tz=dt.timezone.utc) if created else None,
        "livemode": bool(obj.get("livemode")),
        "currency": obj.get("currency") or "",
        "delinquent": delinquent,
    }


def _encode(value: Any) -> str:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    raise TypeError(f"Cannot encode {type(value).__name__}")


def _strict_json(value: Any) -> str | None:
    """``value`` as JSON, or None when a column could not hold it (a NUL, NaN, a non-JSON type)."""
    try:
        text = _STRICT.encode(value)
    except (TypeError, ValueError, RecursionError):
        return None
    return None if _NUL_ESCAPE in text else text


_STRICT = json.JSONEncoder(default=_encode, allow_nan=False, ensure_ascii=False, separators=(",", ":"))


class PageWriter:
    """Rows of one page of customers of one account, and the statements that write them."""

    def __init__(self, account: Any, now: dt.datetime, confirmed: dt.datetime) -> None:
        self.using = router.db_for_write(Customer)
        self.postgres = connections[self.using].vendor == "postgresql"
        self.now, self.confirmed = now, confirmed
        fields = self.fields = [f for f in Customer._meta.concrete_fields if not f.primary_key]
        self.columns = [(f.attname, f.column) for f in fields]
        # What a new customer holds besides Stripe's values: the model's defaults, settled as in sync.
        template = Customer(account=account)
        template.settle(False, keep_failure=True)
        template.last_pulled_at, template.confirmed_at = now, confirmed
        template.sync_version = 1  # a first confirmed state, as merge_remote gives a new customer
        varying = {*TABLE.state_fields, "stripe_id", "stripe_data", "created", "livemode", "currency", "delinquent"}
        self.base = {
            f.attname: now if _stamped(f) else getattr(template, f.attname) for f in fields if f.name not in varying
        }
        self.checks = [_Check(f) for f in fields if f.name in varying and f.name != "stripe_data"]
        blank = template.desired_state()
        self.base_json = _strict_json(
            {column: self.base[attname] for attname, column in self.columns if attname in self.base}
        )
        # The fast lane for new customers holds when a blank customer's values compare equal to unset.
        self.fresh_lane = self.base_json is not None and all(
            norm(p, get_path(blank, p.path)) == norm(p, None) for p in TABLE.state
        )
        self.renamed = any(attname != column for attname, column in self.columns)

    # -- the fast lane ----------------------------------------------------------

    def new_row(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], str] | None:
        """A new customer's values (besides ``base``) and its row as JSON (its other columns come from
        ``base_json``: see ``_insert_sql``); None: take the general path."""
        stripe_id = obj.get("id")
        if not self.fresh_lane or type(stripe_id) is not str or not stripe_id:
            return None
        state = remote_state(obj)
        owned = _stripe_owned(obj) if state is not None else None
        if state is None or owned is None:
            return None
        row = {**state, **owned, "stripe_id": stripe_id}
        if not self._fits(row):
            return None
        row["stripe_data"] = obj
        text = _strict_json(self._by_column(row) if self.renamed else row)
        if text is None:
            return None
        return row, text

    def unchanged(self, customer: Customer, obj: Mapping[str, Any]) -> bool:
        """Whether the general path would leave ``customer`` as it is but for the pull's timestamps."""
        if (
            customer.stripe_data != obj
            or customer.sync_status != SyncStatus.IN_SYNC
            or customer.sync_error is not None
            or customer.pending_once
            or not customer.stripe_id
        ):
            return False
        state = remote_state(obj)
        owned = _stripe_owned(obj) if state is not None else None
        if state is None or owned is None:
            return False
        if any(getattr(customer, name) != value for name, value in (*state.items(), *owned.items())):
            return False
        if self.postgres:
            return True  # the stored values are these, and PostgreSQL stored them: they fit
        values = {check.attname: getattr(customer, check.attname) for check in self.checks}
        return self._fits(values) and _strict_json([obj, customer.owner_values]) is not None

    def _fits(self, row: Mapping[str, Any]) -> bool:
        return all(check.fits(row[check.attname]) for check in self.checks)

    # -- writing ------------------------------------------------------------------

    def insert_new(self, objects: list[dict[str, Any]]) -> set[str]:
        """PostgreSQL: create the page's plain customers the mirror does not hold yet, in one INSERT
        that passes over those it holds (ON CONFLICT DO NOTHING: no lookup goes first); returns
        their stripe ids. Other databases: creates nothing."""
        if not self.postgres:
            return set()
        texts = [row[1] for obj in objects if not obj.get("deleted") and (row := self.new_row(obj)) is not None]
        if not texts:
            return set()
        # No conflict target: any row the mirror holds already is passed over (and then looked up).
        stripe_id = self._quote(Customer._meta.get_field("stripe_id").column)
        made = self._execute(
            f"{self._insert_sql()} ON CONFLICT DO NOTHING RETURNING {stripe_id}", texts, self.base_json or "{}"
        )
        return {created for (created,) in made}

    def insert(self, fast: list[tuple[dict[str, Any], str]], customers: list[Customer]) -> None:
        """Create the fast lane's rows and the general path's new ``customers``."""
        if not fast and not customers:
            return
        if not self.postgres:
            made = [Customer(**copy.deepcopy(self.base), **row) for row, _text in fast]  # no shared defaults
            Customer.objects.using(self.using).bulk_create([*made, *customers])
            return
        texts = [text for _row, text in fast] + [self._row_json(c, adding=True) for c in customers]
        self._execute(self._insert_sql(), texts, self.base_json or "{}")

    def _insert_sql(self) -> str:
        """Rows (the second parameter) with the columns they lack from ``base_json`` (the first): the
        fast lane's rows hold Stripe's values only, the general path's every column."""
        names = ", ".join(self._quote(column) for _attname, column in self.columns)
        picked = ", ".join(f"r.{self._quote(column)}" for _attname, column in self.columns)
        base = f"jsonb_populate_record(NULL::{self._table}, %s::jsonb)"
        return (
            f"INSERT INTO {self._table} ({names}) SELECT {picked} "
            f"FROM jsonb_populate_recordset({base}, %s::jsonb) WITH ORDINALITY AS r ORDER BY r.ordinality"
        )

    def update(self, customers: list[Customer]) -> None:
        """Write every column of ``customers`` (as ``bulk_update`` of all fields would)."""
        if not customers:
            return
        if not self.postgres:
            Customer.objects.using(self.using).bulk_update(customers, [f.name for f in self.fields])
            return
        pk = self._quote(Customer._meta.pk.column)
        assignments = ", ".join(f"{self._quote(column)} = r.{self._quote(column)}" for _attname, column in self.columns)
        self._execute(
            f"UPDATE {self._table} AS c SET {assignments} "
            f"FROM jsonb_populate_recordset(NULL::{self._table}, %s::jsonb) AS r WHERE c.{pk} = r.{pk}",
            [self._row_json(c, adding=False) for c in customers],
        )

    def touch(self, pks: list[Any]) -> None:
        """Customers met unchanged: only the pull's timestamps move."""
        if pks:
            Customer.objects.using(self.using).filter(pk__in=pks).update(
                last_pulled_at=self.now, confirmed_at=self.confirmed
            )

    @property
    def _table(self) -> str:
        return self._quote(Customer._meta.db_table)

    def _quote(self, name: str) -> str:
        return str(connections[self.using].ops.quote_name(name))

    def _execute(self, sql: str, rows: list[str], base: str | None = None) -> list[tuple[Any, ...]]:
        """Run ``sql`` with the rows as a parameter, a JSON array (after ``base``, if given); what it
        returns, if anything."""
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, [*([base] if base is not None else []), "[" + ",".join(rows) + "]"])
            return cursor.fetchall() if cursor.description else []

    def _by_column(self, row: Mapping[str, Any]) -> dict[str, Any]:
        columns = dict(self.columns)
        return {columns.get(name, name): value for name, value in row.items()}

    def _row_json(self, customer: Customer, *, adding: bool) -> str:
        """A customer's row as JSON, each value prepared as Django prepares it (JSON fields: ``json.dumps``)."""
        row = {}
        for f in self.fields:
            value = self.now if adding and _stamped(f) else getattr(customer, f.attname)
            row[f.column] = value if isinstance(f, models.JSONField) else f.get_prep_value(value)
        if not adding:
            row[Customer._meta.pk.column] = customer.pk
        return json.dumps(row, default=_encode)


def _stamped(field: models.Field) -> bool:
    """Whether Django sets the field to now as a row is created (``auto_now``, ``auto_now_add``)."""
    return bool(getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False))


class _Check:
    """Whether a value fits a column, as ``values.column_errors`` judges it (JSON contents aside:
    the encoding finds what JSON columns cannot hold)."""

    def __init__(self, field: models.Field) -> None:
        self.attname = field.attname
        self.null = field.null
        self.text = isinstance(field, (models.CharField, models.TextField))
        self.integer = isinstance(field, models.IntegerField)
        self.required = not field.null and (self.text or self.integer or isinstance(field, models.JSONField))
        self.max_length = field.max_length if self.text else None
        self.range = INTEGER_RANGES[field.get_internal_type()] if self.integer else None

    def fits(self, value: Any) -> bool:
        if value is None:
            return not self.required
        if self.text:
            return type(value) is str and (self.max_length is None or len(value) <= self.max_length)
        if self.range is not None:
            return type(value) is int and self.range[0] <= value <= self.range[1]
        return True
