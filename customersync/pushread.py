"""The push's read (PostgreSQL): the open records and their customer in one hand-written query.

The first round of a push takes its lease in the same statement (``acquire_and_read``):
the lease's upsert (``Lease.upsert_ctes``) and the read, which does not see the upsert
(nothing it reads is the lease row). Later rounds read alone (``read``), checking the
lease is still this holder's. The query's text is built once per process from the
models' fields; rows become instances with ``Model.from_db``, through each field's
database converters, as a queryset's would: the query compiler cost more CPU than
the round trip it reads through.

What is read is only a candidate: the statement that freezes it checks, with the
customer row's digest, that nothing changed since (``pushsql``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection
from django.utils import timezone

from .conf import app_settings
from .exceptions import ParamError
from .loading import field_converters, from_row
from .models import Account, Customer, PendingPush, PushLease, PushState, SyncStatus
from .pushsql import Taken, _lost, _q, row_hash
from .wire import encode

_MODELS = (PendingPush, Customer, Account)
_cache: dict[str, Any] = {}
UNREAD = object()  # the first round's read was not taken with the lease: read it then


def _shape() -> tuple[str, list[tuple[tuple[str, ...], Any]]]:
    """The SELECT (every concrete field of the three models, then the customer row's digest) and,
    per model, the attributes its columns fill and their converters."""
    if connection.alias in _cache:
        return _cache[connection.alias]
    tables = [_q(model._meta.db_table) for model in _MODELS]
    columns = [f"{table}.{_q(f.column)}" for model, table in zip(_MODELS, tables, strict=True)
               for f in model._meta.concrete_fields]  # fmt: skip
    pushes, customers, accounts = tables
    shape = (
        f"SELECT {', '.join(columns)}, {row_hash()} FROM {pushes} "
        f"INNER JOIN {customers} ON ({pushes}.{_q('customer_id')} = {customers}.{_q('id')}) "
        f"LEFT OUTER JOIN {accounts} ON ({customers}.{_q('account_id')} = {accounts}.{_q('id')}) "
        f"WHERE {pushes}.{_q('customer_id')} = %s AND {pushes}.{_q('state')} IN (%s, %s) "
        f"ORDER BY {pushes}.{_q('id')} LIMIT 2",
        [field_converters(model, connection) for model in _MODELS],
    )
    _cache[connection.alias] = shape
    return shape


def _instances(row: tuple, loaders: list[tuple[tuple[str, ...], Any]]) -> tuple[PendingPush, str]:
    """The record, its customer (and the customer's account) attached, and the row's digest."""
    made, at = [], 0
    for model, (names, converters) in zip(_MODELS, loaders, strict=True):
        made.append(from_row(model, connection.alias, names, row[at : at + len(names)], converters, connection))
        at += len(names)
    record, customer, account = made
    customer.account = account if customer.account_id is not None else None
    record.customer = customer
    return record, row[at]


def take_lease(lease: Any) -> tuple[Any, Any]:
    """The lease taken (None: no such customer) and, on PostgreSQL, the first round's read, taken in
    the same statement (``UNREAD`` when it was not)."""
    if connection.vendor != "postgresql":
        return lease.acquire_if_exists(), UNREAD
    got = acquire_and_read(lease)
    if got is None:
        return None, UNREAD
    held, first = got
    return (lease, first) if held else (lease.acquire(), UNREAD)  # held by another: maybe a dead holder


def acquire_and_read(lease: Any) -> tuple[bool, Taken | None] | None:
    """Take the lease and read, in one statement. None: the customer does not exist; (False, None):
    another holds the lease (the caller takes it the general way); (True, what ``read`` returns)."""
    select, converters = _shape()
    ctes, params = lease.upsert_ctes()
    statement = (
        f"WITH {ctes}, r AS ({select}) "
        "SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM up), r.* FROM (SELECT 1) AS one LEFT JOIN r ON true"
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, [*params, *_where(lease)])
        rows = cursor.fetchall()
    exists, taken = rows[0][0], rows[0][1]
    if not exists:
        return None
    if not taken:
        return False, None
    return True, _taken(sorted((_instances(row[2:], converters) for row in rows if row[2] is not None), key=_pk))


def read(lease: Any) -> Taken | None:
    """The common cases, read in one query and no lock: one record frozen earlier and recent
    enough to resend, or one queued update, diffed here and frozen with its attempt
    (``pushsql.freeze_and_attempt``, which checks the row did not change since). None: any
    other case, taken under the row lock (``push._freeze``). Raises ``LeaseLost`` when the lease is
    no longer this holder's (read, not renewed: the statement that freezes holds it)."""
    select, converters = _shape()
    statement = (
        f"SELECT EXISTS (SELECT 1 FROM {_q(PushLease._meta.db_table)} WHERE customer_id = %s AND owner = %s "
        f"AND expires_at > STATEMENT_TIMESTAMP()), r.* FROM (SELECT 1) AS one LEFT JOIN ({select}) AS r ON true"
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, [lease.customer_pk, lease.owner, *_where(lease)])
        rows = cursor.fetchall()
    found = sorted((_instances(row[1:], converters) for row in rows if row[1] is not None), key=_pk)
    if found and not rows[0][0]:
        raise _lost(lease)
    return _taken(found)


def _pk(found: tuple[PendingPush, str]) -> int:
    return found[0].pk


def _where(lease: Any) -> list[Any]:
    return [lease.customer_pk, PushState.PENDING.value, PushState.SENDING.value]


def _taken(found: list[tuple[PendingPush, str]]) -> Taken | None:
    if len(found) != 1:
        return None  # none, or several open: under the row lock
    record, row = found[0]
    customer, now = record.customer, timezone.now()
    snapshot = (customer, row)
    if record.state == PushState.SENDING:
        horizon = now - dt.timedelta(seconds=app_settings.RETRY_HORIZON)
        return Taken(record, read=snapshot) if record.frozen_at and record.frozen_at > horizon else None
    if customer.sync_status == SyncStatus.DELETED or not customer.stripe_id:
        return None
    try:
        params = customer.pending_params()
    except ParamError:
        return None
    if not params:
        return None
    record.state, record.operation, record.params, record.body = PushState.SENDING, "update", params, encode(params)
    record.sent_state, record.sent_once = customer.desired_state(), dict(customer.pending_once or {})
    record.frozen_at = now
    return Taken(record, frozen=False, read=snapshot)
