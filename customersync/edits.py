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


def write_edit(filtered: Any, values: list, using: str, record: bool) -> tuple[int, bool]:
    """Run the guarded update of ``filtered`` with ``values`` (Django's ``(field, model, value)``),
    and when ``record``, the outbox insert; returns (rows updated, record inserted)."""
    PendingPush = filtered.model._meta.get_field("pushes").related_model  # the outbox, without an import circle
    connection = connections[using]
    query = filtered.query.chain(sql.UpdateQuery)
    query.add_update_fields(values)
    update_sql, update_params = query.get_compiler(using).as_sql()
    quote = connection.ops.quote_name
    if not record:
        with connection.cursor() as cursor:
            cursor.execute(update_sql, update_params)
            return cursor.rowcount, False
    table = PendingPush._meta.db_table
    pk = quote(filtered.model._meta.pk.column)
    record_obj = PendingPush(enqueued_at=timezone.now())
    columns, casts, params = [], [], []
    for field in PendingPush._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(quote(field.column))
        if field.name == "customer":
            casts.append(f"upd.{pk}")
            continue
        casts.append(f"CAST(%s AS {field.db_type(connection)})")
        params.append(field.get_db_prep_save(field.pre_save(record_obj, True), connection))
    statement = (
        f"WITH upd AS ({update_sql} RETURNING {quote(filtered.model._meta.db_table)}.{pk}), "
        f"ins AS (INSERT INTO {quote(table)} ({', '.join(columns)}) SELECT {', '.join(casts)} FROM upd "
        f"ON CONFLICT ({quote('customer_id')}) WHERE {quote('state')} = 'pending' DO NOTHING "
        "RETURNING 1) "
        "SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM ins)"
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, [*update_params, *params])
        updated, inserted = cursor.fetchone()
    return updated, bool(inserted)
