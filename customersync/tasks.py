"""Celery tasks: thin wrappers that take a primary key and call the module of their job.

The push task acknowledges late and is rejected (requeued) when the worker is
lost, whatever the site's defaults: a push is only done when it ran. Whatever
the push raises is one of the retries below (another worker's lease, a pause
after a 429, a retryable error, the database away): every other failure ends
recorded on the customer by the push itself.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import shared_task
from django.db import DatabaseError

from .exceptions import Busy, ConfigurationError, Paused, RetryLater, StripeError
from .pull import catchup
from .push import outbox, send

logger = logging.getLogger("customersync")


def backoff(failed_attempts: int) -> float:
    """Stripe's SDK backoff: min(0.5 * 2**(n-1), 5) s, jitter in [0.5, 1], never under 0.5 s."""
    delay = min(0.5 * 2 ** max(failed_attempts - 1, 0), 5.0)
    return max(0.5, delay * random.uniform(0.5, 1.0))


@shared_task(
    bind=True,
    name=outbox.PUSH_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # bounded by CUSTOMERSYNC["MAX_RETRIES"] on the outbox record
)
def push_customer(self, customer_pk: int, resume: str | None = None) -> str:
    """Push one customer's pending changes to Stripe.

    ``resume``: the lease a run that lost the database held, taken up again at once.
    """
    try:
        return send.push(customer_pk, resume=resume).outcome.value
    except Busy:
        # Another worker is pushing this customer; its turn comes shortly.
        raise self.retry(countdown=random.uniform(0.2, 1.0)) from None
    except Paused as paused:
        # The account's budget is paused after a 429: back once the pause is over, holding no
        # worker meanwhile (the jitter spreads the account's queued pushes over the budget).
        raise self.retry(countdown=paused.seconds + random.uniform(0.0, 0.5)) from None
    except RetryLater as later:
        raise self.retry(countdown=backoff(later.attempts)) from None
    except DatabaseError as err:
        # Not acknowledged as done: retried (resuming the lease) once the database is back,
        # without waiting for the sweeper. A run that failed before taking the lease up
        # again (the database still away) passes on the lease it was given.
        resumed = {"resume": getattr(err, "customersync_lease", None) or resume}
        raise self.retry(countdown=backoff(self.request.retries + 1), args=[customer_pk], kwargs=resumed) from None


@shared_task(bind=True, name=outbox.DRAIN_TASK, acks_late=True, ignore_result=True)
def drain(self) -> int:
    """Publish pushes marked in bulk, a minute of the rate budget at a time, until none are left."""
    published, left = outbox.drain()
    if left:
        self.apply_async(countdown=max(1.0, published / outbox.rate_per_second()), **outbox.queue_options())
    return published


@shared_task(name=outbox.SWEEP_TASK, acks_late=True, ignore_result=True)
def sweep() -> int:
    """Queue again the pushes that waited too long (broker outage, lost message)."""
    return outbox.sweep()


CATCH_UP_TASK = "customersync.catch_up"
RECONCILE_TASK = "customersync.reconcile"


def _accounts(account: int | None) -> list[int | None]:
    """``account``, or every account (None: the default platform's own, when its key is set)."""
    from .conf import app_settings
    from .models import Account

    if account is not None:
        return [account]
    found: list[int | None] = [None] if app_settings.get("API_KEY") else []
    return found + list(Account.objects.order_by("pk").values_list("pk", flat=True))


@shared_task(bind=True, name=CATCH_UP_TASK)
def catch_up(self, account: int | None = None, every: bool = True) -> dict[str, Any] | None:
    """Apply Stripe's customer events after each account's cursor (``account``: its pk; ``every``
    with no ``account``: one task per account, the default platform's own included). Also starts a
    reconcile of an account when ``CUSTOMERSYNC['RECONCILE_EVERY']`` has passed since its last one."""
    if account is None and every:
        for pk in _accounts(None):
            self.apply_async(kwargs={"account": pk, "every": False}, **outbox.queue_options())
        return None
    try:
        stats = catchup.catch_up(account)
    except catchup.CursorHeld:
        return {"busy": True}
    except Paused as paused:
        raise self.retry(countdown=paused.seconds + random.uniform(0.0, 0.5)) from None
    except (StripeError, ConfigurationError) as err:
        # The cursor stays after the last event applied: the next run (beat) goes on from there.
        logger.error("Catch-up of %s stopped: %s", account or "the default platform's own account", err)
        return {"error": str(err)}
    if catchup.reconcile_due(account):
        reconcile.apply_async(kwargs={"account": account}, **outbox.queue_options())
    return {"applied": stats.applied, "skipped": stats.skipped, "outcomes": stats.outcomes}


@shared_task(bind=True, name=RECONCILE_TASK)
def reconcile(self, account: int | None = None) -> dict[str, int] | None:
    """Walk an account's customers and bring the mirror to Stripe (``account``: its pk; None: the
    default platform's own); an interrupted walk resumes."""
    try:
        stats = catchup.reconcile(account)
    except catchup.CursorHeld:
        return None
    except Paused as paused:
        raise self.retry(countdown=paused.seconds + random.uniform(0.0, 0.5)) from None
    except (StripeError, ConfigurationError) as err:
        logger.error("Reconcile of %s stopped: %s", account or "the default platform's own account", err)
        return None
    return {"seen": stats.seen, "drifted": stats.drifted, "deleted": stats.deleted, "added": stats.added}
