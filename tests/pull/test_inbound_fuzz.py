"""A bounded, seeded fuzz of everything that comes in: pull pages, refreshes and webhook events.

The fake server answers each pull page and each refresh with a random body that is malformed but
a 200 (Stripe's objects with values of every wrong kind, lone surrogates, control characters,
numbers past every range, junk where lists and objects go), and the webhook endpoints get random
signed events built the same way. Whatever arrives:

- ``pull_one`` returns a customer or raises one of the app's errors (``CustomerSyncError``),
  nothing else; ``pull`` stores what fits, skips and reports the rest, or raises a ``StripeError``
  for a page that is no list of customers;
- the webhook view answers 200 or 400, never a 500;
- every customer stored holds only values its columns take, and nothing was sent but GETs.

``CUSTOMERSYNC_FUZZ_SEED`` replays a run; every failure names its seed and case.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from customersync import sync
from customersync.exceptions import CustomerSyncError, StripeError
from customersync.models import Account, Customer
from customersync.models.columns import column_errors
from tests.pull.test_mirror import signed

pytestmark = pytest.mark.django_db

SEED = int(os.environ.get("CUSTOMERSYNC_FUZZ_SEED", "20261207"))
PAGES, REFRESHES, EVENTS = 60, 80, 200  # bounded: a few seconds on the fake server
CONNECT_SECRET = "whsec_fuzz_connect"

JUNK: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**31,
    2**63,
    2**70,
    -(2**70),
    1e300,
    -1e15,
    1.5,
    float("nan"),
    float("inf"),
    "",
    "yesterday",
    "\ud800",
    "a\udfffb",
    "\x00",
    "Ann\x1b[2J",
    "\x7f",
    "\x85",
    "x" * 300,
    "é" * 600,
    "cus_x' OR '1'='1",
    "../charges",
    "cus_\n",
    "acct_1\n",
    [],
    [None],
    ["fr", 5],
    {},
    {"id": None},
    {"a": {"b": {"c": ["d"]}}},
    {"\ud800": "x"},
    {"k\x00": 1},
    {"line1": ["x"]},
    "2026-12-07T00:00:00Z",
]
FIELDS = [
    "id",
    "object",
    "email",
    "name",
    "phone",
    "description",
    "metadata",
    "address",
    "shipping",
    "balance",
    "created",
    "currency",
    "delinquent",
    "livemode",
    "invoice_prefix",
    "invoice_settings",
    "next_invoice_sequence",
    "preferred_locales",
    "tax_exempt",
    "default_source",
    "business_name",
    "individual_name",
    "deleted",
    "discount",
]


def junk(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 3 and roll < 0.1:
        return [junk(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 3 and roll < 0.2:
        return {rng.choice(["id", "city", "name", "x", "\ud800"]): junk(rng, depth + 1) for _ in range(3)}
    return rng.choice(JUNK)


def customer(rng: random.Random, stripe_id: str) -> dict[str, Any]:
    """A customer as Stripe sends one, then 1 to 4 of its fields made wrong."""
    obj: dict[str, Any] = {
        "id": stripe_id,
        "object": "customer",
        "email": "ann@example.com",
        "name": "Ann",
        "created": 1_700_000_000,
        "livemode": False,
        "metadata": {"plan": "pro"},
        "address": {"city": "Paris", "country": "FR"},
        "balance": 0,
        "currency": "eur",
        "delinquent": False,
        "preferred_locales": ["fr"],
        "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None},
    }
    for name in rng.sample(FIELDS, rng.randint(1, 4)):
        obj[name] = junk(rng)
    return obj


def body(rng: random.Random, value: Any) -> str:
    # json.dumps writes NaN and Infinity, and escapes lone surrogates: bodies a hostile server sends.
    return json.dumps(value)


def list_page(rng: random.Random, n: int) -> Any:
    roll = rng.random()
    data: Any = [customer(rng, f"cus_fuzz{n}_{i}") for i in range(rng.randint(1, 6))]
    if roll < 0.15:
        data = junk(rng)  # no list at all
    elif roll < 0.3:
        data = [*data, junk(rng)]  # one item that is no customer
    page = {"object": "list", "data": data, "has_more": False, "url": "/v1/customers"}
    if rng.random() < 0.1:
        page["has_more"] = junk(rng)
    return page if rng.random() > 0.05 else junk(rng)


def check_stored(where: str) -> None:
    for stored in Customer.objects.all():
        assert column_errors(stored) == {}, (where, stored.stripe_id)


def test_pull_pages_of_junk_store_what_fits_and_raise_only_stripe_errors(stripe):
    rng = random.Random(SEED)
    outcomes = {"stored": 0, "skipped": 0, "refused": 0}
    for n in range(PAGES):
        stripe.inject(status=200, body=body(rng, list_page(rng, n)), method="GET", path_prefix="/v1/customers")
        case = f"seed {SEED}, page {n}"
        try:
            stats = sync.pull(page_size=10, limit=10)
        except StripeError:
            outcomes["refused"] += 1
        except Exception as err:  # noqa: BLE001 (what the test is about)
            pytest.fail(f"{case}: {type(err).__name__} escaped the pull: {err!r}")
        else:
            outcomes["stored"] += stats.pulled
            outcomes["skipped"] += stats.skipped
        check_stored(case)
    assert all(outcomes.values()), outcomes  # the run met each kind of page
    assert {r.method for r in stripe.requests} == {"GET"}


def test_refreshes_answered_with_junk_raise_only_the_apps_errors(stripe):
    rng = random.Random(SEED + 1)
    for i in range(3):
        stripe.add_customer(id=f"cus_known{i}", name=f"Known {i}")
    sync.pull()
    outcomes = {"refreshed": 0, "refused": 0}
    for n in range(REFRESHES):
        stripe_id = f"cus_known{n % 3}"
        answer = customer(rng, stripe_id) if rng.random() < 0.8 else junk(rng)
        if isinstance(answer, dict) and rng.random() < 0.2:
            answer["id"] = rng.choice([f"cus_known{(n + 1) % 3}", "cus_other", stripe_id])
        stripe.inject(status=200, body=body(rng, answer), method="GET", path_prefix=f"/v1/customers/{stripe_id}")
        case = f"seed {SEED + 1}, refresh {n}"
        try:
            refreshed = sync.pull_one(stripe_id)
        except CustomerSyncError:
            outcomes["refused"] += 1
        except Exception as err:  # noqa: BLE001
            pytest.fail(f"{case}: {type(err).__name__} escaped pull_one: {err!r}")
        else:
            assert refreshed.stripe_id == stripe_id, case
            outcomes["refreshed"] += 1
        check_stored(case)
        assert Customer.objects.count() == 3, case  # a refresh never adds or moves a customer
    assert all(outcomes.values()), outcomes
    assert {r.method for r in stripe.requests} == {"GET"}


def event_of(rng: random.Random, n: int) -> Any:
    found: dict[str, Any] = {
        "id": f"evt_fuzz{n}",
        "object": "event",
        "type": rng.choice(["customer.updated", "customer.created", "customer.deleted", "invoice.paid"]),
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": customer(rng, f"cus_ev{n % 5}")},
        "request": {"id": None, "idempotency_key": None},
    }
    for name in rng.sample(["id", "type", "created", "data", "request", "account", "livemode"], rng.randint(0, 2)):
        found[name] = junk(rng)
    return found if rng.random() > 0.05 else junk(rng)


def test_random_signed_events_are_answered_200_or_400_never_500(settings, stripe):
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "CONNECT_WEBHOOK_SECRET": CONNECT_SECRET}
    Account.objects.create(platform="default", stripe_account="acct_1")
    client = Client(raise_request_exception=False)
    rng = random.Random(SEED + 2)
    statuses: dict[int, int] = {}
    for n in range(EVENTS):
        payload = event_of(rng, n)
        connect = rng.random() < 0.3
        if connect and isinstance(payload, dict):
            payload["account"] = rng.choice(["acct_1", "acct_unknown", payload.get("account")])
        raw = body(rng, payload).encode()
        name = "customersync:webhook-connect" if connect else "customersync:webhook"
        header = signed(raw, CONNECT_SECRET if connect else settings.CUSTOMERSYNC["WEBHOOK_SECRET"])
        response = client.post(reverse(name), raw, content_type="application/json", HTTP_STRIPE_SIGNATURE=header)
        case = f"seed {SEED + 2}, event {n}"
        assert response.status_code in (200, 400), (case, response.status_code, response.content[:300])
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        check_stored(case)
    assert statuses.get(200) and statuses.get(400), statuses
    assert stripe.requests == []  # an event is applied from its body: nothing is asked of Stripe
