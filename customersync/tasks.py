"""Celery tasks: thin wrappers that take a primary key and call ``sync``."""

from __future__ import annotations

import random

from celery import shared_task

from . import sync
from .conf import app_settings
from .exceptions import StripeError


def backoff(retries: int) -> float:
    """Stripe's SDK backoff, min(0.5 * 2**n, 5) s with jitter in [0.5, 1], never under 0.5 s."""
    delay = min(0.5 * 2**retries, 5.0)
    return max(0.5, delay * random.uniform(0.5, 1.0))


@shared_task(bind=True, name="customersync.push_customer", acks_late=True, ignore_result=True)
def push_customer(self, customer_pk: int) -> str:
    """Push one customer's pending changes to Stripe."""
    try:
        return sync.push(customer_pk).outcome.value
    except StripeError as err:  # only retryable errors are raised by sync.push
        if self.request.retries >= app_settings.MAX_RETRIES:
            sync.record_gave_up(customer_pk, err)
            return sync.Outcome.FAILED.value
        raise self.retry(countdown=backoff(self.request.retries), exc=err) from None
