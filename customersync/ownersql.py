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

Planning the customers' ``UPDATE`` and the outbox ``INSERT`` costs as much as the owner's whole
``UPDATE``, at every save. So ``migrate`` also creates, for the mapping, a PL/pgSQL function whose
plans PostgreSQL keeps for the session (``install``, from the app's ``post_migrate``). It holds
``cust`` and ``ins`` once per mapped column, for a save changing that column alone, and once for
every mapped key; in each, a key the values lack is left alone:

    WITH own AS (<the owner's UPDATE> RETURNING pk)
    SELECT customersync_owner_<digest>(<pk>, <the values as JSON>, <the column's statement, or 0>, <now>),
           (SELECT count(*) FROM own)

Its name carries a digest of its text (so of the mapping). The first owner save on a database
connection is the statement above, which also says whether that function exists; the later ones on
that connection call it when it does. A connection per request (``CONN_MAX_AGE = 0``) so keeps the
statement above, with no query added; a mapping changed without ``migrate`` is logged, and saves
take the statement above until ``migrate`` runs.

Statement texts are built once per process, owner columns and set of keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import weakref
from typing import Any

from django.utils import timezone

from .edits import insert_select, queued_conflict
from .models import Customer, PendingPush, SyncStatus
from .owners import Mapping

logger = logging.getLogger("customersync")

# What fills each ``%s`` of a text: (kind, mapped key).
Recipe = tuple[tuple[str, str], ...]
_Part = tuple[str, list[tuple[str, str]]]


def run(found: Mapping, values: dict[str, Any], owner_pk: Any, own: tuple[str, list] | None, own_pk: str,
        connection: Any) -> tuple[list[Any], int]:  # fmt: skip
    """Write ``values`` (mapped key -> value) to the customers of ``owner_pk``, with ``own`` (the
    owner's ``UPDATE`` and its params; None: the customers alone), in one statement: (the customers
    whose push was queued, the owner rows updated)."""
    name = function(found, connection)[0]
    with connection.cursor() as cursor:
        present = _present.setdefault(connection.connection, {})
        if present.get(name):
            text, params = _call(found, name, values, owner_pk, own, own_pk, connection)
        else:
            text, params = statement(found, values, owner_pk, own, own_pk, connection)
            if name not in present:  # asked once per connection, in the same statement
                text += f", to_regproc({_lit(name)}) IS NOT NULL"
        cursor.execute(text, params)
        queued, count, *exists = cursor.fetchone()
    if exists:
        present[name] = bool(exists[0])
        if not exists[0] and name not in _missing:
            _missing.add(name)
            logger.warning(
                "customersync: the database lacks the owner function for this OWNER_FIELDS (%s); owner saves "
                "plan their statement each time until `manage.py migrate` creates it.",
                name,
            )
    return queued, int(count)


# Per database connection (the driver's): whether each owner function exists there.
_present: weakref.WeakKeyDictionary[Any, dict[str, bool]] = weakref.WeakKeyDictionary()
_missing: set[str] = set()


def statement(found: Mapping, values: dict[str, Any], owner_pk: Any, own: tuple[str, list] | None,
              own_pk: str, connection: Any) -> tuple[str, list]:  # fmt: skip
    """The statement writing ``values`` to the customers of ``owner_pk`` with ``own``, planned at
    each run; its result row is (the customers whose push was queued, the owner rows updated)."""
    keys = tuple(values)
    cache_key = (own[0] if own else None, own_pk, keys, connection.alias, connection.vendor)
    found_text = _texts.get(cache_key)
    if found_text is None:
        text, recipe = _text(found, keys, connection, in_function=False)
        queued = f"ARRAY(SELECT {connection.ops.quote_name('customer_id')} FROM ins)"
        found_text = _texts[cache_key] = (_with_owner(text, queued, own, own_pk), recipe)
    text, recipe = found_text
    now = timezone.now()
    params = [_param(kind, key, values, owner_pk, now, connection) for kind, key in recipe]
    return text, [*params, *(own[1] if own else ())]


def _call(found: Mapping, name: str, values: dict[str, Any], owner_pk: Any, own: tuple[str, list] | None,
          own_pk: str, connection: Any) -> tuple[str, list]:  # fmt: skip
    """The statement calling the owner function: the function first, so the customers' rows are
    locked before the owner's (the module's notes)."""
    key = (name, own[0] if own else None, own_pk, connection.alias)
    text = _calls.get(key)
    if text is None:
        owner_type = _fields["owner"].db_type(connection)
        call = f"{connection.ops.quote_name(name)}(CAST(%s AS {owner_type}), CAST(%s AS jsonb), %s, %s)"
        text = _calls[key] = _with_owner(None, call, own, own_pk)
    heads = {found.by_key[key].path[0] for key in values}
    params = [
        _fields["owner"].get_db_prep_value(owner_pk, connection),
        json.dumps(values),
        _columns_of(found).get(heads.pop(), 0) if len(heads) == 1 else 0,
        _fields["updated_at"].get_db_prep_save(timezone.now(), connection=connection),
    ]
    return text, [*own[1], *params] if own else params


_calls: dict[tuple, str] = {}


def _with_owner(ctes: str | None, first: str, own: tuple[str, list] | None, own_pk: str) -> str:
    """``SELECT first, <the owner rows updated>``, after ``ctes`` and the owner's ``UPDATE``: ``first``
    comes first in the select list, so the customers' rows are locked before the owner's (the notes)."""
    if own is None:
        return f"{ctes} SELECT {first}, 1" if ctes else f"SELECT {first}, 1"
    updated = f"own AS ({own[0]} RETURNING {own_pk})"
    return f"{f'{ctes}, ' if ctes else 'WITH '}{updated} SELECT {first}, (SELECT count(*) FROM own)"


def _columns_of(found: Mapping) -> dict[str, int]:
    """The function's statement for each mapped column alone (1-based; 0: every key)."""
    numbers = _numbers.get(found)
    if numbers is None:
        columns = _by_column(found)
        numbers = _numbers[found] = {column: n for n, column in enumerate(columns, 1)} if len(columns) > 1 else {}
    return numbers


_numbers: dict[Mapping, dict[str, int]] = {}


def function(found: Mapping, connection: Any) -> tuple[str, str]:
    """The mapping's owner function on this connection: (its name, the statement creating it)."""
    key = (found, connection.alias, connection.vendor)
    made = _functions.get(key)
    if made is None:
        made = _functions[key] = _function(found, connection)
    return made


_functions: dict[tuple, tuple[str, str]] = {}


def install(found: Mapping, connection: Any) -> None:
    """Create the mapping's owner function (``post_migrate``; idempotent). Functions of earlier
    mappings and versions are left for code still calling them during a deploy."""
    with connection.cursor() as cursor:
        cursor.execute(function(found, connection)[1])


def _function(found: Mapping, connection: Any) -> tuple[str, str]:
    """One statement per mapped column, for a save changing that column alone (the usual edit: a
    statement writing the fewest columns costs the least), and one for every mapped key."""
    quote = connection.ops.quote_name

    def written(keys: tuple[str, ...]) -> str:
        body, recipe = _text(found, keys, connection, in_function=True)
        exprs = iter([_expression(kind, key) for kind, key in recipe])
        body = re.sub("%%|%s", lambda match: "%" if match.group() == "%%" else next(exprs), body)
        return f"{body} SELECT ARRAY(SELECT {quote('customer_id')} FROM ins) INTO queued;"

    columns = _by_column(found)
    every = written(tuple(source.key for source in found.sources))
    if len(columns) > 1:
        branches = [f"IF p_column = {n} THEN {written(keys)}" for n, keys in enumerate(columns.values(), 1)]
        every = f"{' ELS'.join(branches)} ELSE {every} END IF;"
    owner_type = _fields["owner"].db_type(connection)
    pk_type = Customer._meta.pk.rel_db_type(connection)  # type: ignore[union-attr]
    create = (
        f"CREATE OR REPLACE FUNCTION {{name}}(p_owner {owner_type}, p_values jsonb, p_column integer, "
        f"p_now timestamptz) RETURNS {pk_type}[] LANGUAGE plpgsql VOLATILE "
        # One plan per statement, made once: PostgreSQL would otherwise plan each call anew, its values folded in.
        "SET plan_cache_mode = force_generic_plan "
        f"AS $customersync$DECLARE queued {pk_type}[]; BEGIN {every} RETURN queued; END$customersync$"
    )
    name = f"customersync_owner_{hashlib.sha256(create.encode()).hexdigest()[:12]}"
    return name, create.replace("{name}", quote(name), 1)


def _by_column(found: Mapping) -> dict[str, tuple[str, ...]]:
    """The mapped keys by the customer column they are in, in the mapping's order."""
    columns: dict[str, tuple[str, ...]] = {}
    for source in found.sources:
        columns[source.path[0]] = (*columns.get(source.path[0], ()), source.key)
    return columns


def _expression(kind: str, key: str) -> str:
    """What fills a slot of the text in the function: the value from ``p_values`` (a key not given
    is never read: each use sits behind its condition, which requires it)."""
    value = f"(p_values -> {_lit(key)})"
    if kind == "json":
        return value
    if kind == "col":
        return f"NULLIF({value}, 'null'::jsonb)" if _fields[key].get_internal_type() == "JSONField" else (
            f"(p_values ->> {_lit(key)})"
        )  # fmt: skip
    if kind == "nonempty":
        return f"({value} NOT IN ('\"\"'::jsonb, 'null'::jsonb))"
    return {"patch": "p_values", "now": "p_now", "owner": "p_owner"}[kind]


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


def _text(found: Mapping, keys: tuple[str, ...], connection: Any, in_function: bool) -> tuple[str, Recipe]:
    """``WITH cust AS (...), ins AS (...)`` writing ``keys``: those given, or, in the function,
    every mapped key, each only when ``p_values`` has it."""
    quote = connection.ops.quote_name
    table = quote(Customer._meta.db_table)
    applied = quote("owner_values")

    def cond(key: str) -> _Part:
        if in_function:
            name = _lit(key)
            return f"(p_values ? {name} AND ({applied} -> {name}) IS DISTINCT FROM (p_values -> {name}))", []
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
    return text, tuple(recipe)


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
