"""How a push ends when something is raised between its lease and its confirm: the one rule.

``send.push`` catches whatever its rounds raise (any exception, not a list of
them) in one place and ends the push by this module's rules, so that no
record is ever left ``sending`` without an error and nothing but a retry
reaches the task:

- a request frozen and not yet answered for (the record ``sending``): the
  record retried under its key or failed by the rule for Stripe's errors
  (``send``'s), the error on the customer and on the attempt in the sync log;
- nothing frozen (``unsent``): the open records kept for a retry, or failed,
  the customer showing the error, and the sync log an attempt that sent nothing;
- the answer already stored, or the failure already recorded (a receiver of
  the push's signals raised): that outcome stands and the exception is logged.

What is retried and what fails (``error_of``):

- Stripe's errors: Stripe's rules (``exceptions.is_retryable``);
- a connection that failed outside the client (``OSError``, the rate
  budget's Redis away), or the worker's soft time limit: retried with
  backoff, up to ``MAX_RETRIES``;
- a pause after a 429 (``Paused``): handed back with its countdown, not
  counted as a failure;
- the database away (``database_away``): raised with the lease's owner, and
  the task retries, resuming the lease;
- anything else fails at once, not retried: an answer whose values cannot be
  read (a malformed 200: a ``created`` that is no timestamp, a search whose
  ``data`` is no list) is replayed as it was under the same idempotency key;
  a setting that cannot make a client (a platform removed from settings, an
  account id that is not one) comes back only with a deploy, later than any
  backoff; a bug fails the same way again. The customer shows it (the
  exception's type and message) until it is pushed again, by
  ``customersync_push`` or the admin, once the cause is fixed.

Every error stored is redacted of the keys and webhook secrets configured and
of anything shaped like a Stripe secret (``core.redaction``).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
    transaction,
)
from django.db.models import F
from django.utils import timezone

from .. import accounts, signals
from ..conf import app_settings
from ..exceptions import AttemptError, ConfigurationError, Paused, RetryLater, StripeError, is_retryable
from ..models import AttemptOutcome, Customer, PendingPush, PushAttempt, PushState
from .lease import Lease

logger = logging.getLogger("customersync")

OPEN = (PushState.PENDING, PushState.SENDING)
# Database errors that say the statement, not the database, is wrong: the same again would fail again.
_STATEMENT_ERRORS = (DataError, IntegrityError, ProgrammingError, NotSupportedError)


def database_away(err: BaseException) -> bool:
    """Whether ``err`` is the database going away (or its transaction lost), which a retry outlives."""
    return isinstance(err, DatabaseError) and not isinstance(err, _STATEMENT_ERRORS)


def _transient() -> tuple[type[BaseException], ...]:
    """What a retry outlives: a connection that failed outside the client (the network's, the rate
    budget's Redis), and the worker's soft time limit cutting a slow push short."""
    from billiard.exceptions import SoftTimeLimitExceeded

    try:
        from redis import exceptions as redis_errors
    except ImportError:
        return (OSError, SoftTimeLimitExceeded)
    return (OSError, SoftTimeLimitExceeded, redis_errors.ConnectionError, redis_errors.TimeoutError)


def error_of(err: BaseException) -> StripeError:
    """What ``err`` is stored as, redacted: a ``StripeError`` as it is; anything else as an
    ``AttemptError`` with its type and message, retried only when it is a connection that failed."""
    if not isinstance(err, StripeError):
        name = type(err).__name__
        retry = isinstance(err, _transient())
        if isinstance(err, ConfigurationError):
            code = "configuration_error"
        else:
            code = "connection_error" if retry else "unexpected_error"
        err = AttemptError(f"{name}: {err}" if str(err) else name, type=name, code=code, should_retry=retry)
    return err.redact(accounts.configured_secrets())


def attempt_fields(err: StripeError) -> dict[str, Any]:
    """The sync log's columns for ``err``."""
    return {
        "http_status": err.http_status,
        "request_id": err.request_id or "",
        "error_type": err.type or type(err).__name__,
        "error_code": err.code or "",
        "error_param": err.param or "",
        "error_message": err.message,
    }


def unsent(customer_pk: int, lease: Lease, err: StripeError) -> dict[str, Any] | RetryLater:
    """End a push that raised before anything was frozen: the error to return (the customer failed, its
    open records too), or the ``RetryLater`` to raise (the latest open record counts the attempt)."""
    using, now = lease.using, timezone.now()
    error = err.as_dict()
    customers = Customer.objects.using(using).filter(pk=customer_pk)
    with transaction.atomic(using=using):
        lease.hold()  # only the holder records what happened
        records = PendingPush.objects.using(using).filter(customer_id=customer_pk, state__in=OPEN)
        record = records.order_by("-id").first()
        if record is not None and is_retryable(err):
            records.filter(pk=record.pk).update(attempts=F("attempts") + 1)
            if record.attempts + 1 <= app_settings.MAX_RETRIES:
                customers.note_error(error)
                logger.warning("Push of %s will be retried (attempt %s): %s", customer_pk, record.attempts + 1, err)
                return RetryLater(err, record.attempts + 1)
        if record is not None:
            # Nothing was sent: the sync log says so (no params, no status) and why.
            PushAttempt(
                push=record,
                customer_id=customer_pk,
                idempotency_key=record.idempotency_key,
                outcome=AttemptOutcome.FAILED,
                finished_at=now,
                **attempt_fields(err),
            ).save(using=using, force_insert=True)
        records.update(state=PushState.FAILED, completed_at=now)
        customers.mark_failed(error)
        logger.error("Push of %s failed before anything was sent: %s", customer_pk, err)
        transaction.on_commit(
            lambda: signals.push_failed.send(sender=Customer, customer_pk=customer_pk, error=error), using=using
        )
    return error


def paused(record: PendingPush, attempt: PushAttempt, lease: Lease, pause: Paused) -> None:
    """Record a pause that began after the take, before the request went: nothing was sent, the
    record stays frozen for the retry (under its key), and the attempt and the customer say why."""
    with transaction.atomic(using=lease.using):
        lease.hold()
        PushAttempt.objects.using(lease.using).filter(pk=attempt.pk).update(
            outcome=AttemptOutcome.RETRY, finished_at=timezone.now(), **attempt_fields(pause.error)
        )
        Customer.objects.using(lease.using).filter(pk=record.customer_id).note_error(pause.error.as_dict())


def state_of(record: PendingPush, using: str) -> str | None:
    """The record's state as stored (None: it is gone)."""
    return PendingPush.objects.using(using).filter(pk=record.pk).values_list("state", flat=True).first()


def error_on(customer_pk: int, using: str) -> dict[str, Any] | None:
    """The error stored on the customer."""
    return Customer.objects.using(using).filter(pk=customer_pk).values_list("sync_error", flat=True).first()
