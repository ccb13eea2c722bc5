"""The outbox: every change owed to Stripe is a ``PendingPush`` row, and a task is published for it.

A save records its change in the save's own transaction (``record_change``,
the receiver of ``signals.customer_changed``), and the push task is published
when it commits, from a background thread, over a connection that never
retries: a broker outage costs a save nothing, and the sweeper (``sweep``)
publishes again whatever waited too long. Changes made without ``save()`` are
marked in bulk (``mark_for_push``) and published at the rate budget
(``drain``).

Tasks are published by name, so this module never imports the tasks module;
always through a pooled producer (``publish``), a batch of tasks through one.
Celery is imported with the module, not at a first publish: a first import of
Celery racing in several threads can fail with "cannot import name
'current_app'", and a site's threads may all save at once.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import queue
import threading
from typing import Any

from celery import current_app
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..conf import app_settings
from ..models import Customer, PendingPush, PushState, SyncStatus

logger = logging.getLogger("customersync")

PUSH_TASK = "customersync.push_customer"
DRAIN_TASK = "customersync.drain"
SWEEP_TASK = "customersync.sweep"
# Tasks published through one producer, and outbox records stamped by one UPDATE, at most.
PUBLISH_BATCH = 500


def queue_options() -> dict[str, Any]:
    """Routing for the app's tasks: ``CUSTOMERSYNC['QUEUE']``, or the site's default."""
    return {"queue": app_settings.QUEUE} if app_settings.QUEUE else {}


def rate_per_second() -> float:
    """The fleet's push budget, or a nominal 20/s to pace bulk work when the budget is off."""
    return float(app_settings.RATE_LIMIT or 20)


def enqueue(customer_pk: int, *, countdown: float | None = None) -> bool:
    """Publish a push task now; False (logged) when the broker cannot take it."""
    return bool(publish([customer_pk], countdown=countdown))


def publish(customer_pks: list[int], *, countdown: float | None = None) -> list[int]:
    """Publish a push task per customer, in order, through one pooled producer; returns those published.

    The producers come from a pool of this process's own (``producers``), over
    connections that never retry, so a broker outage costs a save milliseconds,
    not Celery's connection retries; the first failure ends the batch (logged),
    its outbox records stay and the sweeper queues them again.
    """
    from kombu.exceptions import LimitExceeded, OperationalError

    options: dict[str, Any] = {"retry": False, **queue_options()}
    if countdown:
        options["countdown"] = countdown
    published: list[int] = []
    try:
        with producers().acquire(block=True, timeout=app_settings.BROKER_TIMEOUT) as producer:
            # Leaving on an error closes the producer's connection (kombu replaces it in the pool).
            for customer_pk in customer_pks:
                current_app.send_task(PUSH_TASK, args=[customer_pk], producer=producer, **options)
                published.append(customer_pk)
    except (OperationalError, OSError, LimitExceeded) as err:
        left = customer_pks[len(published) :]
        logger.warning(
            "Could not queue a push of customer %s%s (%s); it stays in the outbox for the sweeper.",
            left[0],
            f" and {len(left) - 1} more" if len(left) > 1 else "",
            type(err).__name__,
        )
    return published


_producers: dict[int, Any] = {}
_producers_lock = threading.Lock()


def producers() -> Any:
    """This process's pool of producers to the site's broker, over connections that never retry.

    Pooled as Celery pools its own (a publish through it costs a fraction of a
    new connection's), apart from Celery's: those connections retry. One per
    broker URL, and per process: a forked child opens its own and never touches
    its parent's sockets.
    """
    timeout = app_settings.BROKER_TIMEOUT
    connection = current_app.connection_for_write(
        connect_timeout=timeout,
        transport_options={"max_retries": 0, "socket_connect_timeout": timeout, "socket_timeout": timeout},
    )
    pid = os.getpid()
    with _producers_lock:
        group = _producers.get(pid)
        if group is None:
            _producers.clear()  # a parent's pools: dropped, not closed (their sockets are the parent's)
            group = _producers[pid] = _producer_group()
        return group[connection]


def _producer_group() -> Any:
    """Producer pools keyed by their broker connection, each over connections of its own."""
    from kombu import pools

    class Producers(pools.PoolGroup):
        def create(self, connection: Any, limit: int) -> pools.ProducerPool:
            return pools.ProducerPool(connection.Pool(limit=limit), limit=limit)

    return Producers(limit=pools.get_limit(), close_after_fork=False)


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
                batch = [self.queue.get(timeout=1.0)]
            except queue.Empty:
                self.idle.set()
                continue
            while len(batch) < PUBLISH_BATCH:  # what queued meanwhile goes through the same producer
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            publish(batch, countdown=app_settings.COALESCE_SECONDS)
            if self.queue.empty():
                self.idle.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted was published (at exit, in tests)."""
        return self.idle.wait(timeout)


publisher = _Publisher()
atexit.register(publisher.flush, 2.0)


def schedule_push(customer_pk: int, *, using: str | None = None) -> None:
    """Queue a push for when the current transaction (of database ``using``) commits (never for a rollback)."""
    if not app_settings.PUSH_ON_SAVE:
        return
    if app_settings.PUBLISH_IN_BACKGROUND:
        transaction.on_commit(lambda: publisher.submit(customer_pk), using=using)
    else:
        transaction.on_commit(lambda: enqueue(customer_pk, countdown=app_settings.COALESCE_SECONDS), using=using)


def record_change(customer: Customer, queued: bool = True, **kwargs: Any) -> None:
    """Record a change in the outbox (inside the save's transaction, after its write).

    A customer whose push is already queued and not yet started joins it: no
    second record. The save's row lock orders this against the worker's freeze,
    so the queued push is sure to include it. ``queued``: whether a push is
    likely queued (the copy saved was pending), so looked for first; when not,
    the record is written without a look and its task published.

    The record is written with ``ignore_conflicts``: a push queued after all
    (the copy saved was stale, or one was queued between the look and the
    record) keeps its place under the one-queued-push constraint and this
    change joins it; without a look, its task is then one more, which finds
    the customer's push done or under way. Also the receiver of
    ``signals.customer_changed``.
    """
    records = PendingPush.objects.using(customer._state.db)
    if queued and records.queued().filter(customer=customer).exists():
        return
    records.bulk_create([PendingPush(customer=customer, enqueued_at=timezone.now())], ignore_conflicts=True)
    schedule_push(customer.pk, using=customer._state.db)


def mark_for_push(queryset: Any, *, batch_size: int = 1000) -> int:
    """Queue pushes for customers changed without ``save()`` (``QuerySet.update()``, a data migration).

    Writes outbox records in batches without publishing anything; one
    ``customersync.drain`` task then publishes them at the rate budget, so
    the broker never holds more than about a minute of work. Returns how
    many customers have something to send.
    """
    marked = 0
    pks = list(queryset.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(pks), batch_size):
        with transaction.atomic():
            customers = Customer.objects.select_for_update().filter(pk__in=pks[start : start + batch_size])
            changed = [customer.pk for customer in customers if customer.needs_push()]
            waiting = set(
                PendingPush.objects.filter(customer_id__in=changed, state=PushState.PENDING).values_list(
                    "customer_id", flat=True
                )
            )
            PendingPush.objects.bulk_create([PendingPush(customer_id=pk) for pk in changed if pk not in waiting])
            Customer.objects.filter(pk__in=changed).mark_pending()
        marked += len(changed)
    if marked:
        transaction.on_commit(_publish_drain)
    return marked


def _publish_drain() -> None:
    current_app.send_task(DRAIN_TASK, **queue_options())


def drain(limit: int | None = None) -> tuple[int, int]:
    """Publish pushes for outbox records never queued, at most ``limit``; returns (published, left)."""
    limit = limit or max(1, int(rate_per_second() * 60))
    waiting = PendingPush.objects.filter(state=PushState.PENDING, enqueued_at=None)
    pks = list(waiting.order_by("id").values_list("customer_id", flat=True).distinct()[:limit])
    published = _publish_and_stamp(pks, [PushState.PENDING], timezone.now())
    return published, waiting.count()


def _publish_and_stamp(customer_pks: list[int], states: list[str], now: dt.datetime) -> int:
    """Publish the customers' pushes in batches, stamping each batch's outbox records as queued; how many went.

    Published first and stamped after: a process that dies in between leaves
    records the sweeper queues again (a second task for a customer sends nothing twice).
    """
    published = 0
    for start in range(0, len(customer_pks), PUBLISH_BATCH):
        batch = customer_pks[start : start + PUBLISH_BATCH]
        sent = publish(batch)
        if sent:
            PendingPush.objects.filter(customer_id__in=sent, state__in=states).update(enqueued_at=now)
            published += len(sent)
        if len(sent) < len(batch):
            break  # the broker is away: the rest waits for the sweeper
    return published


def request_push(customer: Customer) -> bool:
    """Ask for a push now (admin action, button): an outbox record and a task on commit."""
    if not customer.stripe_id or customer.sync_status == SyncStatus.DELETED:
        return False
    with transaction.atomic():
        Customer.objects.filter(pk=customer.pk).retry_failed()
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
    pks = sorted(set(waiting.values_list("customer_id", flat=True)))
    queued = _publish_and_stamp(pks, [PushState.PENDING, PushState.SENDING], now)
    if queued:
        logger.info("Sweeper queued %s customer(s) whose pushes were waiting.", queued)
    return queued
