"""The push, for one customer.

1. ``push`` takes the customer's lease (``lease.Lease``): at most one request
   per customer is in flight, across every worker process;
2. ``_take`` takes the pending work: a record frozen by an earlier attempt
   that did not finish (resent as it is, under the same idempotency key), or
   else the diff of the customer's current state against the last state
   Stripe confirmed, frozen on the newest outbox record (older ones join it);
3. ``_send`` sends it, logging one ``PushAttempt`` per request;
4. ``confirm`` stores Stripe's answer as the confirmed state, keeping edits
   made while the request was in flight (they have their own outbox record
   and task); ``_failed`` records a refusal.

On PostgreSQL the common case takes three statements, each its own transaction
(``pushread``, ``pushsql``): the lease with the read, the freeze with the attempt,
and the confirm with the attempt's success (which tells whether another record
is open, and releases the lease when none is).

Retryable failures (network, 401, 409, 429, 5xx, ``Stripe-Should-Retry: true``)
raise ``RetryLater``; the caller retries with backoff and the record keeps
its frozen params and key. Others mark the customer failed or deleted.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from . import accounts, answers, confirm, owners, pushread, pushsql, ratelimit, signals
from .client import StripeClient
from .conf import app_settings
from .confirm import under_lock as _confirm  # under the row lock (and a late answer's test calls it)
from .exceptions import (
    APIError,
    AuthenticationError,
    IdempotencyError,
    ParamError,
    PermissionDeniedError,
    RateLimitError,
    RetryLater,
    StripeError,
    Unstorable,
    is_retryable,
)
from .lease import Lease
from .models import AttemptOutcome, Customer, PendingPush, PushAttempt, PushState, SyncStatus
from .params import TABLE
from .pushsql import Taken
from .wire import encode, flatten

logger = logging.getLogger("customersync")

# Rounds of push within one lease: picks up edits made during the previous request.
_MAX_ROUNDS = 3
_OPEN = (PushState.PENDING, PushState.SENDING)
REDACTED = "[redacted]"


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


def redact(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with secret values (card and bank tokens) replaced, for logs and the sync log."""
    return {key: REDACTED if key in TABLE.secret_roots else value for key, value in params.items()}


def loggable(params: dict[str, Any]) -> str:
    """The exact request body for ``params``, with secret values redacted."""
    return "&".join(
        f"{quote_plus(key, safe='[]')}="
        + (REDACTED if key.split("[", 1)[0] in TABLE.secret_roots else quote_plus(value, safe=""))
        for key, value in flatten(params)
    )


def push(customer_pk: int, *, client: StripeClient | None = None, resume: str | None = None) -> PushResult:
    """Send the customer's pending changes to Stripe and record what happened.

    Raises ``Busy`` when another worker is pushing this customer (``LeaseLost``
    when this one stopped holding its lease), ``RetryLater`` after a retryable
    error, and ``DatabaseError`` with the lease's owner in ``.customersync_lease``
    when the database stayed away: pass it back as ``resume`` to take up the
    lease again at once.
    """
    lease, first = pushread.take_lease(Lease(customer_pk, owner=resume))
    if lease is None:
        return PushResult(Outcome.SKIPPED)
    try:
        result = PushResult(Outcome.NOTHING)
        more: bool | None = None
        for round_ in range(_MAX_ROUNDS):
            if round_ and not (more if more is not None else _open(customer_pk)):
                break  # nothing was saved while the last request was in flight
            taken, early = _take(customer_pk, lease, first if round_ == 0 else pushread.UNREAD)
            if taken is None:
                # A later round with nothing left does not hide what was pushed.
                return result if result.outcome is Outcome.PUSHED else (early or result)
            result, more = _send(taken, client, lease)
            if result.outcome is not Outcome.PUSHED:
                return result
        return result
    except DatabaseError as err:
        err.customersync_lease = lease.owner  # type: ignore[attr-defined]
        raise
    finally:
        lease.release()


def _open(customer_pk: int) -> bool:
    return PendingPush.objects.filter(customer_id=customer_pk, state__in=_OPEN).exists()


def _take(customer_pk: int, lease: Lease, first: Any = pushread.UNREAD) -> tuple[Taken | None, PushResult | None]:
    """The record to send now; or None and the result when there is nothing to send. ``first``:
    what the statement that took the lease read (``pushread.UNREAD``: read now)."""
    if pushsql.enabled() and (taken := pushread.read(lease) if first is pushread.UNREAD else first) is not None:
        return taken, None
    record, early = _freeze(customer_pk, lease)
    return (Taken(record) if record is not None else None), early


def _freeze(customer_pk: int, lease: Lease) -> tuple[PendingPush | None, PushResult | None]:
    """The record to send now, frozen under the customer's row lock; or None and the result."""
    now = timezone.now()
    with transaction.atomic():
        lease.hold()
        customer = Customer.objects.select_for_update().filter(pk=customer_pk).first()
        if customer is None:
            return None, PushResult(Outcome.SKIPPED)
        records = PendingPush.objects.filter(customer_id=customer_pk)
        inflight = records.filter(state=PushState.SENDING).order_by("id").first()
        if inflight is not None:
            horizon = now - dt.timedelta(seconds=app_settings.RETRY_HORIZON)
            if inflight.frozen_at and inflight.frozen_at > horizon:
                return inflight, None
            # Too old to resend under its key (Stripe keeps keys 24 hours): recompute.
            records.filter(pk=inflight.pk).update(state=PushState.FAILED, completed_at=now)
        pending = list(records.filter(state=PushState.PENDING).order_by("id"))
        if customer.sync_status == SyncStatus.DELETED:
            records.filter(state=PushState.PENDING).update(state=PushState.NOTHING, completed_at=now)
            return None, PushResult(Outcome.SKIPPED)
        creating = not customer.stripe_id
        try:
            params = customer.pending_params()
        except ParamError as err:
            error = {"type": "local_error", "param": err.param, "message": err.message}
            records.filter(state=PushState.PENDING).update(state=PushState.FAILED, completed_at=now)
            Customer.objects.filter(pk=customer_pk).mark_failed(error)
            return None, PushResult(Outcome.FAILED, error=error)
        if not params and not creating:
            records.filter(state=PushState.PENDING).update(state=PushState.NOTHING, completed_at=now)
            Customer.objects.filter(pk=customer_pk).mark_settled()
            return None, PushResult(Outcome.NOTHING)
        record = pending[-1] if pending else PendingPush.objects.create(customer=customer, enqueued_at=now)
        records.filter(state=PushState.PENDING).exclude(pk=record.pk).update(
            state=PushState.SUPERSEDED, superseded_by=record, completed_at=now
        )
        fields = ["state", "operation", "params", "body", "sent_state", "sent_once", "frozen_at"]
        owner_id = getattr(customer, "owner_id", None)
        mapping = owners.mapping() if creating and owner_id is not None else None
        if mapping is not None:
            # An owner's create goes under a key from the owner, the same from
            # every process; a new key only after an earlier create was given up.
            given_up = records.filter(operation="create", frozen_at__isnull=False).exclude(pk=record.pk).count()
            record.key = mapping.create_key(owner_id, given_up, customer.account_id)
            fields.append("key")
        record.state = PushState.SENDING
        record.operation = "create" if creating else "update"
        record.params = params
        record.body = encode(params)
        record.sent_state = customer.desired_state()
        record.sent_once = dict(customer.pending_once or {})
        record.frozen_at = now
        record.save(update_fields=fields)
    return record, None


def _send(taken: Taken, client: StripeClient | None, lease: Lease) -> tuple[PushResult, bool | None]:
    """Send the record; the result, and whether another record is open (None: not known)."""
    record = taken.record
    customer = taken.read[0] if taken.read else Customer.objects.select_related("account").get(pk=record.customer_id)
    stripe_id, account = customer.stripe_id, customer.account
    platform = accounts.platform_of(account)  # read from settings once per push
    if (refusal := accounts.mode_problem(customer, platform)) is not None:
        # A test key never writes to a live customer, nor a live key to a test one: refused before any request.
        return _refuse(record, lease, {"type": "local_error", "code": "livemode_mismatch", "param": "livemode",
                                       "message": refusal}), None  # fmt: skip
    client = client or accounts.client_for(account, platform)
    params = record.params or {}
    limiter = ratelimit.budget(accounts.budget_name(account), platform.rate_limit)
    if limiter is not None:
        limiter.acquire()  # before the hold below, which stops this push if the wait outlasted the lease
    attempt = PushAttempt(
        push=record, customer_id=record.customer_id, params=redact(params), idempotency_key=record.idempotency_key
    )
    if (early := _record_attempt(taken, attempt, lease)) is not None:
        return early, None  # the edit saved meanwhile left nothing to send
    record, params = taken.record, taken.record.params or {}  # frozen again when the row changed meanwhile
    # The paced budget's last wait, right before the bytes go (not before a slow statement).
    before_send, adopted = (limiter.sending if limiter is not None else None), False
    try:
        if record.operation == "create" and (existing := answers.owners_customer_in_stripe(record, client)) is not None:
            # An earlier run created this owner's customer: take it, and push the difference.
            logger.info("Found %s's customer in Stripe: %s", record.customer_id, existing.get("id"))
            response, adopted, stripe_id = existing, True, existing.get("id")
        elif record.operation == "create":
            # Its own key, from the record: a retried create never makes two customers.
            logger.info("Creating %s: POST /v1/customers %s", record.customer_id, loggable(params))
            response = client.create_customer(body=record.body, idempotency_key=record.idempotency_key,
                                              before_send=before_send)  # fmt: skip
            stripe_id = response.get("id")
        else:
            logger.info("Pushing %s: POST /v1/customers/%s %s", record.customer_id, stripe_id, loggable(params))
            response = client.update_customer(stripe_id, body=record.body, idempotency_key=record.idempotency_key,
                                              before_send=before_send)  # fmt: skip
    except StripeError as err:
        if limiter is not None and isinstance(err, RateLimitError) and err.code != "lock_timeout":
            limiter.penalize(app_settings.RATE_LIMIT_PAUSE)  # slow the fleet on this account, not just this worker
        return _failed(record, attempt, err, lease), None
    problem, more = answers.problem(record, response, stripe_id), None
    if problem is None:
        try:
            stored, more = _confirm_until_stored(
                record, response, lease, attempt=attempt, adopted=adopted, read=taken.read
            )
        except Unstorable as err:
            problem = f"Stripe's answer holds values this mirror cannot store ({err.message})."
    if problem is not None:
        # Not Stripe's answer for this customer, or not one to keep: nothing of it is stored.
        request_id = getattr(response, "request_id", None)
        bad = APIError(problem, http_status=200, request_id=request_id, should_retry=False)
        return _failed(record, attempt, bad, lease), None
    if stored is None:
        return PushResult(Outcome.SKIPPED), None  # a late answer for a record no longer in flight
    logger.info("Pushed %s (%s): Stripe confirmed.", record.customer_id, stripe_id)
    if record.operation == "create" and signals.customer_created.has_listeners(Customer):
        owner = getattr(stored, "owner", None) if owners.mapping() is not None else None
        signals.customer_created.send(
            sender=Customer, customer_pk=record.customer_id, stripe_id=stripe_id, owner=owner, found=adopted
        )
    signals.customer_pushed.send(sender=Customer, customer_pk=record.customer_id, params=params)
    return PushResult(Outcome.PUSHED, params=params), more


def _record_attempt(taken: Taken, attempt: PushAttempt, lease: Lease) -> PushResult | None:
    """Log the attempt under the hold (renewed for a whole request, right before it), freezing
    the record in the same statement when it is still queued; frozen under the row lock when the
    customer changed since it was read, or the record read as being sent no longer is."""
    if not pushsql.enabled():
        with transaction.atomic():
            lease.hold()
            attempt.save(force_insert=True)
        return None
    if taken.frozen and pushsql.attempt(lease, attempt):
        return None
    if not taken.frozen and taken.read is not None:
        if pushsql.freeze_and_attempt(lease, taken.record, taken.read[0], taken.read[1], attempt):
            taken.frozen = True
            return None
    record, early = _freeze(taken.record.customer_id, lease)
    if record is None:
        return early
    taken.record, taken.read, attempt.push = record, None, record
    attempt.params, attempt.idempotency_key = redact(record.params or {}), record.idempotency_key
    return None if pushsql.attempt(lease, attempt) else PushResult(Outcome.SKIPPED)


def _refuse(record: PendingPush, lease: Lease, error: dict[str, Any]) -> PushResult:
    """Give up the record before any request, the customer failed with ``error``."""
    with transaction.atomic():
        lease.hold()
        PendingPush.objects.filter(pk=record.pk).update(state=PushState.FAILED, completed_at=timezone.now())
        Customer.objects.filter(pk=record.customer_id).mark_failed(error)
    logger.error("Push of %s refused: %s", record.customer_id, error["message"])
    customer_pk = record.customer_id
    transaction.on_commit(lambda: signals.push_failed.send(sender=Customer, customer_pk=customer_pk, error=error))
    return PushResult(Outcome.FAILED, params=record.params or {}, error=error)


def _finish(attempt: PushAttempt, outcome: str, *, err: StripeError | None = None, **fields: Any) -> None:
    if err is not None:
        fields.update(
            http_status=err.http_status,
            request_id=err.request_id or "",
            error_type=err.type or type(err).__name__,
            error_code=err.code or "",
            error_param=err.param or "",
            error_message=err.message,
        )
    PushAttempt.objects.filter(pk=attempt.pk).update(outcome=outcome, finished_at=timezone.now(), **fields)


def _failed(record: PendingPush, attempt: PushAttempt, err: StripeError, lease: Lease) -> PushResult:
    with transaction.atomic():
        lease.hold()  # only the holder records what happened
        outcome = _record_failure(record, attempt, err)
    if isinstance(outcome, RetryLater):
        raise outcome  # once what happened is stored
    return outcome


def _record_failure(record: PendingPush, attempt: PushAttempt, err: StripeError) -> PushResult | RetryLater:
    error = err.as_dict()
    customer_pk = record.customer_id
    now = timezone.now()
    if _in_progress(err):
        # Our own earlier request under this key is still running at Stripe
        # (a worker died waiting for it): wait for it, it is not a failure.
        _finish(attempt, AttemptOutcome.RETRY, err=err)
        return RetryLater(err, max(record.attempts, 1))
    if is_retryable(err):
        PendingPush.objects.filter(pk=record.pk).update(attempts=F("attempts") + 1)
        attempts = record.attempts + 1
        if attempts <= app_settings.MAX_RETRIES:
            _finish(attempt, AttemptOutcome.RETRY, err=err)
            Customer.objects.filter(pk=customer_pk).note_error(error)
            logger.warning("Push of %s will be retried (attempt %s): %s", customer_pk, attempts, err)
            return RetryLater(err, attempts)
        logger.warning("Push of %s failed after %s attempts: %s", customer_pk, attempts, err)
    _finish(attempt, AttemptOutcome.DELETED if _is_missing(err) else AttemptOutcome.FAILED, err=err)
    PendingPush.objects.filter(pk=record.pk).update(state=PushState.FAILED, completed_at=now)
    customers = Customer.objects.filter(pk=customer_pk)
    if _is_missing(err):
        logger.warning("Customer %s no longer exists in Stripe.", customer_pk)
        customers.mark_deleted(sync_error=error)
        outcome = Outcome.DELETED
    else:
        if isinstance(err, (AuthenticationError, PermissionDeniedError)):
            logger.error("Stripe refused the API key of customer %s's account: %s", customer_pk, err)
        elif not is_retryable(err):
            logger.warning("Push of %s failed: %s", customer_pk, err)
        customers.mark_failed(error)
        outcome = Outcome.FAILED
    transaction.on_commit(lambda: signals.push_failed.send(sender=Customer, customer_pk=customer_pk, error=error))
    return PushResult(outcome, params=record.params or {}, error=error)


def _in_progress(err: StripeError) -> bool:
    return isinstance(err, IdempotencyError) and err.http_status == 409


def _is_missing(err: StripeError) -> bool:
    return err.http_status == 404 and err.code == "resource_missing"


def _confirm_until_stored(
    record: PendingPush, response: dict[str, Any], lease: Lease, *, attempt: PushAttempt, adopted: bool = False,
    read: tuple[Customer, str] | None = None,
) -> tuple[Customer | None, bool | None]:  # fmt: skip
    """The attempt's success and the confirm, retried while the database is away: Stripe's
    answer is known, so it is not asked again; for at most half the lease, then
    ``DatabaseError`` (the task retries, resuming the lease, and resends the frozen body
    under its key: Stripe replays its answer). ``read``: the customer as read and its row's
    digest, for the confirm in one statement. Returns the stored customer (None: a late
    answer) and whether another record is open (None: not known)."""
    give_up = time.monotonic() + app_settings.LEASE_SECONDS / 2
    delay = 0.2
    request_id = getattr(response, "request_id", "") or ""
    while True:
        try:
            # The first write after the answer: the database may be gone already.
            if read is not None and not adopted and pushsql.enabled() and attempt.pk is not None:
                found = confirm.in_one_statement(record, response, lease, read, (attempt.pk, request_id))
                if found is not None:
                    return found
                read = None  # the row changed since it was read: under its lock
            _finish(attempt, AttemptOutcome.SUCCEEDED, http_status=200, request_id=request_id)
            return _confirm(record, response, lease, adopted=adopted), None
        except (OperationalError, InterfaceError) as err:
            if time.monotonic() + delay > give_up:
                raise
            logger.warning(
                "Stripe confirmed %s but the database is unavailable; storing its answer again in %.1f s: %s",
                record.customer_id, delay, type(err).__name__,
            )  # fmt: skip
            connection.close()  # a fresh connection for the next try
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
