"""An edit's write in one statement (PostgreSQL): the customer's row, guarded by the version of
the confirmed state it was diffed against, and its outbox record.

``UPDATE customer ... WHERE pk AND sync_version = v`` and ``INSERT INTO pendingpush ...
SELECT ... FROM (the update) ON CONFLICT (one pending record per customer) DO NOTHING``, as
data-modifying CTEs of one statement: one round trip instead of a re-read, BEGIN, the
update, a check for a queued push, the insert and COMMIT. The insert reads the update's
row, so it runs once the row is locked and written: a worker freezing the customer either
saw this edit or waits for it, as with separate statements in one transaction. The unique
index decides "a push is already queued" against committed rows, not the statement's
snapshot, so a record a worker froze meanwhile no longer counts as queued.
"""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.db.models import sql
from django.utils import timezone


def write_edit(model: Any, pk: Any, version: int, values: list, using: str, record: bool) -> tuple[int, bool]:
    """Run the update of ``model``'s row ``pk``, guarded by its ``sync_version`` being ``version``,
    with ``values`` (Django's ``(field, model, value)``), and when ``record``, the outbox insert;
    returns (rows updated, record inserted)."""
    connection = connections[using]
    update_sql, update_params = _update(model, pk, version, values, connection)
    if not record:
        with connection.cursor() as cursor:
            cursor.execute(update_sql, update_params)
            return cursor.rowcount, False
    PendingPush = model._meta.get_field("pushes").related_model  # the outbox, without an import circle
    quote = connection.ops.quote_name
    pk_column = quote(model._meta.pk.column)
    insert_sql, params = insert_select(
        PendingPush, PendingPush(enqueued_at=timezone.now()), "upd", {"customer": f"upd.{pk_column}"}, connection
    )
    statement = (
        f"WITH upd AS ({update_sql} RETURNING {quote(model._meta.db_table)}.{pk_column}), "
        f"ins AS ({insert_sql} {queued_conflict(connection)} RETURNING 1) "
        "SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM ins)"
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, [*update_params, *params])
        updated, inserted = cursor.fetchone()
    return updated, bool(inserted)


def _update(model: Any, pk: Any, version: int, values: list, connection: Any) -> tuple[str, list]:
    """The guarded ``UPDATE``: its text built once per model, columns and connection, as Django
    would write it, for plain values; Django's compiler for anything else (an ``F()``, a field
    with a placeholder of its own)."""
    found = plain_update(model, pk, values, connection, guard=("sync_version", version))
    if found is not None:
        return found
    filtered = model._base_manager.using(connection.alias).filter(pk=pk, sync_version=version)
    query = filtered.query.chain(sql.UpdateQuery)
    query.add_update_fields(values)
    update_sql, params = query.get_compiler(connection.alias).as_sql()
    return update_sql, list(params)


def plain_update(model: Any, pk: Any, values: list, connection: Any, guard: tuple = ()) -> tuple[str, list] | None:
    """``UPDATE`` of ``model``'s row ``pk`` with ``values`` (Django's ``(field, model, value)``), and
    ``guard`` (a column's name, then the value it must hold), as Django would write it, its text
    built once per model, columns and connection; None when a value needs Django's compiler."""
    for field, _, value in values:
        if (
            hasattr(value, "resolve_expression")
            or hasattr(value, "prepare_database_save")
            or hasattr(field, "get_placeholder")
            or hasattr(field, "get_placeholder_sql")
            or field.generated
        ):
            return None
    pk_field = model._meta.pk
    guarded = guard[0::2]
    key = (model, tuple(field.column for field, _, _ in values), guarded, connection.alias, connection.vendor)
    statement = _updates.get(key)
    if statement is None:
        quote = connection.ops.quote_name
        table = quote(model._meta.db_table)
        where = " AND ".join(
            f"{table}.{quote(model._meta.get_field(name).column)} = %s" for name in (pk_field.name, *guarded)
        )
        statement = _updates[key] = (
            f"UPDATE {table} SET {', '.join(f'{quote(column)} = %s' for column in key[1])} "
            f"WHERE {f'({where})' if guarded else where}"
        )
    params = [field.get_db_prep_save(value, connection=connection) for field, _, value in values]
    return statement, [*params, pk_field.get_db_prep_value(pk, connection), *guard[1::2]]


_updates: dict[tuple, str] = {}


def insert_select(model: Any, obj: Any, source: str, from_source: dict[str, str], connection: Any) -> tuple[str, list]:
    """``INSERT INTO model (...) SELECT ... FROM source``: ``obj``'s values (cast to their columns'
    types), but the columns ``from_source`` names, which come from ``source``."""
    key = (model, source, tuple(sorted(from_source.items())), connection.alias, connection.vendor)
    found = _inserts.get(key)
    if found is None:
        found = _inserts[key] = _insert_template(model, source, from_source, connection)
    statement, fields = found
    return statement, [field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields]


# The statement and the fields given as parameters, per model, source and connection: the columns'
# types and quoting cost more than the insert itself, and every edit writes the same statement.
_inserts: dict[tuple, tuple[str, list]] = {}


def _insert_template(model: Any, source: str, from_source: dict[str, str], connection: Any) -> tuple[str, list]:
    quote = connection.ops.quote_name
    columns, values, fields = [], [], []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(quote(field.column))
        if field.name in from_source:
            values.append(from_source[field.name])
            continue
        values.append(f"CAST(%s AS {field.db_type(connection)})")
        fields.append(field)
    table = quote(model._meta.db_table)
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {source}", fields


def queued_conflict(connection: Any) -> str:
    """An outbox insert's conflict clause: a customer with a queued push already keeps that one
    (the partial unique index ``customersync_one_queued_push``)."""
    quote = connection.ops.quote_name
    return f"ON CONFLICT ({quote('customer_id')}) WHERE {quote('state')} = 'pending' DO NOTHING"
