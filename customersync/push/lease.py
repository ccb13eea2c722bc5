"""The per-customer lease: at most one request per customer in flight, across every worker.

Fenced, and on the database's clock, never a worker's:

- taken with a conditional UPDATE when free or expired by the database's
  ``now()`` (a worker whose clock runs ahead cannot take a live lease; one
  whose clock runs behind is not delayed);
- checked in every transaction its holder writes in: ``hold()`` opens the
  freeze's and a failure's, ``settle()`` closes the confirm's. Each is a
  conditional UPDATE that succeeds only while the lease is still this
  holder's and unexpired, and locks the lease row until that transaction
  commits, so no one takes it over in between; a holder that lost it gets
  ``LeaseLost``, its transaction rolls back, and it sends nothing more;
- renewed right before each request, for ``LEASE_SECONDS``, which the system
  checks keep well above a request's total deadline: a lease expires only
  after its holder's last request has ended, and a new holder resends the
  same frozen body under the same key, never a new diff;
- released by the confirm that leaves nothing open, in its own transaction,
  or after the push. A holder that died without releasing is replaced once
  the lease expires, or, when it was a process on this host that no longer
  exists, once its last request's deadline has passed.

Every statement goes to one database, ``using`` (the router's database for
writing customers), the one the push's other statements go to.

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

from django.db import DatabaseError, IntegrityError, router, transaction
from django.db.models import Case, DateTimeField, ExpressionWrapper, F, Q, When
from django.db.models.functions import Now

from ..conf import app_settings
from ..exceptions import Busy, LeaseLost
from ..models import PushLease

logger = logging.getLogger("customersync")


def db_now_plus(seconds: float) -> ExpressionWrapper:
    """The database's ``now()`` plus ``seconds``, as an expression."""
    return ExpressionWrapper(Now() + dt.timedelta(seconds=seconds), output_field=DateTimeField())


def request_deadline() -> float:
    """How long one request to Stripe may last, at most (connect and the whole answer)."""
    return float(app_settings.REQUEST_DEADLINE)


class Lease:
    """Exclusive right to send requests for one customer (see ``PushLease``)."""

    def __init__(self, customer_pk: int, owner: str | None = None, *, using: str | None = None) -> None:
        self.customer_pk = customer_pk
        self.using = using or router.db_for_write(PushLease)
        self.released = False  # by the confirm that left nothing owed (``settle``)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

    def _rows(self):
        return PushLease.objects.using(self.using).filter(customer_id=self.customer_pk)

    def _mine(self):
        return self._rows().filter(owner=self.owner, expires_at__gt=Now())

    def _fields(self) -> dict[str, object]:
        return {"owner": self.owner, "expires_at": db_now_plus(app_settings.LEASE_SECONDS), "renewed_at": Now()}

    def acquire(self, *, row: bool | None = None) -> Lease:
        """Take the lease, or raise ``Busy``. ``row``: whether the customer's lease row exists
        (False: it is made, taken; None: not known)."""
        if row is False and self._insert():
            return self
        if self._rows().filter(self._free()).update(**self._fields(), taken_over_at=self._takeover()):
            return self
        # Held, or its holder is committing a confirm that releases it: wait for that holder's
        # transaction (the row lock), then look again. Each take stays conditional (its row
        # count the guard), for databases without row locks.
        with transaction.atomic(using=self.using):
            found = self._rows().select_for_update().annotate(db_now=Now()).first()
            if found is None:
                taken = self._insert()
            elif found.owner in ("", self.owner) or (found.expires_at is not None and found.expires_at < found.db_now):
                taken = self._rows().filter(self._free()).update(**self._fields(), taken_over_at=self._takeover())
            elif _holder_is_dead(found.owner):
                # Its last request may still be running at Stripe until its deadline.
                quiet = Q(renewed_at__isnull=True) | Q(renewed_at__lt=db_now_plus(-request_deadline()))
                taken = self._rows().filter(quiet, owner=found.owner).update(**self._fields(), taken_over_at=Now())
                if taken:
                    logger.warning("Took over the lease of customer %s from a dead worker.", self.customer_pk)
            else:
                taken = 0
        if not taken:
            raise Busy(self.customer_pk)
        return self

    def _takeover(self) -> Case:
        """``taken_over_at`` as the take writes it: the database's now when the lease is taken from
        another holder whose lease expired, else as it was (the status figures count takeovers)."""
        other = Q(expires_at__lt=Now()) & ~Q(owner__in=["", self.owner])
        return Case(When(other, then=Now()), default=F("taken_over_at"), output_field=DateTimeField())

    def _free(self) -> Q:
        return Q(owner="") | Q(expires_at__lt=Now()) | Q(owner=self.owner)

    def _insert(self) -> bool:
        """Make the customer's lease row, taken; False when another worker made it first."""
        try:
            with transaction.atomic(using=self.using):
                PushLease.objects.using(self.using).create(customer_id=self.customer_pk, **self._fields())
        except IntegrityError:
            return False
        return True

    def hold(self) -> None:
        """Renew the lease, or raise ``LeaseLost``: the first statement of the holder's transactions."""
        if not self._mine().update(expires_at=db_now_plus(app_settings.LEASE_SECONDS), renewed_at=Now()):
            raise self._lost()

    def settle(self, more: bool) -> None:
        """The confirm's last statement: renew the lease for the next round when the customer still
        owes Stripe something (``more``), else release it; ``LeaseLost`` when it is no longer this
        holder's. The caller marks it ``released`` once its transaction commits. (A record an edit
        queued meanwhile with nothing left to send is its own task's, as any edit's is.)"""
        if more:
            self.hold()
        elif not self._mine().update(owner="", expires_at=None, renewed_at=None):
            raise self._lost()

    def _lost(self) -> LeaseLost:
        logger.warning("Lost the lease of customer %s: stopping without sending.", self.customer_pk)
        return LeaseLost(self.customer_pk)

    def release(self) -> None:
        if self.released:
            return
        try:
            self._rows().filter(owner=self.owner).update(owner="", expires_at=None, renewed_at=None)
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
