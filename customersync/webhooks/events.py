"""Stripe's webhook events for customers, applied to the mirror once each.

The view (``webhooks.webhook``) verifies the signature; ``handle_event``
refuses an event of a shape the mirror cannot hold (``eventcheck``: an
``EventError``, before anything is written), records the event under its
unique id (a redelivery is a no-op), ignores one
older than the state the mirror holds, and writes the customer through the
pull's ``store_page``. The echo of one of this app's own pushes (its
idempotency key) refreshes the confirmed state and sends nothing back.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.db import IntegrityError, transaction

from ..models import Account, Customer, PendingPush, WebhookEvent
from ..pull.pages import PullStats, store_page
from .validation import check_event

logger = logging.getLogger("customersync")

CUSTOMER_EVENTS = frozenset({"customer.created", "customer.updated", "customer.deleted"})


def handle_event(event: dict[str, Any], *, account: Account | None = None) -> str:
    """Apply a (verified) Stripe event to the mirror of ``account`` (None: the default platform's
    own account), once; returns what was done.

    Raises ``EventError`` (a ``ValueError``), writing nothing, for an event it cannot use.
    """
    check_event(event)
    obj = event["data"]["object"]
    created = dt.datetime.fromtimestamp(event["created"], tz=dt.timezone.utc)
    request = event.get("request")
    key = (request.get("idempotency_key") if isinstance(request, dict) else None) or ""
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = WebhookEvent.objects.create(
                    event_id=event["id"],
                    type=event["type"],
                    stripe_id=obj.get("id") or "",
                    created=created,
                    outcome="received",
                    idempotency_key=key,
                )
        except IntegrityError:
            return "duplicate"
        outcome = _apply_event(event["type"], obj, created, key, account)
        WebhookEvent.objects.filter(pk=record.pk).update(outcome=outcome)
    logger.info("Webhook %s %s for %s: %s", event["type"], event["id"], obj.get("id"), outcome)
    return outcome


def _apply_event(kind: str, obj: dict[str, Any], created: dt.datetime, key: str, account: Account | None) -> str:
    if kind not in CUSTOMER_EVENTS or obj.get("object") != "customer":
        return "ignored"
    customer = Customer.objects.select_for_update().filter(account=account, stripe_id=obj["id"]).first()
    # Events carry whole seconds: only an event from an earlier second is stale.
    if customer and customer.confirmed_at and created < customer.confirmed_at.replace(microsecond=0):
        return "out of order"
    if kind == "customer.deleted":
        if customer is None:
            return "ignored"
        Customer.objects.filter(pk=customer.pk).mark_deleted(confirmed_at=created)
        return "deleted"
    stats = PullStats()
    store_page([obj], stats, at=created, source="webhook", account=account)
    if stats.skipped:
        return "skipped: does not fit"  # logged by store_page, with the fields
    if PendingPush.objects.for_idempotency_key(key).exists():
        return "echo"  # our own push, seen by Stripe: confirmed state refreshed, nothing sent back
    return "created" if stats.created else "applied"
