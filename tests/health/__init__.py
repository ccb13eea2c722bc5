"""The status figures and the status command, each driven by the state it reports; helpers for both."""

from __future__ import annotations

import datetime as dt
import json

from django.urls import reverse
from django.utils import timezone

from customersync.webhooks import sign

SECRET = "whsec_test_secret"  # tests/settings.py's WEBHOOK_SECRET


def customer_event(stripe_id: str, name: str, *, event_id: str) -> dict:
    """A customer.updated event of the default platform's own account."""
    return {
        "id": event_id,
        "object": "event",
        "type": "customer.updated",
        "created": int(timezone.now().timestamp()) + 5,
        "livemode": False,
        "data": {
            "object": {
                "id": stripe_id,
                "object": "customer",
                "name": name,
                "livemode": False,
                "created": 1700000000,
                "metadata": {},
            }
        },
        "request": {"id": None, "idempotency_key": None},
    }


def deliver(client, payload: dict, *, secret: str = SECRET):
    """POST ``payload`` to the default platform's webhook endpoint, signed with ``secret``."""
    body = json.dumps(payload).encode()
    timestamp = int(timezone.now().timestamp())
    header = f"t={timestamp},v1={sign(body, secret, timestamp)}"
    return client.post(
        reverse("customersync:webhook"), body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )


def aged(seconds: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=seconds)
