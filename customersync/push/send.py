"""The push, for one customer.

1. ``push`` reads the customer (its account names the key and the rate budget) and
   takes its lease (``lease.Lease``): at most one request per customer is in flight,
   across every worker process;
2. after the budget's grant, ``_take`` takes the pending work in one transaction,
   under the lease's hold and the customer's row lock: a record frozen by an earlier
   attempt that did not finish (resent as it is, under the same idempotency key), or
   else the diff of the customer's current state against the last state Stripe
   confirmed, frozen on the queued outbox record; the attempt is logged with it;
3. ``_send`` sends it;
4. ``confirm.store`` stores Stripe's answer as the confirmed state in one
   transaction, keeping edits made while the request was in flight (they have their
   own outbox record and task), and releases the lease when nothing is left owed;
   ``_failed`` records a refusal.

An update push is eleven statements in three writing transactions: the read and the
lease, the take (four statements) and the confirm (five). A push that finds nothing
queued and nothing owed ends after two reads, writing nothing. Every statement goes to the router's database for
writing customers, chosen once per push.

Retryable failures (network, 401, 409, 429, 5xx, ``Stripe-Should-Retry: true``)
raise ``RetryLater``; the caller retries with backoff and the record keeps
its frozen params and key. Others mark the customer failed or deleted.
Whatever else is raised once the lease is taken ends the push in one place,
``_ended``, by ``ending``'s rules: recorded, or raised for the task to retry.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

from django.db import DatabaseError, InterfaceError, OperationalError, connections, router, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from .. import accounts, signals
from ..conf import app_settings
from ..core.encoding import encode, flatten
from ..core.params import TABLE
from ..core.redaction import REDACTED
from ..exceptions import (
    APIError,
    AuthenticationError,
    Busy,
    IdempotencyError,
    ParamError,
    Paused,
    PermissionDeniedError,
    RateLimitError,
    RetryLater,
    StripeError,
    Unstorable,
    is_retryable,
)
from ..models import Account, AttemptOutcome, Customer, PendingPush, PushAttempt, PushLease, PushState, SyncStatus
from ..owner import mapping as owner_mapping
from ..stripe import rate_budget
from ..stripe.client import StripeClient
from . import answer_checks, ending
from .confirm import store as _confirm  # the late answer's test calls it
from .ending import OPEN
from .lease import Lease

logger = logging.getLogger("customersync")

# Rounds of push within one lease: picks up edits made during the previous request.
_MAX_ROUNDS = 3
_FROZEN = ("state", "operation", "params", "body", "sent_state", "sent_once", "frozen_at")


class Outcome(str, enum.Enum):
    """How a push ended: ``PUSHED`` (Stripe confirmed it), ``NOTHING`` (nothing to send),
    ``FAILED`` (refused, or retries ran out: the customer is marked failed), ``DELETED``
    (Stripe no longer has the customer: it is marked deleted), ``SKIPPED`` (no such
    customer, one deleted in Stripe, or an answer for a push no longer in flight).
    The value is the outcome in words (``customersync_push`` prints it)."""

    PUSHED = "pushed"
    NOTHING = "nothing to send"
    FAILED = "failed"
    DELETED = "deleted in Stripe"
    SKIPPED = "skipped"


@dataclass
class PushResult:
    """What ``push`` did: its ``outcome``; ``params``, the parameters sent (``{}`` when
    nothing was); ``error``, for a failure, the dict kept on the customer (``sync_error``)."""

    outcome: Outcome
    params: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None


@dataclass
class Taken:
    """What ``_take`` froze: the record, its customer as read under the row lock, the attempt logged."""

    record: PendingPush
    customer: Customer
    attempt: PushAttempt


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
    error (``Paused`` while the account's budget is paused after a 429), and
    ``DatabaseError`` with the lease's owner in ``.customersync_lease`` when the
    database stayed away: pass it back as ``resume`` to take up the lease again
    at once. Nothing else: whatever else is raised once the lease is taken ends
    the push, recorded on the customer and returned as a failure.
    """
    using = router.db_for_write(Customer)
    found = _read(customer_pk, using)
    if found is None:
        return PushResult(Outcome.SKIPPED)
    if not found.waiting and (idle := _idle(customer_pk, using)) is not None:
        return idle  # nothing queued, nothing owed: no lease, no write
    lease = Lease(customer_pk, owner=resume, using=using).acquire(row=found.leased)
    taken: Taken | PushResult | None = None
    try:
        platform = accounts.platform_of(found.account)  # read from settings once per push
        limiter = rate_budget.budget(accounts.budget_name(found.account), platform.rate_limit)
        result, waiting = PushResult(Outcome.NOTHING), found.waiting
        for round_ in range(_MAX_ROUNDS):
            if round_ and lease.released:
                break  # the confirm found nothing owed: no edit saved while the request was in flight
            taken = None
            taken = _granted(customer_pk, lease, limiter, waiting)
            if isinstance(taken, PushResult):
                # A later round with nothing left does not hide what was pushed.
                return result if result.outcome is Outcome.PUSHED else taken
            result, waiting = _send(taken, client, lease, limiter), True
            if result.outcome is not Outcome.PUSHED:
                return result
        return result
    except Exception as err:  # any exception: the one place a push ends
        return _ended(customer_pk, lease, taken if isinstance(taken, Taken) else None, err)
    finally:
        lease.release()


@dataclass
class _Found:
    """What the push reads before its lease: the customer's account (its rate budget), whether a
    record is open (``waiting``) and whether the customer's lease row exists (``leased``)."""

    account: Account | None
    waiting: bool
    leased: bool


def _read(customer_pk: int, using: str) -> _Found | None:
    """The customer's ``_Found``, unlocked, in one narrow query; None when it does not exist."""
    try:
        account_id, platform, connected, waiting, leased = (
            Customer.objects.using(using)
            .filter(pk=customer_pk)
            .annotate(
                waiting=Exists(PendingPush.objects.filter(customer_id=OuterRef("pk"), state__in=OPEN)),
                leased=Exists(PushLease.objects.filter(customer_id=OuterRef("pk"))),
            )
            .values_list("account_id", "account__platform", "account__stripe_account", "waiting", "leased")
            .get()
        )
    except Customer.DoesNotExist:
        return None
    account = None
    if account_id is not None:
        account = Account.from_db(using, ["id", "platform", "stripe_account"], [account_id, platform, connected])
    return _Found(account, waiting, leased)


def _idle(customer_pk: int, using: str) -> PushResult | None:
    """The result of a push with no record open, when the customer owes Stripe nothing and needs
    no write (a pending status is settled under the lease); None: take the lease. Unlocked: an
    edit saved meanwhile has its own record and task."""
    customer = Customer.objects.using(using).filter(pk=customer_pk).first()
    if customer is None or customer.sync_status == SyncStatus.DELETED:
        return PushResult(Outcome.SKIPPED)
    if customer.sync_status == SyncStatus.PENDING or not customer.stripe_id:
        return None
    try:
        return None if customer.pending_params() else PushResult(Outcome.NOTHING)
    except Exception:  # noqa: BLE001 - the take meets it again, under the lease, and records it
        return None


def _granted(customer_pk: int, lease: Lease, limiter: Any, waiting: bool) -> Taken | PushResult:
    """``_take`` after the budget's grant, waited for before the hold in ``_take``, which stops this
    push if the wait outlasted the lease. Without a record open nothing is waited for, unless the take
    finds something to send after all."""
    if limiter is not None and waiting:
        limiter.acquire()
    taken = _take(customer_pk, lease, granted=limiter is None or waiting)
    if taken is None:
        limiter.acquire()
        taken = _take(customer_pk, lease)
    return taken  # type: ignore[return-value]


def _take(customer_pk: int, lease: Lease, *, granted: bool = True) -> Taken | PushResult | None:
    """Freeze the record to send and log its attempt, under the hold and the customer's row lock;
    or the result when there is nothing to send. None: something to send, but not ``granted`` the
    budget yet (nothing written)."""
    using, now = lease.using, timezone.now()
    with transaction.atomic(using=using):
        lease.hold()
        records = list(
            PendingPush.objects.using(using)
            .select_related("customer__account")
            .select_for_update(of=("customer",))
            .filter(customer_id=customer_pk, state__in=OPEN)
            .order_by("id")
        )
        if records:
            customer = records[0].customer
        else:
            customer = (
                Customer.objects.using(using)
                .select_related("account")
                .select_for_update(of=("self",))
                .filter(pk=customer_pk)
                .first()
            )
            if customer is None:
                return PushResult(Outcome.SKIPPED)
        pushes = PendingPush.objects.using(using).filter(customer_id=customer_pk)
        account = customer.account if customer.account_id is not None else None
        refusal = accounts.mode_problem(customer, accounts.platform_of(account))
        inflight = next((r for r in records if r.state == PushState.SENDING), None)
        if inflight is not None:
            horizon = now - dt.timedelta(seconds=app_settings.RETRY_HORIZON)
            if inflight.frozen_at and inflight.frozen_at > horizon:
                if refusal is not None:
                    return _refuse(customer_pk, pushes, refusal, now)
                return _attempt(inflight, customer, using) if granted else None
            # Too old to resend under its key (Stripe keeps keys 24 hours): recompute.
            pushes.filter(pk=inflight.pk).update(state=PushState.FAILED, completed_at=now)
        pending = [r for r in records if r.state == PushState.PENDING]
        if customer.sync_status == SyncStatus.DELETED:
            pushes.filter(state=PushState.PENDING).update(state=PushState.NOTHING, completed_at=now)
            return PushResult(Outcome.SKIPPED)
        creating = not customer.stripe_id
        try:
            params = customer.pending_params()
        except ParamError as err:
            error = {"type": "local_error", "param": err.param, "message": err.message}
            pushes.filter(state=PushState.PENDING).update(state=PushState.FAILED, completed_at=now)
            Customer.objects.using(using).filter(pk=customer_pk).mark_failed(error)
            return PushResult(Outcome.FAILED, error=error)
        if not params and not creating:
            if pending:
                pushes.filter(state=PushState.PENDING).update(state=PushState.NOTHING, completed_at=now)
            if customer.sync_status == SyncStatus.PENDING:
                Customer.objects.using(using).filter(pk=customer_pk).mark_settled()
            return PushResult(Outcome.NOTHING)
        if refusal is not None:
            return _refuse(customer_pk, pushes, refusal, now)
        if not granted:
            return None
        if not pending:
            # Read again under the row lock: an edit's record committed since the read above is seen.
            pending = list(pushes.filter(state=PushState.PENDING).order_by("id"))
        record = pending[-1] if pending else PendingPush(customer=customer, enqueued_at=now)
        if len(pending) > 1:
            pushes.filter(state=PushState.PENDING).exclude(pk=record.pk).update(
                state=PushState.SUPERSEDED, superseded_by=record, completed_at=now
            )
        frozen = list(_FROZEN)
        owner_id = getattr(customer, "owner_id", None)
        mapping = owner_mapping.mapping() if creating and owner_id is not None else None
        if mapping is not None:
            # An owner's create goes under a key from the owner, the same from
            # every process; a new key only after an earlier create was given up.
            given_up = pushes.filter(operation="create", frozen_at__isnull=False).exclude(pk=record.pk).count()
            record.key = mapping.create_key(owner_id, given_up, customer.account_id)
            frozen.append("key")
        record.state = PushState.SENDING
        record.operation = "create" if creating else "update"
        record.params = params
        record.body = encode(params)
        record.sent_state = customer.desired_state()
        record.sent_once = dict(customer.pending_once or {})
        record.frozen_at = now
        if record.pk is None:
            record.save(using=using, force_insert=True)
        else:
            pushes.filter(pk=record.pk).update(**{name: getattr(record, name) for name in frozen})
        return _attempt(record, customer, using)


def _attempt(record: PendingPush, customer: Customer, using: str) -> Taken:
    """The attempt about to be sent, logged (in the take's transaction)."""
    attempt = PushAttempt(
        push=record,
        customer_id=record.customer_id,
        params=redact(record.params or {}),
        idempotency_key=record.idempotency_key,
    )
    attempt.save(using=using, force_insert=True)
    return Taken(record, customer, attempt)


def _refuse(customer_pk: int, pushes: Any, refusal: str, now: Any) -> PushResult:
    """Give up the open records before any request, the customer failed with ``refusal``."""
    # A test key never writes to a live customer, nor a live key to a test one.
    error = {"type": "local_error", "code": "livemode_mismatch", "param": "livemode", "message": refusal}
    pushes.filter(state__in=OPEN).update(state=PushState.FAILED, completed_at=now)
    Customer.objects.using(pushes.db).filter(pk=customer_pk).mark_failed(error)
    logger.error("Push of %s refused: %s", customer_pk, error["message"])
    transaction.on_commit(
        lambda: signals.push_failed.send(sender=Customer, customer_pk=customer_pk, error=error), using=pushes.db
    )
    return PushResult(Outcome.FAILED, error=error)


def _send(taken: Taken, client: StripeClient | None, lease: Lease, limiter: Any) -> PushResult:
    """Send the record and store what Stripe answered."""
    record, customer, attempt = taken.record, taken.customer, taken.attempt
    stripe_id, account = customer.stripe_id, customer.account if customer.account_id is not None else None
    client = client or accounts.client_for(account)
    params = record.params or {}
    # The paced budget's last wait, right before the bytes go (not before a slow statement).
    before_send, adopted = (limiter.sending if limiter is not None else None), False
    try:
        search = answer_checks.owners_customer_in_stripe(customer, client) if record.operation == "create" else None
        if search is not None and search.refused:
            _note(attempt, search.refused)  # why a customer the search answered is not the one created
        if search is not None and (existing := search.found) is not None:
            # An earlier run created this owner's customer: take it, and push the difference.
            logger.info("Found %s's customer in Stripe: %s", record.customer_id, existing.get("id"))
            response, adopted, stripe_id = existing, True, existing.get("id")
        elif record.operation == "create":
            # Its own key, from the record: a retried create never makes two customers.
            logger.info("Creating %s: POST /v1/customers %s", record.customer_id, loggable(params))
            response = client.create_customer(
                body=record.body, idempotency_key=record.idempotency_key, before_send=before_send
            )
            stripe_id = response.get("id")
        else:
            logger.info("Pushing %s: POST /v1/customers/%s %s", record.customer_id, stripe_id, loggable(params))
            response = client.update_customer(
                stripe_id, body=record.body, idempotency_key=record.idempotency_key, before_send=before_send
            )
    except StripeError as err:
        if limiter is not None and isinstance(err, RateLimitError) and err.code != "lock_timeout":
            limiter.penalize(app_settings.RATE_LIMIT_PAUSE)  # slow the fleet on this account, not just this worker
        return _failed(record, attempt, err, lease)
    problem = answer_checks.problem(record, response, stripe_id, customer)
    if problem is None:
        try:
            stored = _confirm_until_stored(record, response, lease, attempt=attempt, adopted=adopted)
        except Unstorable as err:
            problem = f"Stripe's answer holds values this mirror cannot store ({err.message})."
    if problem is not None:
        # Not Stripe's answer for this customer, or not one to keep: nothing of it is stored.
        request_id = getattr(response, "request_id", None)
        bad = APIError(problem, http_status=200, request_id=request_id, should_retry=False)
        return _failed(record, attempt, bad, lease)
    if stored is None:
        return PushResult(Outcome.SKIPPED)  # a late answer for a record no longer in flight
    logger.info("Pushed %s (%s): Stripe confirmed.", record.customer_id, stripe_id)
    if record.operation == "create" and signals.customer_created.has_listeners(Customer):
        owner = getattr(stored, "owner", None) if owner_mapping.mapping() is not None else None
        signals.customer_created.send(
            sender=Customer, customer_pk=record.customer_id, stripe_id=stripe_id, owner=owner, found=adopted
        )
    signals.customer_pushed.send(sender=Customer, customer_pk=record.customer_id, params=params)
    return PushResult(Outcome.PUSHED, params=params)


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
    PushAttempt.objects.using(attempt._state.db).filter(pk=attempt.pk).update(
        outcome=outcome, finished_at=timezone.now(), **fields
    )


def _note(attempt: PushAttempt, text: str) -> None:
    """A decision the attempt made that is no error of Stripe's, on its row of the sync log."""
    PushAttempt.objects.using(attempt._state.db).filter(pk=attempt.pk).update(
        error_type="local_error", error_code="owner_mismatch", error_message=text
    )


def _failed(record: PendingPush, attempt: PushAttempt, err: StripeError, lease: Lease) -> PushResult:
    err.redact(accounts.configured_secrets())  # what is stored and logged never holds a key
    with transaction.atomic(using=lease.using):
        lease.hold()  # only the holder records what happened
        outcome = _record_failure(record, attempt, err, lease.using)
    if isinstance(outcome, RetryLater):
        raise outcome  # once what happened is stored
    return outcome


def _record_failure(record: PendingPush, attempt: PushAttempt, err: StripeError, using: str) -> PushResult | RetryLater:
    error = err.as_dict()
    customer_pk = record.customer_id
    now = timezone.now()
    customers = Customer.objects.using(using).filter(pk=customer_pk)
    if _in_progress(err):
        # Our own earlier request under this key is still running at Stripe
        # (a worker died waiting for it): wait for it, it is not a failure.
        _finish(attempt, AttemptOutcome.RETRY, err=err)
        return RetryLater(err, max(record.attempts, 1))
    pushes = PendingPush.objects.using(using).filter(pk=record.pk)
    if is_retryable(err):
        pushes.update(attempts=F("attempts") + 1)
        attempts = record.attempts + 1
        if attempts <= app_settings.MAX_RETRIES:
            _finish(attempt, AttemptOutcome.RETRY, err=err)
            customers.note_error(error)
            logger.warning("Push of %s will be retried (attempt %s): %s", customer_pk, attempts, err)
            return RetryLater(err, attempts)
        logger.warning("Push of %s failed after %s attempts: %s", customer_pk, attempts, err)
    _finish(attempt, AttemptOutcome.DELETED if _is_missing(err) else AttemptOutcome.FAILED, err=err)
    pushes.update(state=PushState.FAILED, completed_at=now)
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
    transaction.on_commit(
        lambda: signals.push_failed.send(sender=Customer, customer_pk=customer_pk, error=error), using=using
    )
    return PushResult(outcome, params=record.params or {}, error=error)


def _ended(customer_pk: int, lease: Lease, taken: Taken | None, err: Exception) -> PushResult:
    """End the push that raised ``err`` (``taken``: what its round froze, None before the take), by
    ``ending``'s rules: recorded and returned, or raised for the task to retry."""
    if isinstance(err, Busy) or (isinstance(err, RetryLater) and (taken is None or not isinstance(err, Paused))):
        raise err  # another holder's turn, a pause before the take, or a retry already recorded
    try:
        if ending.database_away(err):
            raise err
        if taken is None:
            outcome = ending.unsent(customer_pk, lease, ending.error_of(err))
            if isinstance(outcome, RetryLater):
                raise outcome from None
            return PushResult(Outcome.FAILED, error=outcome)
        state = ending.state_of(taken.record, lease.using)
        if state != PushState.SENDING:
            # Stored already (the answer, or the failure): a receiver of the push's signals raised.
            logger.error("After the push of %s ended (%s), a receiver raised:", customer_pk, state, exc_info=err)
            if state == PushState.SENT:
                return PushResult(Outcome.PUSHED, params=taken.record.params or {})
            return PushResult(Outcome.FAILED, error=ending.error_on(customer_pk, lease.using))
        if isinstance(err, Paused):
            ending.paused(taken.record, taken.attempt, lease, err)
            raise err
        return _failed(taken.record, taken.attempt, ending.error_of(err), lease)
    except DatabaseError as away:
        if ending.database_away(away):
            away.customersync_lease = lease.owner  # type: ignore[attr-defined]
        raise


def _in_progress(err: StripeError) -> bool:
    return isinstance(err, IdempotencyError) and err.http_status == 409


def _is_missing(err: StripeError) -> bool:
    return err.http_status == 404 and err.code == "resource_missing"


def _confirm_until_stored(
    record: PendingPush, response: dict[str, Any], lease: Lease, *, attempt: PushAttempt, adopted: bool = False
) -> Customer | None:
    """The confirm with the attempt's success, retried while the database is away: Stripe's
    answer is known, so it is not asked again; for at most half the lease, then
    ``DatabaseError`` (the task retries, resuming the lease, and resends the frozen body
    under its key: Stripe replays its answer). Returns the stored customer (None: a late answer)."""
    give_up = time.monotonic() + app_settings.LEASE_SECONDS / 2
    delay = 0.2
    request_id = getattr(response, "request_id", "") or ""
    while True:
        try:
            # The first write after the answer: the database may be gone already.
            return _confirm(record, response, lease, attempt=attempt, request_id=request_id, adopted=adopted)
        except (OperationalError, InterfaceError) as err:
            if time.monotonic() + delay > give_up:
                raise
            logger.warning(
                "Stripe confirmed %s but the database is unavailable; storing its answer again in %.1f s: %s",
                record.customer_id,
                delay,
                type(err).__name__,
            )
            connections[lease.using].close()  # a fresh connection for the next try
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
