"""Storing Stripe's answer to a push: the confirmed state, keeping edits made meanwhile.

On PostgreSQL, when the customer's row is unchanged since the push read it (the common
case), the answer is applied to that copy and stored in one statement (``in_one_statement``,
``pushsql.confirm``); otherwise, and on other databases, under the row lock (``under_lock``). Either way
only for the record in flight under this lease: a late answer for a record already
confirmed or given up is ignored, so it never rolls back a newer state.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from django.db import transaction
from django.db.models.signals import post_save, pre_save
from django.utils import timezone

from . import owners, pushsql
from .exceptions import Unstorable
from .lease import Lease
from .models import Customer, PendingPush, PushState
from .outbox import record_change
from .values import column_errors

logger = logging.getLogger("customersync")


def in_one_statement(
    record: PendingPush, response: dict[str, Any], lease: Lease, read: tuple[Customer, str], answered: tuple[int, str]
) -> tuple[Customer | None, bool | None] | None:
    """The confirm in one statement with the attempt's success (``answered``: its id and Stripe's
    request id), on a copy of the customer as read (``read``: it and its row's digest): the stored
    customer (None: a late answer) and whether another record is open; None when the row changed
    since it was read, or the model's own save is needed (nothing of the customer written)."""
    customer = copy.copy(read[0])  # its own state and fields cache (Model.__getstate__)
    for name, value in read[0].__dict__.items():
        if isinstance(value, (dict, list)):  # JSON values the merge may edit in place
            customer.__dict__[name] = copy.deepcopy(value)  # a retry starts again from the row as read
    still_pending = _apply(customer, record, response, timezone.now(), adopted=False)
    mapping = owners.mapping()
    if (
        (mapping is not None and getattr(customer, "owner_id", None) is not None and mapping.from_stripe(customer))
        or pre_save.has_listeners(Customer)
        or post_save.has_listeners(Customer)
    ):
        return None  # an owner to write back to, or a site's save receivers: the path that saves the model
    if errors := column_errors(customer):
        raise Unstorable(customer.stripe_id or "", errors)  # nothing of the answer kept
    outcome, more = pushsql.confirm(lease, record, customer, read[1], still_pending, answered)
    if outcome == "changed":
        return None
    if outcome == "late":
        logger.warning("Ignored a late answer for push %s of %s: no longer in flight.", record.pk, record.customer_id)
        return None, None
    return customer, more


def _apply(customer: Customer, record: PendingPush, response: dict[str, Any], now: Any, *, adopted: bool) -> bool:
    """Stripe's answer applied to ``customer`` (not saved); whether Stripe is still owed something."""
    customer.merge_remote(response, base=record.sent_state, at=now)
    if adopted and (mapping := owners.mapping()) is not None:
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


def under_lock(
    record: PendingPush, response: dict[str, Any], lease: Lease, *, adopted: bool = False
) -> Customer | None:
    """Store Stripe's answer as the confirmed state under the row lock, keeping edits made meanwhile.

    ``adopted``: ``response`` is a customer found in Stripe, not the answer to
    what was sent: it is taken, except the owner's mapped values, pushed next.
    """
    now = timezone.now()
    with transaction.atomic():
        lease.hold()
        if not PendingPush.objects.select_for_update().filter(pk=record.pk, state=PushState.SENDING).exists():
            logger.warning(
                "Ignored a late answer for push %s of %s: no longer in flight.", record.pk, record.customer_id
            )
            return None
        customer = Customer.objects.select_for_update().get(pk=record.customer_id)
        still_pending = _apply(customer, record, response, now, adopted=adopted)
        if errors := column_errors(customer):
            raise Unstorable(customer.stripe_id or "", errors)  # rolled back: nothing of the answer kept
        owners.write_back([customer])  # both-ways values Stripe's answer changed
        customer.save_synced()
        PendingPush.objects.filter(pk=record.pk).update(state=PushState.SENT, completed_at=now)
        if still_pending:
            record_change(customer)  # joins the queued push an in-flight edit already made, if any
    return customer
