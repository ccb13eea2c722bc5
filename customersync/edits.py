"""Statement texts shared by the owner's one-statement write and the push's statements (PostgreSQL):
an ``UPDATE`` of one row as Django would write it, an outbox ``INSERT ... SELECT`` and its conflict
clause (one pending record per customer). Each text is built once per model, columns and connection.
"""

from __future__ import annotations

from typing import Any


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
