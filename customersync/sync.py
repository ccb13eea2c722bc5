"""The orchestration every entry point calls: tasks, commands and admin actions.

A push, for one customer:

1. takes the customer's lease (``PushLease``): at most one request per
   customer is in flight, across every worker process;
2. takes the pending work: a record frozen by an earlier attempt that did not
   finish (resent as it is, under the same idempotency key), or else the diff
   of the customer's current state against the last state Stripe confirmed,
   frozen on the newest outbox record (older ones join it);
3. sends it, logging one ``PushAttempt`` per request;
4. stores Stripe's answer as the confirmed state, keeping edits made while
   the request was in flight (they have their own outbox record and task).

Retryable failures (network, 409, 429, 5xx, ``Stripe-Should-Retry: true``)
raise ``RetryLater``; the caller retries with backoff and the record keeps
its frozen params and key. Others mark the customer failed or deleted.
"""

from __future__ import annotations

import atexit
import datetime as dt
import enum
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError

from . import ratelimit, signals
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
from .models import (
    AttemptOutcome,
    Conflict,
    Customer,
    PendingPush,
    PullCursor,
    PushAttempt,
    PushLease,
    PushState,
    Resolution,
    SyncStatus,
    WebhookEvent,
)
from .wire import encode, flatten

logger = logging.getLogger("customersync")

# Values never written to logs or the sync log as they are (card and bank tokens).
_REDACTED_PARAMS = frozenset({"source", "card", "bank_account"})
# Rounds of push within one lease: picks up edits made during the previous request.
_MAX_ROUNDS = 3


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


class Busy(Exception):
    """Another worker holds this customer's lease; try again shortly."""


class RetryLater(Exception):
    """A retryable error; the frozen record will be resent under the same key."""

    def __init__(self, error: StripeError, attempts: int) -> None:
        self.error = error
        self.attempts = attempts
        super().__init__(str(error))


def is_retryable(err: StripeError) -> bool:
    """Stripe's rules: obey Stripe-Should-Retry, else retry network, 409, 429 and 5xx."""
    if err.should_retry is not None:
        return err.should_retry
    if isinstance(err, (APIConnectionError, RateLimitError)):
        return True
    if isinstance(err, IdempotencyError) and err.http_status == 409:
        return True
    # 5xx, and a 2xx whose body was cut off: resending under the same key
    # replays Stripe's answer, so it is safe.
    status = err.http_status
    return isinstance(err, APIError) and (status is None or status >= 500 or status < 300)


def redact(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with token values replaced, for logs and the sync log."""
    return {key: "[redacted]" if key in _REDACTED_PARAMS else value for key, value in params.items()}


def loggable(params: dict[str, Any]) -> str:
    """The exact request body for ``params``, with token values redacted."""
    return "&".join(
        f"{quote_plus(key, safe='[]')}="
        + ("[redacted]" if key.split("[", 1)[0] in _REDACTED_PARAMS else quote_plus(value, safe=""))
        for key, value in flatten(params)
    )


# -- queueing --------------------------------------------------------------


def enqueue(customer_pk: int, *, countdown: float | None = None) -> bool:
    """Publish a push task now; False (logged) when the broker cannot take it.

    Publishes over a connection of its own that does not retry, so a broker
    outage costs a save milliseconds, not Celery's connection retries; the
    outbox record stays and the sweeper queues it again.
    """
    from .tasks import push_customer

    options: dict[str, Any] = {"retry": False, **_queue_options()}
    if countdown:
        options["countdown"] = countdown
    try:
        with push_customer.app.connection_for_write(connect_timeout=app_settings.BROKER_TIMEOUT) as conn:
            conn.transport_options = {
                **conn.transport_options,
                "max_retries": 0,
                "socket_connect_timeout": app_settings.BROKER_TIMEOUT,
                "socket_timeout": app_settings.BROKER_TIMEOUT,
            }
            push_customer.apply_async(args=[customer_pk], connection=conn, **options)
    except (OperationalError, OSError) as err:
        logger.warning(
            "Could not queue a push of customer %s (%s); it stays in the outbox for the sweeper.",
            customer_pk,
            type(err).__name__,
        )
        return False
    return True


class _Publisher:
    """Publishes push tasks from a background thread, in order, so a save never waits on the broker."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.pid = 0
        self.lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()

    def submit(self, customer_pk: int) -> None:
        with self.lock:
            if self.pid != os.getpid():  # first use in this process (or after a fork)
                self.queue = queue.SimpleQueue()
                self.pid = os.getpid()
                threading.Thread(target=self._run, name="customersync-publisher", daemon=True).start()
            self.idle.clear()
            self.queue.put(customer_pk)

    def _run(self) -> None:
        while True:
            try:
                customer_pk = self.queue.get(timeout=1.0)
            except queue.Empty:
                self.idle.set()
                continue
            enqueue(customer_pk, countdown=app_settings.COALESCE_SECONDS)
            if self.queue.empty():
                self.idle.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted was published (at exit, in tests)."""
        return self.idle.wait(timeout)


publisher = _Publisher()
atexit.register(publisher.flush, 2.0)


def schedule_push(customer_pk: int) -> None:
    """Queue a push for when the current transaction commits (never for a rollback)."""
    if not app_settings.PUSH_ON_SAVE:
        return
    if app_settings.PUBLISH_IN_BACKGROUND:
        transaction.on_commit(lambda: publisher.submit(customer_pk))
    else:
        transaction.on_commit(lambda: enqueue(customer_pk, countdown=app_settings.COALESCE_SECONDS))


def record_change(customer: Customer) -> None:
    """Record a change in the outbox (inside the save's transaction, after its write).

    A customer whose push is already queued and not yet started joins it: no
    second record, no second task. The save's row lock orders this check
    against the worker's freeze, so the queued push is sure to include it.
    """
    if PendingPush.objects.filter(customer=customer, state=PushState.PENDING).exists():
        return
    PendingPush.objects.create(customer=customer, enqueued_at=timezone.now())
    schedule_push(customer.pk)


def mark_for_push(queryset: Any, *, batch_size: int = 1000) -> int:
    """Queue pushes for customers changed without ``save()`` (``QuerySet.update()``, a data migration).

    Writes outbox records in batches without publishing anything; one
    ``customersync.drain`` task then publishes them at the rate budget, so
    the broker never holds more than about a minute of work. Returns how
    many customers have something to send.
    """
    from .tasks import drain

    marked = 0
    pks = list(queryset.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(pks), batch_size):
        with transaction.atomic():
            customers = list(Customer.objects.select_for_update().filter(pk__in=pks[start : start + batch_size]))
            changed = []
            for customer in customers:
                if customer.sync_status == SyncStatus.DELETED:
                    continue
                try:
                    if customer.stripe_id and not customer.pending_params():
                        continue
                except ParamError:
                    pass  # the push records the error on the customer
                changed.append(customer.pk)
            waiting = set(
                PendingPush.objects.filter(customer_id__in=changed, state=PushState.PENDING).values_list(
                    "customer_id", flat=True
                )
            )
            PendingPush.objects.bulk_create([PendingPush(customer_id=pk) for pk in changed if pk not in waiting])
            Customer.objects.filter(pk__in=changed).exclude(sync_status=SyncStatus.FAILED).update(
                sync_status=SyncStatus.PENDING
            )
        marked += len(changed)
    if marked:
        transaction.on_commit(lambda: drain.apply_async(**_queue_options()))
    return marked


def drain(limit: int | None = None) -> tuple[int, int]:
    """Publish pushes for outbox records never queued, at most ``limit``; returns (published, left)."""
    rate = float(app_settings.RATE_LIMIT or 20)
    limit = limit or max(1, int(rate * 60))
    waiting = PendingPush.objects.filter(state=PushState.PENDING, enqueued_at=None)
    pks = list(waiting.order_by("id").values_list("customer_id", flat=True).distinct()[:limit])
    published = 0
    for customer_pk in pks:
        if enqueue(customer_pk):
            PendingPush.objects.filter(customer_id=customer_pk, state=PushState.PENDING).update(
                enqueued_at=timezone.now()
            )
            published += 1
    return published, waiting.count()


def _queue_options() -> dict[str, Any]:
    return {"queue": app_settings.QUEUE} if app_settings.QUEUE else {}


def request_push(customer: Customer) -> bool:
    """Ask for a push now (admin action, button): an outbox record and a task on commit."""
    if not customer.stripe_id or customer.sync_status == SyncStatus.DELETED:
        return False
    with transaction.atomic():
        if customer.sync_status == SyncStatus.FAILED:
            Customer.objects.filter(pk=customer.pk).update(sync_status=SyncStatus.PENDING)
        record_change(customer)
    return True


def sweep(older_than: float | None = None) -> int:
    """Queue again every customer whose outbox records waited longer than ``older_than`` seconds."""
    wait = app_settings.SWEEP_AFTER if older_than is None else older_than
    now = timezone.now()
    cutoff = now - dt.timedelta(seconds=wait)
    waiting = PendingPush.objects.filter(state__in=[PushState.PENDING, PushState.SENDING]).filter(
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lte=cutoff)
    )
    queued = 0
    for customer_pk in sorted(set(waiting.values_list("customer_id", flat=True))):
        if enqueue(customer_pk):
            PendingPush.objects.filter(
                customer_id=customer_pk, state__in=[PushState.PENDING, PushState.SENDING]
            ).update(enqueued_at=now)
            queued += 1
    if queued:
        logger.info("Sweeper queued %s customer(s) whose pushes were waiting.", queued)
    return queued


# -- the lease -------------------------------------------------------------


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


# -- the push --------------------------------------------------------------


def push(customer_pk: int, *, client: StripeClient | None = None) -> PushResult:
    """Send the customer's pending changes to Stripe and record what happened.

    Raises ``Busy`` when another worker is pushing this customer and
    ``RetryLater`` after a retryable error.
    """
    if not Customer.objects.filter(pk=customer_pk).exists():
        return PushResult(Outcome.SKIPPED)
    lease = Lease(customer_pk).acquire()
    try:
        result = PushResult(Outcome.NOTHING)
        for _ in range(_MAX_ROUNDS):
            record, early = _take(customer_pk)
            if record is None:
                # A later round with nothing left does not hide what was pushed.
                return result if result.outcome is Outcome.PUSHED else (early or result)
            client = client or StripeClient.from_settings()
            result = _send(record, client)
            if result.outcome is not Outcome.PUSHED:
                return result
        return result
    finally:
        lease.release()


def _take(customer_pk: int) -> tuple[PendingPush | None, PushResult | None]:
    """The record to send now, frozen; or None and the result when there is nothing to send."""
    now = timezone.now()
    with transaction.atomic():
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
            Customer.objects.filter(pk=customer_pk).update(sync_status=SyncStatus.FAILED, sync_error=error)
            return None, PushResult(Outcome.FAILED, error=error)
        if not params and not creating:
            records.filter(state=PushState.PENDING).update(state=PushState.NOTHING, completed_at=now)
            if customer.sync_status == SyncStatus.PENDING:
                Customer.objects.filter(pk=customer_pk).update(sync_status=SyncStatus.IN_SYNC, sync_error=None)
            return None, PushResult(Outcome.NOTHING)
        record = pending[-1] if pending else PendingPush.objects.create(customer=customer, enqueued_at=now)
        records.filter(state=PushState.PENDING).exclude(pk=record.pk).update(
            state=PushState.SUPERSEDED, superseded_by=record, completed_at=now
        )
        record.state = PushState.SENDING
        record.operation = "create" if creating else "update"
        record.params = params
        record.body = encode(params)
        record.sent_state = customer.desired_state()
        record.sent_once = dict(customer.pending_once or {})
        record.frozen_at = now
        record.save(update_fields=["state", "operation", "params", "body", "sent_state", "sent_once", "frozen_at"])
    return record, None


def _send(record: PendingPush, client: StripeClient) -> PushResult:
    stripe_id = Customer.objects.filter(pk=record.customer_id).values_list("stripe_id", flat=True).get()
    params = record.params or {}
    attempt = PushAttempt.objects.create(
        push=record, customer_id=record.customer_id, params=redact(params), idempotency_key=record.idempotency_key
    )
    limiter = ratelimit.budget()
    if limiter is not None:
        limiter.acquire()  # the fleet's budget: blocks until this request may go
    try:
        if record.operation == "create":
            # Its own key, from the record: a retried create never makes two customers.
            logger.info("Creating %s: POST /v1/customers %s", record.customer_id, loggable(params))
            response = client.create_customer(body=record.body, idempotency_key=record.idempotency_key)
            stripe_id = response.get("id")
        else:
            logger.info("Pushing %s: POST /v1/customers/%s %s", record.customer_id, stripe_id, loggable(params))
            response = client.update_customer(stripe_id, body=record.body, idempotency_key=record.idempotency_key)
    except StripeError as err:
        if limiter is not None and isinstance(err, RateLimitError) and err.code != "lock_timeout":
            limiter.penalize(app_settings.RATE_LIMIT_PAUSE)  # slow the whole fleet, not just this worker
        return _failed(record, attempt, err)
    _finish(attempt, AttemptOutcome.SUCCEEDED, http_status=200, request_id=client.last_request_id or "")
    _confirm(record, response)
    logger.info("Pushed %s (%s): Stripe confirmed.", record.customer_id, stripe_id)
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
    PushAttempt.objects.filter(pk=attempt.pk).update(outcome=outcome, finished_at=timezone.now(), **fields)


def _failed(record: PendingPush, attempt: PushAttempt, err: StripeError) -> PushResult:
    error = err.as_dict()
    customer_pk = record.customer_id
    now = timezone.now()
    if _in_progress(err):
        # Our own earlier request under this key is still running at Stripe
        # (a worker died waiting for it): wait for it, it is not a failure.
        _finish(attempt, AttemptOutcome.RETRY, err=err)
        raise RetryLater(err, max(record.attempts, 1))
    if is_retryable(err):
        PendingPush.objects.filter(pk=record.pk).update(attempts=F("attempts") + 1)
        attempts = record.attempts + 1
        if attempts <= app_settings.MAX_RETRIES:
            _finish(attempt, AttemptOutcome.RETRY, err=err)
            Customer.objects.filter(pk=customer_pk).update(sync_error=error)
            logger.warning("Push of %s will be retried (attempt %s): %s", customer_pk, attempts, err)
            raise RetryLater(err, attempts)
        logger.warning("Push of %s failed after %s attempts: %s", customer_pk, attempts, err)
    _finish(attempt, AttemptOutcome.DELETED if _is_missing(err) else AttemptOutcome.FAILED, err=err)
    PendingPush.objects.filter(pk=record.pk).update(state=PushState.FAILED, completed_at=now)
    if _is_missing(err):
        logger.warning("Customer %s no longer exists in Stripe.", customer_pk)
        status, outcome = SyncStatus.DELETED, Outcome.DELETED
    else:
        if isinstance(err, (AuthenticationError, PermissionDeniedError)):
            logger.error("Stripe refused the API key configured in CUSTOMERSYNC['API_KEY']: %s", err)
        elif not is_retryable(err):
            logger.warning("Push of %s failed: %s", customer_pk, err)
        status, outcome = SyncStatus.FAILED, Outcome.FAILED
    Customer.objects.filter(pk=customer_pk).update(sync_status=status, sync_error=error)
    signals.push_failed.send(sender=Customer, customer_pk=customer_pk, error=error)
    return PushResult(outcome, params=record.params or {}, error=error)


def _in_progress(err: StripeError) -> bool:
    return isinstance(err, IdempotencyError) and err.http_status == 409


def _is_missing(err: StripeError) -> bool:
    return err.http_status == 404 and err.code == "resource_missing"


def _confirm(record: PendingPush, response: dict[str, Any]) -> None:
    """Store Stripe's answer as the confirmed state, keeping edits made meanwhile."""
    now = timezone.now()
    with transaction.atomic():
        customer = Customer.objects.select_for_update().get(pk=record.customer_id)
        customer.merge_remote(response, base=record.sent_state, at=now)
        sent_once = record.sent_once or {}
        customer.pending_once = {
            k: v for k, v in (customer.pending_once or {}).items() if k not in sent_once or sent_once[k] != v
        }
        customer.last_pushed_at = now
        try:
            still_pending = bool(customer.pending_params())
        except ParamError:
            still_pending = True
        customer.sync_status = SyncStatus.PENDING if still_pending else SyncStatus.IN_SYNC
        customer.sync_error = None
        customer.save_synced()
        PendingPush.objects.filter(pk=record.pk).update(state=PushState.SENT, completed_at=now)
        if still_pending:
            record_change(customer)  # joins the queued push an in-flight edit already made, if any


# -- pull ------------------------------------------------------------------


@dataclass
class PullStats:
    created: int = 0
    updated: int = 0
    kept_local: int = 0
    conflicts: int = 0
    deleted: int = 0
    pages: int = 0

    @property
    def pulled(self) -> int:
        return self.created + self.updated


class _Pacer:
    """At most ``rate`` requests per second from this process (a pull is sequential)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self.next_at = 0.0

    def wait(self) -> None:
        now = time.monotonic()
        if now < self.next_at:
            time.sleep(self.next_at - now)
        self.next_at = max(now, self.next_at) + self.interval


def pull(
    *,
    client: StripeClient | None = None,
    page_size: int | None = None,
    progress: Callable[[PullStats], None] | None = None,
    since: dt.datetime | None = None,
    limit: int | None = None,
    resume: bool = False,
    cursor: str = "customersync_pull",
) -> PullStats:
    """Import or refresh customers of the account, page by page, resumably.

    A walk of the whole account (no ``since``, no ``limit``) also marks local
    customers it did not meet as deleted in Stripe.
    """
    client = client or StripeClient.from_settings()
    stats = PullStats()
    page_size = page_size or app_settings.PAGE_SIZE
    state = PullCursor.objects.filter(name=cursor).first() if resume else None
    if state is None:
        state = PullCursor(name=cursor, started_at=timezone.now(), complete_walk=since is None and limit is None)
        state.save()
    created = {"gte": int(since.timestamp())} if since else None
    pacer = _Pacer(app_settings.PULL_RATE)
    starting_after = state.starting_after or None
    remaining = limit
    while remaining is None or remaining > 0:
        pacer.wait()
        size = min(page_size, remaining) if remaining is not None else page_size
        page = client.list_customers(limit=size, starting_after=starting_after, created=created)
        data = page.get("data") or []
        if data:
            _store_page(data, stats)
            starting_after = data[-1]["id"]
            PullCursor.objects.filter(name=cursor).update(starting_after=starting_after, pulled=F("pulled") + len(data))
        stats.pages += 1
        if remaining is not None:
            remaining -= len(data)
        if progress:
            progress(stats)
        if not page.get("has_more") or not data:
            break
    if state.complete_walk and (remaining is None):
        # Not met in a whole walk: gone from Stripe. Customers confirmed after
        # the walk began (a create pushed meanwhile) may not be listed yet.
        stats.deleted = (
            Customer.objects.exclude(stripe_id=None)
            .exclude(sync_status=SyncStatus.DELETED)
            .filter(Q(last_pulled_at__lt=state.started_at) | Q(last_pulled_at=None))
            .exclude(confirmed_at__gte=state.started_at)
            .update(sync_status=SyncStatus.DELETED)
        )
    PullCursor.objects.filter(name=cursor).delete()
    return stats


def pull_one(stripe_id: str, *, client: StripeClient | None = None) -> Customer:
    """Refresh one customer from Stripe."""
    client = client or StripeClient.from_settings()
    _store_page([client.retrieve_customer(stripe_id)], PullStats())
    return Customer.objects.get(stripe_id=stripe_id)


_BULK_FIELDS = [f.name for f in Customer._meta.concrete_fields if not f.primary_key]


def _store_page(
    objects: Iterable[dict[str, Any]], stats: PullStats, *, at: dt.datetime | None = None, source: str = "pull"
) -> None:
    """Write customers from Stripe in a constant number of queries, keeping local edits."""
    now = timezone.now()
    objects = list(objects)
    remote_wins = app_settings.CONFLICT_POLICY == "remote_wins"
    with transaction.atomic():
        existing = {
            c.stripe_id: c
            for c in Customer.objects.select_for_update().filter(stripe_id__in=[o["id"] for o in objects])
        }
        new: list[Customer] = []
        changed: list[Customer] = []
        conflicts: list[Conflict] = []
        gone: list[int] = []
        for obj in objects:
            customer = existing.get(obj["id"])
            if obj.get("deleted"):
                if customer is not None:
                    gone.append(customer.pk)
                continue
            if customer is None:
                customer = Customer()
                new.append(customer)
            else:
                changed.append(customer)
            merge = customer.merge_remote(obj, base=customer.stripe_data, remote_wins=remote_wins, at=at or now)
            stats.kept_local += bool(merge.kept)
            resolution = Resolution.REMOTE_WINS if remote_wins else Resolution.LOCAL_WINS
            conflicts += [
                Conflict(customer=customer, param=param, local_value=mine, remote_value=theirs, source=source,
                         resolution=resolution)
                for param, mine, theirs in merge.conflicts
            ]  # fmt: skip
            customer.last_pulled_at = now
            try:
                pending = bool(customer.pending_params())
            except ParamError:
                pending = True
            if customer.sync_status == SyncStatus.DELETED and customer.pk:
                customer.sync_status = SyncStatus.IN_SYNC  # it exists after all
            if not pending:
                customer.sync_status, customer.sync_error = SyncStatus.IN_SYNC, None
            elif customer.sync_status != SyncStatus.FAILED:
                customer.sync_status = SyncStatus.PENDING
        if new:
            Customer.objects.bulk_create(new)
        if changed:
            Customer.objects.bulk_update(changed, _BULK_FIELDS)
        if conflicts:
            Conflict.objects.bulk_create(conflicts)
        if gone:
            Customer.objects.filter(pk__in=gone).update(sync_status=SyncStatus.DELETED, last_pulled_at=now)
    stats.created += len(new)
    stats.updated += len(changed) + len(gone)
    stats.conflicts += len(conflicts)


# -- webhooks --------------------------------------------------------------

CUSTOMER_EVENTS = frozenset({"customer.created", "customer.updated", "customer.deleted"})


def handle_event(event: dict[str, Any]) -> str:
    """Apply a (verified) Stripe event to the mirror, once; returns what was done."""
    obj = (event.get("data") or {}).get("object") or {}
    created = dt.datetime.fromtimestamp(int(event.get("created") or 0), tz=dt.timezone.utc)
    key = str((event.get("request") or {}).get("idempotency_key") or "")
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = WebhookEvent.objects.create(
                    event_id=str(event.get("id")),
                    type=str(event.get("type")),
                    stripe_id=str(obj.get("id") or ""),
                    created=created,
                    outcome="received",
                    idempotency_key=key,
                )
        except IntegrityError:
            return "duplicate"
        outcome = _apply_event(str(event.get("type")), obj, created, key)
        WebhookEvent.objects.filter(pk=record.pk).update(outcome=outcome)
    logger.info("Webhook %s %s for %s: %s", event.get("type"), event.get("id"), obj.get("id"), outcome)
    return outcome


def _apply_event(kind: str, obj: dict[str, Any], created: dt.datetime, key: str) -> str:
    if kind not in CUSTOMER_EVENTS or obj.get("object") != "customer" or not obj.get("id"):
        return "ignored"
    customer = Customer.objects.select_for_update().filter(stripe_id=obj["id"]).first()
    # Events carry whole seconds: only an event from an earlier second is stale.
    if customer and customer.confirmed_at and created < customer.confirmed_at.replace(microsecond=0):
        return "out of order"
    if kind == "customer.deleted":
        if customer is None:
            return "ignored"
        Customer.objects.filter(pk=customer.pk).update(sync_status=SyncStatus.DELETED, confirmed_at=created)
        return "deleted"
    stats = PullStats()
    _store_page([obj], stats, at=created, source="webhook")
    if _is_own_key(key):
        return "echo"  # our own push, seen by Stripe: confirmed state refreshed, nothing sent back
    return "created" if stats.created else "applied"


def _is_own_key(key: str) -> bool:
    if not key.startswith("customersync-"):
        return False
    try:
        record_key = uuid.UUID(key.removeprefix("customersync-"))
    except ValueError:
        return False
    return PendingPush.objects.filter(key=record_key).exists()


# -- deletion ----------------------------------------------------------------


def customer_deleted(sender: type, instance: Customer, **kwargs: Any) -> None:
    """post_delete: delete in Stripe too when CUSTOMERSYNC['DELETE_IN_STRIPE'] says so (on commit)."""
    stripe_id = instance.stripe_id
    if not stripe_id or not app_settings.DELETE_IN_STRIPE:
        return

    def delete() -> None:
        try:
            StripeClient.from_settings().delete_customer(stripe_id)
            logger.info("Deleted %s in Stripe.", stripe_id)
        except StripeError as err:
            logger.error("Could not delete %s in Stripe: %s", stripe_id, err)

    transaction.on_commit(delete)
