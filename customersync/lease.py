"""The per-customer lease: at most one request per customer in flight, across every worker.

Taken with a conditional UPDATE (atomic on every database Django supports),
held across freeze, request and confirmation, released after. A holder that
died without releasing is replaced once the lease expires, or, when it was a
process on this host that no longer exists, once its request would have
timed out at Stripe.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from .conf import app_settings
from .exceptions import Busy
from .models import PushLease

logger = logging.getLogger("customersync")


class Lease:
    """Exclusive right to send requests for one customer (see ``PushLease``)."""

    def __init__(self, customer_pk: int) -> None:
        self.customer_pk = customer_pk
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

    def acquire(self) -> Lease:
        now = timezone.now()
        until = now + dt.timedelta(seconds=app_settings.LEASE_SECONDS)
        leases = PushLease.objects.filter(customer_id=self.customer_pk)
        taken = leases.filter(Q(owner="") | Q(expires_at__lt=now)).update(owner=self.owner, expires_at=until)
        if not taken:
            try:
                with transaction.atomic():
                    PushLease.objects.create(customer_id=self.customer_pk, owner=self.owner, expires_at=until)
                taken = 1
            except IntegrityError:
                holder, expires = leases.values_list("owner", "expires_at").first() or ("", None)
                # A dead holder's request may still be running at Stripe until
                # its client timeout; only then is it safe to send again.
                taken_at = expires - dt.timedelta(seconds=app_settings.LEASE_SECONDS) if expires else now
                timed_out = now >= taken_at + dt.timedelta(seconds=app_settings.TIMEOUT)
                if holder and timed_out and _holder_is_dead(holder):
                    logger.warning("Taking over the lease of customer %s from a dead worker.", self.customer_pk)
                    taken = leases.filter(owner=holder).update(owner=self.owner, expires_at=until)
        if not taken:
            raise Busy(self.customer_pk)
        return self

    def release(self) -> None:
        PushLease.objects.filter(customer_id=self.customer_pk, owner=self.owner).update(owner="", expires_at=None)


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
