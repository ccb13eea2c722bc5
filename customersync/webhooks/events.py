"""Stripe's webhook events for customers, applied to the mirror once each per platform.

The view (``webhooks.webhook``) verifies the signature; ``handle_event``
refuses an event of a shape the mirror cannot hold (``webhooks.validation``: an
``EventError``, before anything is written), records the event under its
id and platform (a redelivery is recorded as a duplicate and does nothing
else), ignores one older than the state the mirror holds, and writes the
customer through the pull's ``store_page``. The echo of one of this app's own
pushes (its idempotency key) refreshes the confirmed state and sends nothing
back. ``record_event`` logs an event the view itself answered (an account not
mirrored, an event refused by the endpoint), so every signed event the
endpoints took or refused leaves a row: its account and its outcome (applied,
duplicate, stale, ignored, refused).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.db import IntegrityError, transaction

from ..accounts import DEFAULT
from ..models import Account, Customer, EventOutcome, PendingPush, WebhookEvent
from ..pull.pages import PullStats, store_page
from ..stripe.client import ACCOUNT_ID
from .validation import check_event

logger = logging.getLogger("customersync")

CUSTOMER_EVENTS = frozenset({"customer.created", "customer.updated", "customer.deleted"})

# What ``handle_event`` answers -> the outcome recorded, and the detail that goes with it.
_RECORDED: dict[str, tuple[str, str]] = {
    "applied": (EventOutcome.APPLIED, ""),
    "created": (EventOutcome.APPLIED, "created"),
    "deleted": (EventOutcome.APPLIED, "deleted"),
    "echo": (EventOutcome.APPLIED, "echo of this app's own push"),
    "out of order": (EventOutcome.STALE, "older than the state the mirror holds"),
    "ignored": (EventOutcome.IGNORED, ""),
    "skipped: does not fit": (EventOutcome.REFUSED, "does not fit the mirror"),
}
_DETAIL_MAX = 255


def handle_event(event: dict[str, Any], *, account: Account | None = None, platform: str | None = None) -> str:
    """Apply a (verified) Stripe event to the mirror of ``account`` (None: the default platform's
    own account), once per platform (``platform``: the endpoint's; default: the account's);
    returns what was done.

    Raises ``EventError`` (a ``ValueError``), writing nothing, for an event it cannot use.
    """
    check_event(event)
    obj = event["data"]["object"]
    platform = platform or (account.platform if account is not None else DEFAULT)
    request = event.get("request")
    key = (request.get("idempotency_key") if isinstance(request, dict) else None) or ""
    created = dt.datetime.fromtimestamp(event["created"], tz=dt.timezone.utc)
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = _new_record(event, platform, EventOutcome.RECEIVED, "")
        except IntegrityError:  # this platform has it already (or is applying it right now)
            _new_record(event, platform, EventOutcome.DUPLICATE, "")
            said = "duplicate"
        else:
            said = _apply_event(event["type"], obj, created, key, account)
            outcome, detail = _RECORDED[said]
            WebhookEvent.objects.filter(pk=record.pk).update(outcome=outcome, detail=detail)
    logger.info("Webhook %s %s for %s: %s", event["type"], event["id"], obj.get("id"), said)
    return said


def record_event(event: dict[str, Any], *, platform: str, outcome: str, detail: str) -> None:
    """Log an event the view answered without applying it (one ``check_event`` passed)."""
    _new_record(event, platform, outcome, detail)
    logger.info("Webhook %s %s at platform %s: %s (%s)", event["type"], event["id"], platform, outcome, detail)


def _new_record(event: dict[str, Any], platform: str, outcome: str, detail: str) -> WebhookEvent:
    connected = event.get("account")
    request = event.get("request")
    return WebhookEvent.objects.create(
        event_id=event["id"],
        platform=platform,
        stripe_account=connected if isinstance(connected, str) and ACCOUNT_ID.fullmatch(connected) else "",
        type=event["type"],
        stripe_id=event["data"]["object"].get("id") or "",
        created=dt.datetime.fromtimestamp(event["created"], tz=dt.timezone.utc),
        outcome=outcome,
        detail=detail if len(detail) <= _DETAIL_MAX else detail[: _DETAIL_MAX - 1] + "…",
        idempotency_key=(request.get("idempotency_key") if isinstance(request, dict) else None) or "",
    )


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
