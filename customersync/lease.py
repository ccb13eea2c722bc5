"""The per-customer lease: at most one request per customer in flight, across every worker.

Fenced, and on the database's clock, never a worker's:

- taken with a conditional UPDATE when free or expired by the database's
  ``now()`` (a worker whose clock runs ahead cannot take a live lease; one
  whose clock runs behind is not delayed);
- renewed by ``hold()``, the first statement of every transaction its holder
  writes in (freeze, attempt, confirm, failure): the UPDATE succeeds only
  while the lease is still this holder's and unexpired, and locks the lease
  row until that transaction commits, so no one takes it over in between;
  a holder that lost it gets ``LeaseLost`` and writes and sends nothing more;
- renewed right before each request, for ``LEASE_SECONDS``, which the system
  checks keep well above a request's total deadline: a lease expires only
  after its holder's last request has ended, and a new holder resends the
  same frozen body under the same key, never a new diff;
- released after. A holder that died without releasing is replaced once the
  lease expires, or, when it was a process on this host that no longer
  exists, once its last request's deadline has passed.

A task retried after the database went away passes its lease's ``owner`` on
(``Lease(pk, owner=...)``), so the retry resumes the lease instead of
waiting for it to expire.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import DateTimeField, ExpressionWrapper, Q
from django.db.models.functions import Now

from .conf import app_settings
from .exceptions import Busy, LeaseLost
from .models import Customer, PushLease

logger = logging.getLogger("customersync")


def db_now_plus(seconds: float) -> ExpressionWrapper:
    """The database's ``now()`` plus ``seconds``, as an expression."""
    return ExpressionWrapper(Now() + dt.timedelta(seconds=seconds), output_field=DateTimeField())


def request_deadline() -> float:
    """How long one request to Stripe may last, at most (connect and the whole answer)."""
    return float(app_settings.REQUEST_DEADLINE)


class Lease:
    """Exclusive right to send requests for one customer (see ``PushLease``)."""

    def __init__(self, customer_pk: int, owner: str | None = None) -> None:
        self.customer_pk = customer_pk
        self.released = False  # by the statement that confirmed the push (``pushsql.confirm``)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

    def _fields(self) -> dict[str, object]:
        return {"owner": self.owner, "expires_at": db_now_plus(app_settings.LEASE_SECONDS), "renewed_at": Now()}

    def acquire(self) -> Lease:
        leases = PushLease.objects.filter(customer_id=self.customer_pk)
        free = Q(owner="") | Q(expires_at__lt=Now()) | Q(owner=self.owner)
        taken = leases.filter(free).update(**self._fields())
        if not taken:
            try:
                with transaction.atomic():
                    PushLease.objects.create(customer_id=self.customer_pk, **self._fields())
                taken = 1
            except IntegrityError:
                holder = leases.values_list("owner", flat=True).first() or ""
                if holder and _holder_is_dead(holder):
                    # Its last request may still be running at Stripe until its deadline.
                    quiet = Q(renewed_at__isnull=True) | Q(renewed_at__lt=db_now_plus(-request_deadline()))
                    taken = leases.filter(quiet, owner=holder).update(**self._fields())
                    if taken:
                        logger.warning("Took over the lease of customer %s from a dead worker.", self.customer_pk)
        if not taken:
            raise Busy(self.customer_pk)
        return self

    def acquire_if_exists(self) -> Lease | None:
        """``acquire()``, or None when the customer does not exist. (On PostgreSQL a push takes its
        lease in the statement that reads its record: ``pushread.acquire_and_read``.)"""
        if not Customer.objects.filter(pk=self.customer_pk).exists():
            return None
        return self.acquire()

    def upsert_ctes(self) -> tuple[str, list[object]]:
        """PostgreSQL: ``c`` (the customer's id, when it exists) and ``up`` (a row when the lease was
        free, expired or already this holder's, and is now taken), as common table expressions."""
        leases, customers = (connection.ops.quote_name(m._meta.db_table) for m in (PushLease, Customer))
        return (
            f"c AS (SELECT id FROM {customers} WHERE id = %s), "
            f"up AS (INSERT INTO {leases} (customer_id, owner, expires_at, renewed_at) "
            "SELECT id, %s, STATEMENT_TIMESTAMP() + %s, STATEMENT_TIMESTAMP() FROM c "
            "ON CONFLICT (customer_id) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at, "
            f"renewed_at = EXCLUDED.renewed_at WHERE {leases}.owner = '' "
            f"OR {leases}.expires_at < STATEMENT_TIMESTAMP() OR {leases}.owner = %s RETURNING 1)",
            [self.customer_pk, self.owner, dt.timedelta(seconds=app_settings.LEASE_SECONDS), self.owner],
        )

    def hold(self) -> None:
        """Renew the lease, or raise ``LeaseLost``: the first statement of each of the holder's transactions."""
        held = (
            PushLease.objects.filter(customer_id=self.customer_pk, owner=self.owner, expires_at__gt=Now())
            .update(expires_at=db_now_plus(app_settings.LEASE_SECONDS), renewed_at=Now())
        )  # fmt: skip
        if not held:
            logger.warning("Lost the lease of customer %s: stopping without sending.", self.customer_pk)
            raise LeaseLost(self.customer_pk)

    def release(self) -> None:
        if self.released:
            return
        try:
            PushLease.objects.filter(customer_id=self.customer_pk, owner=self.owner).update(
                owner="", expires_at=None, renewed_at=None
            )
        except DatabaseError:
            # The database is away: the lease expires by itself, or a retry resumes it.
            logger.warning("Could not release the lease of customer %s (database error).", self.customer_pk)


def _holder_is_dead(owner: str) -> bool:
    """True when ``owner`` was a process on this host that no longer exists."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
