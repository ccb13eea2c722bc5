"""No exception type escapes ``push``: a bounded, seeded fuzz run of malformed answers that are 200s.

The fake server answers each push (an update, a create, or an owner's create and its search
before it) with a body made from Stripe's own answer by a few random changes: a field's value
replaced with junk (text for a number, numbers past any range, lone surrogates, NUL, deep or
huge values, lists for objects), keys dropped, the whole body something else (a list, a number,
cut-off JSON, bytes that are not UTF-8), or a Content-Length that is no length. Whatever comes
back, the push returns a result or raises a retry, and the customer ends recorded: never a
record ``sending`` without an error, never an attempt left in flight.

``CUSTOMERSYNC_TEST_FUZZ_SEED`` replays a run (the seed is printed); ``CUSTOMERSYNC_TEST_FUZZ_RUNS``
changes its length.
"""

from __future__ import annotations

import json
import os
import random

import pytest

from customersync import sync
from customersync.exceptions import RetryLater
from customersync.models import AttemptOutcome, Customer, PendingPush, PushAttempt, PushState, SyncStatus
from tests.owners import make_owner

pytestmark = pytest.mark.django_db

SEED = int(os.environ.get("CUSTOMERSYNC_TEST_FUZZ_SEED", "25"))
RUNS = int(os.environ.get("CUSTOMERSYNC_TEST_FUZZ_RUNS", "60"))

FIELDS = "id object created name email phone description address metadata livemode balance currency".split() + [
    "invoice_settings",
    "shipping",
    "preferred_locales",
    "tax_exempt",
    "deleted",
]
KEYS = [*FIELDS, "line1", "", "\ud800"]


def junk(rng: random.Random, depth: int = 0):
    """A JSON value of any shape, often one Stripe never sends."""
    choices = [
        lambda: rng.choice(["", "yesterday", "\ud800", "a\udfffb", "nul\u0000here", "x" * rng.randint(1, 70_000)]),
        lambda: rng.choice([0, -1, 2**63, -(2**64), 10**400, 1e300, -1e15, 1.5, float("nan")]),
        lambda: rng.choice([True, False, None]),
        lambda: "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(1, 20))),
    ]
    if depth < 40:
        choices += [
            lambda: [junk(rng, depth + 1) for _ in range(rng.randint(0, 3))],
            lambda: {rng.choice(KEYS): junk(rng, depth + 1) for _ in range(rng.randint(0, 3))},
        ]
    return rng.choice(choices)()


def malformed(rng: random.Random, answer: dict) -> tuple[bytes, dict[str, str]]:
    """A 200's body (and headers) made from ``answer`` by a few random changes."""
    kind = rng.random()
    headers: dict[str, str] = {}
    if kind < 0.08:
        return rng.choice([b"", b"[]", b"5", b'"customer"', b"null", b"\xff\xfe{", b"{" * 70]), headers
    body = dict(answer)
    for _ in range(rng.randint(1, 4)):
        if rng.random() < 0.2 and body:
            body.pop(rng.choice(list(body)))
        else:
            body[rng.choice(FIELDS)] = junk(rng)
    text = json.dumps(body, allow_nan=True)
    if rng.random() < 0.05:
        text = text[: rng.randint(0, len(text))]  # cut off
    if rng.random() < 0.05:
        headers["Content-Length"] = rng.choice(["\u00b2", "-1", "1e3", "12, 13", " ", "99999999999999999999999"])
    return text.encode("utf-8", "surrogatepass"), headers


def ended_recorded(customer: Customer) -> None:
    customer.refresh_from_db()
    sending = PendingPush.objects.filter(customer=customer, state=PushState.SENDING)
    assert not sending.exists() or customer.sync_error, "a record left sending without an error"
    assert not PushAttempt.objects.filter(customer=customer, outcome=AttemptOutcome.IN_FLIGHT).exists()
    if customer.sync_status == SyncStatus.FAILED:
        assert customer.sync_error and customer.sync_error.get("message")
    assert customer.sync_status in (SyncStatus.IN_SYNC, SyncStatus.FAILED, SyncStatus.PENDING, SyncStatus.DELETED)


def test_no_exception_type_escapes_push_whatever_a_200_holds(stripe):
    rng = random.Random(SEED)
    print(f"fuzz seed {SEED}, {RUNS} runs")
    outcomes: dict[str, int] = {}
    for run in range(RUNS):
        way = run % 3
        if way == 0:  # an update
            customer = sync.pull_one(stripe.add_customer(name=f"Ann {run}", email="ann@example.com")["id"])
            customer.name = f"Bea {run}"
            customer.save()
            answer = {**stripe.get_customer(customer.stripe_id), "name": customer.name}
            path = f"/v1/customers/{customer.stripe_id}"
        elif way == 1:  # a create
            customer = Customer.objects.create(name=f"New {run}")
            answer = {"id": f"cus_Fuzz{run}", "object": "customer", "name": customer.name, "created": 1_700_000_000}
            path = "/v1/customers"
        else:  # an owner's create: its search first, then the create
            customer = sync.get_or_create_for(make_owner(f"Acme {run}"))
            answer = {"id": f"cus_Fuzz{run}", "object": "customer", "name": customer.name, "created": 1_700_000_000}
            path = "/v1/customers"
            if rng.random() < 0.5:
                found = {"object": "search_result", "data": [answer], "has_more": False}
                body, headers = malformed(rng, found)
                stripe.inject(status=200, body=body, headers=headers, method="GET", path_prefix="/v1/customers/search")
        body, headers = malformed(rng, answer)
        stripe.inject(status=200, body=body, headers=headers, path_prefix=path)
        try:
            outcome = sync.push(customer.pk).outcome.value
        except RetryLater as later:
            outcome = f"retry: {type(later.error).__name__}"
        # Anything else raised fails the test here, with the run's seed above.
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        ended_recorded(customer)
        stripe.reset()
    print("outcomes:", outcomes)
    assert outcomes.get("failed", 0) >= RUNS // 3  # the run did meet answers that cannot be used
