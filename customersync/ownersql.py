"""An owner's save in one statement (PostgreSQL): its own row, its customers' mapped values and
their outbox records.

    WITH cust AS (UPDATE customer SET <each changed key, where the customer's owner_values
                  differ for it>, owner_values = owner_values || <the values>, updated_at,
                  sync_status WHERE owner_id = <pk> AND <a key differs> RETURNING id, sync_status),
         ins AS (INSERT INTO <the outbox> ... SELECT ... FROM cust WHERE sync_status <> 'deleted'
                 ON CONFLICT (one queued push per customer) DO NOTHING RETURNING customer_id),
         own AS (<the owner's UPDATE, as Django writes it> RETURNING pk)
    SELECT ARRAY(SELECT customer_id FROM ins), (SELECT count(*) FROM own)

Each key is applied as ``owners.Mapping.apply`` applies it: a column set whole, or one key of a
JSON object set with the objects on its way created (``address[city]``, ``shipping[address][city]``),
an object that is NULL left NULL when only empty values would go in it. Only keys whose value in
``owner_values`` differs are written, so a column changed meanwhile by anything else is kept.

Order: the select list reads ``ins`` (so ``cust``) before ``own``: the customers' rows are locked
before the owner's, the order the sync's write-back takes them in (the customer's row lock, then
the owner's update), so the two never wait on each other in a circle. ``ins`` reads ``cust``'s rows,
so it runs once they are locked and written: a push freezing the customer (under its row lock)
either ran before, and then its record is no longer the queued one (the unique index sees committed
rows, so this inserts a new record), or runs after this commits and sends these values.

Statement texts are built once per process, owner columns and set of keys.
"""

from __future__ import annotations

import json
from typing import Any

from django.utils import timezone

from .edits import insert_select, queued_conflict
from .models import Customer, PendingPush, SyncStatus
from .owners import Mapping

# What fills each ``%s`` of a text: (kind, mapped key).
Recipe = tuple[tuple[str, str], ...]
_Part = tuple[str, list[tuple[str, str]]]


def statement(found: Mapping, values: dict[str, Any], owner_pk: Any, own: tuple[str, list] | None,
              own_pk: str, connection: Any) -> tuple[str, list]:  # fmt: skip
    """The statement writing ``values`` (mapped key -> value) to the customers of ``owner_pk``,
    with ``own`` (the owner's ``UPDATE`` and its params; None: the customers alone); its result row
    is (the customers whose push was queued, the owner rows updated)."""
    keys = tuple(values)
    cache_key = (own[0] if own else None, own_pk, keys, connection.alias, connection.vendor)
    found_text = _texts.get(cache_key)
    if found_text is None:
        found_text = _texts[cache_key] = _text(found, keys, own[0] if own else None, own_pk, connection)
    text, recipe = found_text
    now = timezone.now()
    params = [_param(kind, key, values, owner_pk, now, connection) for kind, key in recipe]
    return text, [*params, *(own[1] if own else ())]


# Per owner UPDATE, set of keys and connection: the text, and what fills its parameters.
_texts: dict[tuple, tuple[str, Recipe]] = {}
_fields = {field.name: field for field in Customer._meta.concrete_fields}


def _param(kind: str, key: str, values: dict[str, Any], owner_pk: Any, now: Any, connection: Any) -> Any:
    if kind == "json":
        return json.dumps(values[key])
    if kind == "col":
        return _fields[key].get_db_prep_save(values[key], connection=connection)
    if kind == "nonempty":
        return values[key] not in ("", None)
    if kind == "patch":
        return json.dumps(values)
    if kind == "now":
        return _fields["updated_at"].get_db_prep_save(now, connection=connection)
    return Customer._meta.get_field("owner").get_db_prep_value(owner_pk, connection)


def _insert(connection: Any) -> tuple[str, list]:
    """The outbox insert, one record per customer ``cust`` wrote but one deleted in Stripe: a key of
    its own for each, and the customer's ``updated_at`` (this save's time) for its times."""
    quote = connection.ops.quote_name
    updated = f"cust.{quote(_fields['updated_at'].column)}"
    return insert_select(
        PendingPush,
        PendingPush(),
        f"cust WHERE cust.{quote('sync_status')} <> '{SyncStatus.DELETED.value}'",
        {"customer": f"cust.{quote(Customer._meta.pk.column)}", "key": "gen_random_uuid()",
         "created_at": updated, "enqueued_at": updated},
        connection,
    )  # fmt: skip


def _lit(text: str) -> str:
    """A string literal in a statement run with parameters."""
    return "'" + text.replace("'", "''").replace("%", "%%") + "'"


def _join(separator: str, parts: list[_Part]) -> _Part:
    return separator.join(text for text, _ in parts), [item for _, recipe in parts for item in recipe]


def _text(found: Mapping, keys: tuple[str, ...], own: str | None, own_pk: str, connection: Any) -> tuple[str, Recipe]:
    quote = connection.ops.quote_name
    table = quote(Customer._meta.db_table)
    applied = quote("owner_values")

    def cond(key: str) -> _Part:
        return f"({applied} -> {_lit(key)}) IS DISTINCT FROM CAST(%s AS jsonb)", [("json", key)]

    def any_cond(node: dict[str, Any]) -> _Part:
        return _paren(_join(" OR ", [cond(key) for key in _leaves(node)]))

    def merged(base: _Part, node: dict[str, Any]) -> _Part:
        text, recipe = base
        parts: list[_Part] = [
            (f"(CASE WHEN jsonb_typeof({text}) = 'object' THEN {text} ELSE '{{}}'::jsonb END)", recipe * 2)
        ]
        for name, child in node.items():
            if isinstance(child, str):
                when = cond(child)
                parts.append((
                    f"(CASE WHEN {when[0]} THEN jsonb_build_object({_lit(name)}, CAST(%s AS jsonb)) "
                    "ELSE '{}'::jsonb END)",
                    [*when[1], ("json", child)],
                ))  # fmt: skip
            else:
                when, inner = any_cond(child), merged((f"({text} -> {_lit(name)})", recipe), child)
                parts.append((
                    f"(CASE WHEN {when[0]} THEN jsonb_build_object({_lit(name)}, {inner[0]}) ELSE '{{}}'::jsonb END)",
                    [*when[1], *inner[1]],
                ))  # fmt: skip
        return _paren(_join(" || ", parts))

    sets: list[_Part] = []
    for column, (top, tree) in _columns(found, keys).items():
        field = _fields[column]
        name = quote(field.column)
        base: _Part = (name, [])
        if top is not None and len(keys) == 1:  # the statement's condition says it differs
            base = (f"CAST(%s AS {field.db_type(connection)})", [("col", top)])
        elif top is not None:
            when = cond(top)
            base = (
                f"(CASE WHEN {when[0]} THEN CAST(%s AS {field.db_type(connection)}) ELSE {name} END)",
                [*when[1], ("col", top)],
            )
        if not tree:
            sets.append((f"{name} = {base[0]}", base[1]))
            continue
        value = merged(base, tree)
        if field.null:  # an object that is NULL stays so when only empty values would go in it
            some = _join(
                " OR ", [(f"({c[0]} AND %s)", [*c[1], ("nonempty", k)]) for k in _leaves(tree) for c in [cond(k)]]
            )
            value = (
                f"(CASE WHEN {base[0]} IS NULL AND NOT ({some[0]}) THEN NULL ELSE {value[0]} END)",
                [*base[1], *some[1], *value[1]],
            )
        if top is None and len(_leaves(tree)) == len(keys):  # the statement's condition is this one
            sets.append((f"{name} = {value[0]}", value[1]))
            continue
        when = any_cond(tree)
        sets.append(
            (f"{name} = CASE WHEN {when[0]} THEN {value[0]} ELSE {base[0]} END", [*when[1], *value[1], *base[1]])
        )
    sets.append((f"{applied} = COALESCE({applied}, '{{}}'::jsonb) || CAST(%s AS jsonb)", [("patch", "")]))
    updated_at = quote(_fields["updated_at"].column)
    sets.append((f"{updated_at} = %s", [("now", "")]))
    sets.append((f"{quote('sync_status')} = {Customer.objects.pending_sql(quote)}", []))
    assignments = _join(", ", sets)
    differs = _join(" OR ", [cond(key) for key in keys])
    owner_column = quote(Customer._meta.get_field("owner").column)
    customer_pk = quote(Customer._meta.pk.column)
    recipe = [*assignments[1], ("owner", ""), *differs[1]]
    cust = (
        f"UPDATE {table} SET {assignments[0]} WHERE {table}.{owner_column} = %s AND ({differs[0]}) "
        f"RETURNING {table}.{customer_pk}, {table}.{quote('sync_status')}, {table}.{updated_at}"
    )
    insert, constants = _insert(connection)
    insert = connection.ops.compose_sql(insert, constants).replace("%", "%%")  # its constants in the text
    text = f"WITH cust AS ({cust}), ins AS ({insert} {queued_conflict(connection)} RETURNING {quote('customer_id')})"
    if own is None:
        return f"{text} SELECT ARRAY(SELECT {quote('customer_id')} FROM ins), 1", tuple(recipe)
    return (
        (
            f"{text}, own AS ({own} RETURNING {own_pk}) "
            f"SELECT ARRAY(SELECT {quote('customer_id')} FROM ins), (SELECT count(*) FROM own)"
        ),
        tuple(recipe),
    )


def _paren(part: _Part) -> _Part:
    return f"({part[0]})", part[1]


def _leaves(node: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for child in node.values():
        out.extend([child] if isinstance(child, str) else _leaves(child))
    return out


def _columns(found: Mapping, keys: tuple[str, ...]) -> dict[str, tuple[str | None, dict[str, Any]]]:
    """Per customer column the keys set in it: the one setting it whole, and the tree of the keys
    setting parts of it (``{"address": "address[city]"}`` under ``shipping``)."""
    out: dict[str, tuple[str | None, dict[str, Any]]] = {}
    for key in keys:
        path = found.by_key[key].path
        top, tree = out.get(path[0], (None, {}))
        if len(path) == 1:
            top = key
        else:
            node = tree
            for part in path[1:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = key
        out[path[0]] = (top, tree)
    return out
