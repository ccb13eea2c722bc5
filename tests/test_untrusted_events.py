"""Bad Stripe-Signature headers on webhook deliveries.

Each refusal is a 400 that says what is wrong, and writes nothing: no
``WebhookEvent``, no new or changed ``Customer``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from customersync.models import Customer, WebhookEvent
from customersync.pull import PullStats, store_page
from tests.test_mirror import deliver, event, signed

pytestmark = pytest.mark.django_db

NOW = int(time.time())
KNOWN = {
    "id": "cus_known",
    "object": "customer",
    "email": "ann@example.com",
    "name": "Ann",
    "created": 1_700_000_000,
    "livemode": False,
    "currency": "eur",
    "metadata": {"plan": "pro"},
    "address": {"line1": "1 Main St", "city": "Paris", "country": "FR"},
}


@pytest.fixture
def known() -> Customer:
    """A mirrored customer, as a pull leaves it (no network)."""
    store_page([KNOWN], PullStats())
    return Customer.objects.get(stripe_id="cus_known")


def snapshot() -> list[dict[str, Any]]:
    return list(Customer.objects.order_by("pk").values())


def with_event(**changes: Any) -> dict[str, Any]:
    return {**event({**KNOWN, "name": "Changed"}), **changes}


# -- the Stripe-Signature header ---------------------------------------------------------------

BODY = json.dumps(with_event()).encode()
MAC = re.search(r"v1=(\w+)", signed(BODY)).group(1)

BAD_T = "Bad signature header: t must be 1 to 12 ASCII digits."
BAD_V1 = "Bad signature header: each v1 must be 64 lowercase hexadecimal digits."
E_ACUTE = "\u00e9"
# (header; the message the 400 carries)
HEADERS = {
    "superscript-two": (f"t=\u00b2,v1={MAC}", BAD_T),
    "arabic-indic-digits": (f"t=\u0661\u0662\u0663,v1={MAC}", BAD_T),
    "fullwidth-digits": (f"t=\uff11\uff12,v1={MAC}", BAD_T),
    "1000-digits": (f"t={'1' * 1000},v1={MAC}", BAD_T),
    "5000-digits": (f"t={'1' * 5000},v1={MAC}", "Bad signature header: longer than 4096 characters."),
    "13-digits": (f"t={'1' * 13},v1={MAC}", BAD_T),
    "signed-t": (f"t=-{NOW},v1={MAC}", BAD_T),
    "empty-t": (f"t=,v1={MAC}", BAD_T),
    "two-t": (f"t={NOW},t={NOW},v1={MAC}", "Bad signature header: more than one t."),
    "v1-not-hex": (f"t={NOW},v1={'z' * 64}", BAD_V1),
    "v1-uppercase": (f"t={NOW},v1={MAC.upper()}", BAD_V1),
    "v1-non-ascii": (f"t={NOW},v1={E_ACUTE * 64}", BAD_V1),
    "v1-short": (f"t={NOW},v1=abc", BAD_V1),
    "too-long": (f"t={NOW},v1={MAC}," + "v0=x," * 1000, "Bad signature header: longer than 4096 characters."),
    "no-v1": (f"t={NOW}", "No timestamp or no v1 signature in the Stripe-Signature header."),
}


@pytest.mark.parametrize(("header", "message"), HEADERS.values(), ids=HEADERS.keys())
def test_a_bad_signature_header_is_a_400_saying_so(client, known, header, message):
    before = snapshot()
    response = deliver(client, BODY, header.encode().decode("latin-1"))  # as WSGI hands headers over
    assert response.status_code == 400, response.content
    assert response.content.decode() == message
    assert snapshot() == before and not WebhookEvent.objects.exists()
