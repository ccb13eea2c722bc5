"""The push's writes as single statements (PostgreSQL): fewer round trips, the same fence.

Each statement opens with the lease's hold as a data-modifying CTE, ``hold AS (UPDATE
push lease ... WHERE owner = me AND expires_at > now() RETURNING 1)``, and every other
write in it reads that CTE (``EXISTS (SELECT 1 FROM hold)``, or selects from it): a
holder whose lease is gone or expired writes nothing, exactly as when ``Lease.hold()``
was the first statement of a transaction, and the lease row stays locked until the
statement commits. ``hold`` is on the database's clock, never the worker's.

- ``freeze_and_attempt``: the hold, the customer row locked and checked unchanged since
  it was diffed (a digest of the whole row, ``row_hash``), the record frozen from
  PENDING to SENDING, and the attempt logged; any write to the row since the read
  makes it write nothing, and the caller freezes again under the row lock;
- ``attempt``: the hold and the attempt, for a record frozen earlier (resent as it is);
- ``confirm``: the attempt's success (kept even without the lease), then the lease
  checked and its row locked (``SELECT ... FOR UPDATE``, the same fence as the hold), the
  record checked still SENDING, the customer row written (guarded by the same digest: an
  edit made while the request was in flight makes it write nothing and the caller
  confirms under the row lock), the record SENT, a new outbox record when Stripe is still
  owed something, whether another record is open, and the lease written once: released
  when the push is over (stored, nothing else open), renewed otherwise.

``pushread`` reads the common cases in one query without a lock. The other databases
keep the previous path (``push`` and ``answer``), statement by statement.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import sql
from django.utils import timezone

from .conf import app_settings
from .edits import insert_select, queued_conflict
from .exceptions import LeaseLost
from .models import Customer, PendingPush, PushAttempt, PushLease, PushState

logger = logging.getLogger("customersync")


def enabled() -> bool:
    return connection.vendor == "postgresql"


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _hold(lease: Any) -> tuple[str, list[Any]]:
    table = _q(PushLease._meta.db_table)
    return (
        f"hold AS (UPDATE {table} SET expires_at = STATEMENT_TIMESTAMP() + %s, renewed_at = STATEMENT_TIMESTAMP() "
        "WHERE customer_id = %s AND owner = %s AND expires_at > STATEMENT_TIMESTAMP() RETURNING 1)",
        [dt.timedelta(seconds=app_settings.LEASE_SECONDS), lease.customer_pk, lease.owner],
    )


def _lost(lease: Any) -> LeaseLost:
    logger.warning("Lost the lease of customer %s: stopping without sending.", lease.customer_pk)
    return LeaseLost(lease.customer_pk)


def _insert(model: Any, obj: Any, source: str, from_source: dict[str, str]) -> tuple[str, list[Any]]:
    return insert_select(model, obj, source, from_source, connection)


def _update(queryset: Any, values: dict[str, Any] | None = None, fields: list | None = None) -> tuple[str, list]:
    query = queryset.query.chain(sql.UpdateQuery)
    if values is not None:
        query.add_update_values(values)
    if fields is not None:
        query.add_update_fields(fields)
    update_sql, params = query.get_compiler(connection.alias).as_sql()
    return update_sql, list(params)


def _run(ctes: list[tuple[str, list[Any]]], select: str, params: tuple | list = ()) -> tuple:
    statement = "WITH " + ", ".join(text for text, _ in ctes) + " " + select
    with connection.cursor() as cursor:
        cursor.execute(statement, [p for _, ps in ctes for p in ps] + list(params))
        return cursor.fetchone()


@dataclass
class Taken:
    """The record to send; ``read``: the customer as read without a lock and its row's digest, when
    the record is still to be frozen (``frozen`` False) or may be confirmed in one statement."""

    record: PendingPush
    frozen: bool = True
    read: tuple[Customer, str] | None = None


def row_hash() -> str:
    """SQL for a digest of the customer's whole row: any write to it since it was read changes it."""
    return f"md5(CAST({_q(Customer._meta.db_table)} AS text))"


def freeze_and_attempt(lease: Any, record: PendingPush, customer: Customer, row: str, attempt: PushAttempt) -> bool:
    """Freeze ``record`` (its frozen fields set on it) and log ``attempt``; False when the customer
    changed since it was read (nothing written). Raises ``LeaseLost``."""
    table, row_sql = _q(Customer._meta.db_table), row_hash()
    guard = (
        f"guard AS (SELECT 1 FROM {table} WHERE {table}.id = %s AND {row_sql} = %s "
        "AND EXISTS (SELECT 1 FROM hold) FOR UPDATE)",
        [customer.pk, row],
    )
    frozen = PendingPush.objects.filter(pk=record.pk, state=PushState.PENDING).extra(
        where=["EXISTS (SELECT 1 FROM guard)"]
    )
    names = ["state", "operation", "params", "body", "sent_state", "sent_once", "frozen_at"]
    freeze_sql, freeze_params = _update(frozen, values={name: getattr(record, name) for name in names})
    insert_sql, insert_params = _insert(PushAttempt, attempt, "frz", {"push": "frz.id"})
    held, unchanged, attempt_id = _run(
        [
            _hold(lease),
            guard,
            (f"frz AS ({freeze_sql} RETURNING {_q(PendingPush._meta.db_table)}.id)", freeze_params),
            (f"att AS ({insert_sql} RETURNING id)", insert_params),
        ],
        "SELECT (SELECT count(*) FROM hold), (SELECT count(*) FROM guard), (SELECT id FROM att)",
    )
    if not held:
        raise _lost(lease)
    if not unchanged or attempt_id is None:
        return False
    attempt.pk = attempt_id
    return True


def attempt(lease: Any, attempt: PushAttempt) -> bool:
    """Log ``attempt`` of a record frozen earlier, under the hold; False (nothing written) when the
    record is no longer being sent. Raises ``LeaseLost``.

    The read that found it sending may predate the last holder's confirm: that statement took the
    lease once the confirm, which releases it, committed, but read from a snapshot taken before.
    This statement's snapshot is newer."""
    insert_sql, insert_params = _insert(PushAttempt, attempt, "rec", {})
    sending = (f"rec AS (SELECT 1 FROM {_q(PendingPush._meta.db_table)} WHERE id = %s AND state = %s "
               "AND EXISTS (SELECT 1 FROM hold))", [attempt.push_id, PushState.SENDING.value])  # fmt: skip
    held, attempt_id = _run([_hold(lease), sending, (f"att AS ({insert_sql} RETURNING id)", insert_params)],
                            "SELECT (SELECT count(*) FROM hold), (SELECT id FROM att)")  # fmt: skip
    if not held:
        raise _lost(lease)
    attempt.pk = attempt_id
    return attempt_id is not None


def _check(lease: Any) -> tuple[str, list[Any]]:
    """The lease checked and its row locked without writing it (the confirm writes it once, at the end)."""
    return (
        f"hold AS (SELECT 1 FROM {_q(PushLease._meta.db_table)} WHERE customer_id = %s AND owner = %s "
        "AND expires_at > STATEMENT_TIMESTAMP() FOR UPDATE)",
        [lease.customer_pk, lease.owner],
    )


def confirm(
    lease: Any, record: PendingPush, merged: Customer, row: str, still_pending: bool, answered: tuple[int, str]
) -> tuple[str, bool]:
    """Store ``merged`` (the customer read with digest ``row``, Stripe's answer applied), with the
    attempt's success (``answered``: its id and Stripe's request id; kept even without the lease):
    ("stored", whether another record is open), ("late", _) for a record no longer SENDING,
    ("changed", _) when the customer was written since (nothing stored). When stored and nothing
    else is open, the lease is released in the same statement (``lease.released``); otherwise
    renewed. Raises ``LeaseLost``."""
    now = timezone.now()
    pushes, leases = _q(PendingPush._meta.db_table), _q(PushLease._meta.db_table)
    fields = [(f, None, f.pre_save(merged, False)) for f in Customer._meta.concrete_fields if not f.primary_key]
    guarded = Customer._base_manager.filter(pk=merged.pk).extra(
        where=[f"{row_hash()} = %s", "EXISTS (SELECT 1 FROM rec)"], params=[row]
    )
    write_sql, write_params = _update(guarded, fields=fields)
    sent_sql, sent_params = _update(
        PendingPush.objects.filter(pk=record.pk).extra(where=["EXISTS (SELECT 1 FROM upd)"]),
        values={"state": PushState.SENT, "completed_at": now},
    )
    attempt_id, request_id = answered
    ctes = [
        (f"fin AS (UPDATE {_q(PushAttempt._meta.db_table)} SET outcome = %s, finished_at = %s, http_status = 200, "
         "request_id = %s WHERE id = %s)", ["succeeded", now, request_id, attempt_id]),
        _check(lease),
        (f"rec AS (SELECT id FROM {pushes} WHERE id = %s AND state = %s AND EXISTS (SELECT 1 FROM hold) FOR UPDATE)",
         [record.pk, PushState.SENDING.value]),
        (f"upd AS ({write_sql} RETURNING {_q(Customer._meta.db_table)}.id)", write_params),
        (f"sent AS ({sent_sql} RETURNING 1)", sent_params),
    ]  # fmt: skip
    if still_pending:
        insert_sql, insert_params = _insert(
            PendingPush, PendingPush(enqueued_at=now), "upd", {"customer": f"upd.{_q('id')}"}
        )
        ctes.append((f"ins AS ({insert_sql} {queued_conflict(connection)} RETURNING 1)", insert_params))
    else:
        ctes.append(("ins AS (SELECT 1 WHERE false)", []))
    others = f"EXISTS (SELECT 1 FROM {pushes} WHERE customer_id = %s AND state IN (%s, %s) AND id <> %s)"
    open_params = [merged.pk, PushState.PENDING.value, PushState.SENDING.value, record.pk]
    ctes += [
        # Stored, and nothing else open: this push is over, and its lease is released here.
        (f"fine AS (SELECT o.other, EXISTS (SELECT 1 FROM upd) AND NOT EXISTS (SELECT 1 FROM ins) "
         f"AND NOT o.other AS done FROM (SELECT {others} AS other) o)", open_params),
        (f"rel AS (UPDATE {leases} SET owner = CASE WHEN fine.done THEN '' ELSE owner END, "
         "expires_at = CASE WHEN fine.done THEN NULL ELSE STATEMENT_TIMESTAMP() + %s END, "
         "renewed_at = CASE WHEN fine.done THEN NULL ELSE STATEMENT_TIMESTAMP() END FROM fine "
         "WHERE customer_id = %s AND owner = %s AND EXISTS (SELECT 1 FROM hold) RETURNING fine.done)",
         [dt.timedelta(seconds=app_settings.LEASE_SECONDS), lease.customer_pk, lease.owner]),
    ]  # fmt: skip
    held, live, stored, inserted, other, released = _run(
        ctes,
        "SELECT (SELECT count(*) FROM hold), (SELECT count(*) FROM rec), (SELECT count(*) FROM upd), "
        "(SELECT count(*) FROM ins), (SELECT other FROM fine), COALESCE((SELECT done FROM rel), false)",
    )
    if not held:
        raise _lost(lease)
    if released:
        lease.released = True
    if not live:
        return "late", False
    if not stored:
        return "changed", False
    if inserted:
        from .outbox import schedule_push

        schedule_push(merged.pk)
    return "stored", bool(other or inserted)
