"""Storing Stripe's answer to a push: the confirmed state, keeping edits made meanwhile.

One transaction (``store``): the attempt's success, the record marked sent (only while
it is still in flight under this push: a late answer for a record already confirmed
or given up changes nothing, so it never rolls back a newer state), the customer read
under its row lock with the answer merged in and written, a new outbox record when an
edit made meanwhile is still owed to Stripe, and last the lease's check
(``Lease.settle``): renewed for the push's next round when Stripe is still owed
something, released otherwise. A holder
that lost its lease stores nothing of the answer but the attempt's success.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from ..exceptions import LeaseLost, Unstorable
from ..models import AttemptOutcome, Customer, PendingPush, PushAttempt, PushState
from ..models.columns import column_errors
from ..owner import mapping as owner_mapping
from .lease import Lease
from .outbox import schedule_push

logger = logging.getLogger("customersync")


def store(
    record: PendingPush,
    response: dict[str, Any],
    lease: Lease,
    *,
    attempt: PushAttempt | None = None,
    request_id: str = "",
    adopted: bool = False,
) -> Customer | None:
    """Store Stripe's answer to ``record`` as the confirmed state: the stored customer, or None for a
    late answer. Marks ``lease.released`` when this push is over. Raises ``LeaseLost`` (the attempt's
    success kept) and ``Unstorable`` (nothing kept).

    ``adopted``: ``response`` is a customer found in Stripe, not the answer to
    what was sent: it is taken, except the owner's mapped values, pushed next.
    """
    using, now = lease.using, timezone.now()
    try:
        with transaction.atomic(using=using):
            if attempt is not None:
                _succeeded(attempt, request_id, now)
            pushes = PendingPush.objects.using(using).filter(pk=record.pk)
            if not pushes.filter(state=PushState.SENDING).update(state=PushState.SENT, completed_at=now):
                lease.hold()  # only the holder may call it late
                logger.warning(
                    "Ignored a late answer for push %s of %s: no longer in flight.", record.pk, record.customer_id
                )
                return None
            customer = Customer.objects.using(using).select_for_update().get(pk=record.customer_id)
            still_pending = _apply(customer, record, response, now, adopted=adopted)
            if errors := column_errors(customer):
                raise Unstorable(customer.stripe_id or "", errors)  # rolled back: nothing of the answer kept
            owner_mapping.write_back([customer], source="push")  # both-ways values Stripe's answer changed
            customer.save_synced()
            if still_pending:
                _owed_again(customer, now)
            lease.settle(still_pending)
    except LeaseLost:
        if attempt is not None:
            _succeeded(attempt, request_id, now)  # Stripe's answer all the same
        raise
    lease.released = not still_pending
    return customer


def _succeeded(attempt: PushAttempt, request_id: str, now: Any) -> None:
    PushAttempt.objects.using(attempt._state.db).filter(pk=attempt.pk).update(
        outcome=AttemptOutcome.SUCCEEDED, finished_at=now, http_status=200, request_id=request_id
    )


def _apply(customer: Customer, record: PendingPush, response: dict[str, Any], now: Any, *, adopted: bool) -> bool:
    """Stripe's answer applied to ``customer`` (not saved); whether Stripe is still owed something."""
    customer.merge_remote(response, base=record.sent_state, at=now)
    if adopted and (mapping := owner_mapping.mapping()) is not None:
        mapping.apply(customer, customer.owner_values or {})  # the owner's values stay, to be pushed
    sent_once = record.sent_once or {}
    customer.pending_once = {
        k: v for k, v in (customer.pending_once or {}).items() if k not in sent_once or sent_once[k] != v
    }
    customer.last_pushed_at = now
    customer.revive()  # Stripe just answered for it: it exists
    still_pending = customer.needs_push()
    customer.settle(still_pending, clear_error=True)
    return still_pending


def _owed_again(customer: Customer, now: Any) -> None:
    """An outbox record for what Stripe is still owed, joining the one an edit made meanwhile; its
    task published once the push's transaction commits."""
    using = customer._state.db
    if PendingPush.objects.using(using).filter(customer_id=customer.pk, state=PushState.PENDING).exists():
        return
    PendingPush.objects.using(using).create(customer=customer, enqueued_at=now)
    pk = customer.pk
    transaction.on_commit(lambda: schedule_push(pk), using=using)
