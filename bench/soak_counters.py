"""The soak's edits and counters: what the fake server received against what the database holds.

Every edit writes values tagged with its sequence number ("s<seq>"), taken
under the customer's row lock, so the order of tags is the order of edits.
"""

from __future__ import annotations

import bisect
import random
import re
from collections import Counter, defaultdict

_TAG = re.compile(r"s(\d+)")
FIELDS = ("email", "name", "phone", "description", "metadata", "address")

MUST_BE_ZERO = (
    "lost changes",
    "stale overwrites",
    "duplicate applications",
    "idempotency errors",
    "overlapping requests",
    "rolled-back values sent",
)


def change(customer, rng: random.Random, tag: str) -> None:
    """Write ``tag`` into one to three random fields of ``customer`` (not saved)."""
    for field in rng.sample(FIELDS, rng.randint(1, 3)):
        if field == "metadata":
            meta = dict(customer.metadata)
            key = f"k{rng.randint(0, 4)}"
            if key in meta and rng.random() < 0.3:
                del meta[key]
            else:
                meta[key] = tag
            customer.metadata = meta
        elif field == "address":
            customer.address = {**(customer.address or {}), "city": tag, "country": "FR"}
        elif field == "email":
            customer.email = f"{tag}@soak.test"
        else:
            setattr(customer, field, tag)


def counters(server, stripe_ids: dict[int, str], rolled_back: set[int], log=print) -> dict[str, int]:
    """The six counters that must be 0, and the requests sent, for the customers in ``stripe_ids``."""
    from customersync.core.diff import diff
    from customersync.core.encoding import decode, flatten
    from customersync.models import Customer

    path_to_pk = {f"/v1/customers/{sid}": pk for pk, sid in stripe_ids.items()}
    posts = [r for r in server.requests if r.method == "POST" and r.path in path_to_pk]
    remote = server.customers
    lost = 0
    for customer in Customer.objects.filter(pk__in=list(stripe_ids)):
        lost += len(list(flatten(diff(remote[stripe_ids[customer.pk]], customer.desired_state()))))

    stale = phantom = 0
    applied_keys: Counter = Counter()
    applied_values: Counter = Counter()
    by_customer = defaultdict(list)
    for r in posts:
        by_customer[r.path].append(r)
    for path, reqs in by_customer.items():
        last: dict[str, int] = {}
        for r in sorted((r for r in reqs if r.status == 200 and not r.replayed), key=lambda r: r.finished):
            applied_keys[r.idempotency_key] += 1
            for key, value in flatten(decode(r.body)):
                match = _TAG.search(value)
                if not match:
                    continue
                n = int(match.group(1))
                phantom += n in rolled_back
                applied_values[(path, key, n)] += 1
                if n < last.get(key, 0):
                    stale += 1
                last[key] = max(last.get(key, 0), n)
    duplicates = sum(c - 1 for c in applied_keys.values() if c > 1)
    duplicates += sum(c - 1 for c in applied_values.values() if c > 1)

    bodies_by_key = defaultdict(set)
    for r in posts:
        bodies_by_key[r.idempotency_key].add(r.body)
    idempotency_errors = sum(len(b) - 1 for b in bodies_by_key.values())
    for key in (k for k, b in bodies_by_key.items() if len(b) > 1):
        log(f"soak: {key} was sent with different bodies:")
        for r in sorted((r for r in posts if r.idempotency_key == key), key=lambda r: r.time):
            log(f"  {r.time:.3f} {r.path} {r.status} replayed={r.replayed} {r.body!r}")

    overlaps = 0
    for reqs in by_customer.values():
        running_until = 0.0
        for r in sorted((r for r in reqs if r.status != 409), key=lambda r: r.time):
            if r.time < running_until:
                overlaps += 1
            running_until = max(running_until, r.finished or r.time)

    # Stripe counts requests per second as they arrive; the budget grants them per 1.1 s.
    arrivals = sorted(r.time for r in posts)
    busiest = max((bisect.bisect_left(arrivals, t + 1.0) - i for i, t in enumerate(arrivals)), default=0)

    return {
        "requests sent": len(posts),
        "most requests in one second": busiest,
        "lost changes": lost,
        "stale overwrites": stale,
        "duplicate applications": duplicates,
        "idempotency errors": idempotency_errors,
        "overlapping requests": overlaps,
        "rolled-back values sent": phantom,
    }
