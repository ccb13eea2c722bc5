"""The orchestration every entry point calls: tasks, commands and admin actions.

``push`` sends a customer's pending params (computed now, against the last
state Stripe confirmed) and records the outcome; ``pull`` imports customers
from Stripe without clobbering local edits not yet pushed.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

from django.db import transaction
from django.utils import timezone

from . import signals
from .client import StripeClient
from .conf import app_settings
from .exceptions import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    IdempotencyError,
    ParamError,
    PermissionDeniedError,
    RateLimitError,
    StripeError,
)
from .models import Customer, SyncStatus
from .wire import flatten

logger = logging.getLogger("customersync")

# Values never written to logs as they are (card and bank tokens).
_REDACTED_PARAMS = frozenset({"source", "card", "bank_account"})


class Outcome(str, enum.Enum):
    PUSHED = "pushed"
    NOTHING = "nothing to send"
    FAILED = "failed"
    DELETED = "deleted in Stripe"
    SKIPPED = "skipped"


@dataclass
class PushResult:
    outcome: Outcome
    params: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None


def is_retryable(err: StripeError) -> bool:
    """Stripe's rules: obey Stripe-Should-Retry, else retry network, 409, 429 and 5xx."""
    if err.should_retry is not None:
        return err.should_retry
    if isinstance(err, (APIConnectionError, RateLimitError)):
        return True
    if isinstance(err, IdempotencyError) and err.http_status == 409:
        return True
    return isinstance(err, APIError) and (err.http_status is None or err.http_status >= 500)


def loggable(params: dict[str, Any]) -> str:
    """The exact request body for ``params``, with token values redacted."""
    return "&".join(
        f"{quote_plus(key, safe='[]')}="
        + ("[redacted]" if key.split("[", 1)[0] in _REDACTED_PARAMS else quote_plus(value, safe=""))
        for key, value in flatten(params)
    )


def idempotency_key(customer: Customer, params: dict[str, Any]) -> str:
    """Stable for the same change from the same confirmed state; new for a new change."""
    base = json.dumps(customer.stripe_data or {}, sort_keys=True, default=str)
    material = json.dumps([customer.pk, customer.stripe_id, base, params], sort_keys=True, default=str)
    return "customersync-" + hashlib.sha256(material.encode()).hexdigest()[:40]


def schedule_push(customer_pk: int) -> None:
    """Queue a push for when the current transaction commits (never for a rollback)."""
    if not app_settings.PUSH_ON_SAVE:
        return
    from .tasks import push_customer

    def enqueue() -> None:
        options: dict[str, Any] = {}
        if app_settings.QUEUE:
            options["queue"] = app_settings.QUEUE
        push_customer.apply_async(args=[customer_pk], **options)

    # robust: a broker outage must not turn a committed save into an error page;
    # the customer stays "pending" and is pushed by the next save or command.
    transaction.on_commit(enqueue, robust=True)


def push(customer_pk: int, *, client: StripeClient | None = None, raise_retryable: bool = True) -> PushResult:
    """Send the customer's pending params to Stripe and record what happened.

    A retryable error (network, 429, 5xx, Stripe-Should-Retry) is recorded and
    re-raised when ``raise_retryable`` so the caller can retry later.
    """
    try:
        customer = Customer.objects.get(pk=customer_pk)
    except Customer.DoesNotExist:
        return PushResult(Outcome.SKIPPED)
    if not customer.stripe_id or customer.sync_status == SyncStatus.DELETED:
        return PushResult(Outcome.SKIPPED)
    try:
        params = customer.pending_params()
    except ParamError as err:
        error = {"type": "local_error", "param": err.param, "message": err.message}
        _record(customer_pk, sync_status=SyncStatus.FAILED, sync_error=error)
        return PushResult(Outcome.FAILED, error=error)
    if not params:
        if customer.sync_status == SyncStatus.PENDING:
            _record(customer_pk, sync_status=SyncStatus.IN_SYNC, sync_error=None)
        return PushResult(Outcome.NOTHING)

    client = client or StripeClient.from_settings()
    sent_state = customer.desired_state()
    sent_once = dict(customer.pending_once or {})
    logger.info("Pushing %s: POST /v1/customers/%s %s", customer.pk, customer.stripe_id, loggable(params))
    try:
        response = client.update_customer(customer.stripe_id, params, idempotency_key=idempotency_key(customer, params))
    except StripeError as err:
        return _failed(customer, params, err, raise_retryable=raise_retryable)
    _confirm(customer_pk, response, sent_state, sent_once)
    logger.info("Pushed %s (%s): Stripe confirmed.", customer.pk, customer.stripe_id)
    signals.customer_pushed.send(sender=Customer, customer_pk=customer_pk, params=params)
    return PushResult(Outcome.PUSHED, params=params)


def _failed(customer: Customer, params: dict[str, Any], err: StripeError, *, raise_retryable: bool) -> PushResult:
    error = err.as_dict()
    if is_retryable(err):
        logger.warning("Push of %s (%s) will be retried: %s", customer.pk, customer.stripe_id, err)
        _record(customer.pk, sync_error=error)
        if raise_retryable:
            raise err
        return PushResult(Outcome.FAILED, params=params, error=error)
    if err.http_status == 404 and err.code == "resource_missing":
        logger.warning("Customer %s (%s) no longer exists in Stripe.", customer.pk, customer.stripe_id)
        _record(customer.pk, sync_status=SyncStatus.DELETED, sync_error=error)
        signals.push_failed.send(sender=Customer, customer_pk=customer.pk, error=error)
        return PushResult(Outcome.DELETED, params=params, error=error)
    if isinstance(err, (AuthenticationError, PermissionDeniedError)):
        logger.error("Stripe refused the API key configured in CUSTOMERSYNC['API_KEY']: %s", err)
    else:
        logger.warning("Push of %s (%s) failed: %s", customer.pk, customer.stripe_id, err)
    _record(customer.pk, sync_status=SyncStatus.FAILED, sync_error=error)
    signals.push_failed.send(sender=Customer, customer_pk=customer.pk, error=error)
    return PushResult(Outcome.FAILED, params=params, error=error)


def record_gave_up(customer_pk: int, err: StripeError) -> None:
    """Mark a customer failed after its retries ran out."""
    error = err.as_dict()
    _record(customer_pk, sync_status=SyncStatus.FAILED, sync_error=error)
    signals.push_failed.send(sender=Customer, customer_pk=customer_pk, error=error)


def _record(customer_pk: int, **fields: Any) -> None:
    # update(), not save(): bookkeeping must not look like an edit.
    Customer.objects.filter(pk=customer_pk).update(**fields)


def _confirm(customer_pk: int, response: dict[str, Any], sent_state: dict[str, Any], sent_once: dict[str, Any]) -> None:
    """Store Stripe's answer as the confirmed state, keeping edits made meanwhile."""
    with transaction.atomic():
        customer = Customer.objects.select_for_update().get(pk=customer_pk)
        customer.merge_remote(response, base=sent_state)
        if (customer.pending_once or {}) == sent_once:
            customer.pending_once = {}
        customer.last_pushed_at = timezone.now()
        customer.sync_error = None
        customer.sync_status = SyncStatus.IN_SYNC
        # save() recomputes the status and queues another push if an edit
        # landed while this one was in flight.
        customer.save()


@dataclass
class PullStats:
    created: int = 0
    updated: int = 0
    kept_local: int = 0
    pages: int = 0


def pull(
    *,
    client: StripeClient | None = None,
    page_size: int | None = None,
    progress: Callable[[PullStats], None] | None = None,
) -> PullStats:
    """Import or refresh every customer of the account, page by page."""
    client = client or StripeClient.from_settings()
    stats = PullStats()
    for page in client.iter_customers(limit=page_size or app_settings.PAGE_SIZE):
        _store_page(page, stats)
        stats.pages += 1
        if progress:
            progress(stats)
    return stats


def pull_one(stripe_id: str, *, client: StripeClient | None = None) -> Customer:
    """Refresh one customer from Stripe."""
    client = client or StripeClient.from_settings()
    _store_page([client.retrieve_customer(stripe_id)], PullStats())
    return Customer.objects.get(stripe_id=stripe_id)


def _store_page(objects: Iterable[dict[str, Any]], stats: PullStats) -> None:
    now = timezone.now()
    with transaction.atomic():
        for obj in objects:
            customer = Customer.objects.select_for_update().filter(stripe_id=obj["id"]).first()
            if obj.get("deleted"):
                if customer is not None:
                    _record(customer.pk, sync_status=SyncStatus.DELETED, last_pulled_at=now)
                    stats.updated += 1
                continue
            if customer is None:
                customer = Customer()
                stats.created += 1
            else:
                stats.updated += 1
            kept = customer.merge_remote(obj, base=customer.stripe_data)
            if kept:
                stats.kept_local += 1
            customer.last_pulled_at = now
            customer.save()
