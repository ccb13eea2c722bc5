"""Soak the push path: concurrent edits, several workers, random faults, worker kills.

Bounded in count and time, loopback only. Prints the edits made, the requests
sent and the counters that must all be 0: lost changes, stale overwrites,
duplicate applications, idempotency errors, overlapping requests (and values
of rolled-back edits that reached the server).

    python -m bench.soak [--edits 2000] [--customers 25] [--writers 4] [--workers 3] [--seconds 600]

It uses the test settings (PostgreSQL and Redis as the test suite finds them,
see the README), in a database of its own that it creates and drops, with
Redis database 13 as the broker. ``run()`` is also called by the test suite
for a smaller run.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

# Every edit writes values tagged with its sequence number: "s<seq>".
_TAG = re.compile(r"s(\d+)")
FIELDS = ("email", "name", "phone", "description", "metadata", "address")


@dataclass
class SoakConfig:
    edits: int = 400
    customers: int = 10
    writers: int = 4
    workers: int = 3
    fault_rate: float = 0.15  # chance per 100 ms of injecting one fault
    kills: int = 3  # worker SIGKILLs, spread over the editing phase
    rollback_rate: float = 0.05
    latency: tuple[float, float] = (0.005, 0.03)
    seconds: float = 300.0  # hard bound on the whole run
    seed: int = 1
    think: float = 0.02  # seconds an operator pauses between edits, at most


class _Rollback(Exception):
    pass


def _faults(timeout: float) -> list[dict]:
    return [
        dict(status=500),
        dict(status=503, headers={"Stripe-Should-Retry": "true"}),
        dict(status=502, body="<html><h1>502 Bad Gateway</h1></html>"),
        dict(status=429, error={"type": "invalid_request_error", "code": "lock_timeout", "message": "busy"}),
        dict(status=429, error={"type": "invalid_request_error", "code": "rate_limit", "message": "slow down"}),
        dict(action="drop"),
        dict(action="drop_after"),
        dict(action="reset"),
        dict(delay=timeout + 0.5),
    ]


def run(config: SoakConfig, *, server, db_name: str, log=print) -> dict[str, int]:
    """Run the soak against ``server`` (a FakeStripeServer) and the configured database.

    Needs Django set up with the test settings and ``CUSTOMERSYNC['API_BASE']``
    pointing at ``server``; starts and stops its own worker processes.
    """
    from django.conf import settings
    from django.db import connection, transaction

    from customersync import sync
    from customersync.diff import diff
    from customersync.models import Customer, PendingPush, PushState
    from customersync.wire import decode, flatten
    from tests.support import Worker

    rng = random.Random(config.seed)
    deadline = time.monotonic() + config.seconds
    server.set_latency(*config.latency)
    pks = [
        sync.pull_one(server.add_customer(name=f"c{i}", email=f"c{i}@soak.test")["id"]).pk
        for i in range(config.customers)
    ]
    stripe_ids = dict(Customer.objects.filter(pk__in=pks).values_list("pk", "stripe_id"))
    server.clear_requests()

    env = {"CUSTOMERSYNC_TEST_MAX_RETRIES": "1000", "CUSTOMERSYNC_TEST_API_BASE": server.url}
    workers = [Worker(server.url, db_name, ("--pool=solo",), env) for _ in range(config.workers)]
    seq = itertools.count(1)
    seq_lock = threading.Lock()
    counts = Counter()
    rolled_back: set[int] = set()
    remaining = itertools.count()
    progress = threading.Condition()
    editing = threading.Event()
    editing.set()

    def writer(wid: int) -> None:
        wrng = random.Random(config.seed * 1000 + wid)
        try:
            while next(remaining) < config.edits and time.monotonic() < deadline:
                pk = wrng.choice(pks)
                rollback = wrng.random() < config.rollback_rate
                try:
                    with transaction.atomic():
                        customer = Customer.objects.select_for_update().get(pk=pk)
                        with seq_lock:
                            n = next(seq)
                        tag = f"s{n}"
                        for field in wrng.sample(FIELDS, wrng.randint(1, 3)):
                            if field == "metadata":
                                meta = dict(customer.metadata)
                                key = f"k{wrng.randint(0, 4)}"
                                if key in meta and wrng.random() < 0.3:
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
                        customer.save()
                        if rollback:
                            raise _Rollback
                    with progress:
                        counts["edits made"] += 1
                        progress.notify_all()
                    # An operator's think time, so edits spread over the run.
                    time.sleep(wrng.uniform(0, config.think))
                except _Rollback:
                    rolled_back.add(n)
                    counts["edits rolled back"] += 1
        finally:
            connection.close()

    def faulter() -> None:
        kinds = _faults(settings.CUSTOMERSYNC["TIMEOUT"])
        while editing.is_set() and time.monotonic() < deadline:
            if rng.random() < config.fault_rate:
                fault = rng.choice(kinds)
                server.inject(path_prefix=f"/v1/customers/{stripe_ids[rng.choice(pks)]}", **fault)
                counts["faults injected"] += 1
            if not editing.wait(0) or _stop.wait(0.1):
                break

    def killer() -> None:
        # Kill at evenly spread points of progress, while pushes are in flight.
        for k in range(1, config.kills + 1):
            with progress:
                reached = progress.wait_for(
                    lambda k=k: counts["edits made"] >= k * config.edits // (config.kills + 1) or _stop.is_set(),
                    timeout=max(deadline - time.monotonic(), 0),
                )
            if not reached or _stop.is_set():
                break
            index = rng.randrange(len(workers))
            workers[index].kill()
            workers[index] = Worker(server.url, db_name, ("--pool=solo",), env)
            counts["workers killed"] += 1

    def sweeper() -> None:
        try:
            while not _stop.wait(1.0):
                sync.sweep(older_than=2)
        finally:
            connection.close()

    _stop = threading.Event()
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(config.writers)]
    helpers = [threading.Thread(target=f) for f in (faulter, killer, sweeper)]
    started = time.monotonic()
    for thread in threads + helpers:
        thread.start()
    try:
        for thread in threads:
            thread.join()
        editing.clear()
        with progress:
            progress.notify_all()
        log(f"soak: {counts['edits made']} edits in {time.monotonic() - started:.1f}s; settling...")

        # Settle: until nothing is pending and every customer matches, re-checking as requests land.
        def settled() -> bool:
            if PendingPush.objects.filter(state__in=[PushState.PENDING, PushState.SENDING]).exists():
                return False
            remote = server.customers
            return all(
                not diff(remote[stripe_ids[c.pk]], c.desired_state()) for c in Customer.objects.filter(pk__in=pks)
            )

        while not settled():
            if time.monotonic() > deadline:
                log("soak: time bound reached before settling")
                break
            sync.sweep(older_than=1)
            seen = len(server.requests)
            try:
                server.wait_for(lambda reqs, seen=seen: len(reqs) > seen, timeout=1.0, what="more requests")
            except TimeoutError:
                pass
    finally:
        _stop.set()
        editing.clear()
        with progress:
            progress.notify_all()
        for thread in helpers:
            thread.join()
        for worker in workers:
            worker.stop()
        if os.environ.get("SOAK_WORKER_LOGS"):
            for worker in workers:
                log(worker.log[-3000:])
        server.set_latency(0)
    elapsed = time.monotonic() - started

    # -- the counters --------------------------------------------------------
    path_to_pk = {f"/v1/customers/{sid}": pk for pk, sid in stripe_ids.items()}
    posts = [r for r in server.requests if r.method == "POST" and r.path in path_to_pk]
    remote = server.customers
    lost = 0
    for customer in Customer.objects.filter(pk__in=pks):
        lost += len(list(flatten(diff(remote[stripe_ids[customer.pk]], customer.desired_state()))))

    stale = duplicates = phantom = 0
    applied_keys = Counter()
    applied_values = Counter()
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

    overlaps = 0
    for reqs in by_customer.values():
        running_until = 0.0
        for r in sorted((r for r in reqs if r.status != 409), key=lambda r: r.time):
            if r.time < running_until:
                overlaps += 1
            running_until = max(running_until, r.finished or r.time)

    return {
        "customers": config.customers,
        "writers": config.writers,
        "workers": config.workers,
        "edits made": counts["edits made"],
        "edits rolled back": counts["edits rolled back"],
        "faults injected": counts["faults injected"],
        "workers killed": counts["workers killed"],
        "requests sent": len(posts),
        "seconds": round(elapsed, 1),
        "lost changes": lost,
        "stale overwrites": stale,
        "duplicate applications": duplicates,
        "idempotency errors": idempotency_errors,
        "overlapping requests": overlaps,
        "rolled-back values sent": phantom,
    }


MUST_BE_ZERO = (
    "lost changes",
    "stale overwrites",
    "duplicate applications",
    "idempotency errors",
    "overlapping requests",
    "rolled-back values sent",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edits", type=int, default=2000)
    parser.add_argument("--customers", type=int, default=25)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--fault-rate", type=float, default=0.15)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    broker = os.environ.setdefault("CUSTOMERSYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
    os.environ.setdefault("CUSTOMERSYNC_TEST_RESULT_URL", broker)
    import django

    django.setup()
    import redis
    from django.conf import settings
    from django.db import connection
    from django.test.utils import override_settings, setup_databases, teardown_databases

    import project.celery  # noqa: F401  (the site's Celery app, as project/__init__ loads it for the demo)
    from customersync.testing import FakeStripeServer

    test_settings = connection.settings_dict["TEST"]
    if connection.vendor == "sqlite":
        test_settings["NAME"] = os.path.abspath(".soak-db.sqlite3")
    else:
        test_settings["NAME"] = "customersync_soak"
    redis.Redis.from_url(broker).flushdb()
    old = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    try:
        with (
            FakeStripeServer(api_key=settings.TEST_API_KEY) as server,
            override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "API_BASE": server.url}),
        ):
            config = SoakConfig(
                edits=args.edits,
                customers=args.customers,
                writers=args.writers,
                workers=args.workers,
                kills=args.kills,
                fault_rate=args.fault_rate,
                seconds=args.seconds,
                seed=args.seed,
            )
            result = run(config, server=server, db_name=connection.settings_dict["NAME"])
    finally:
        connection.close()
        teardown_databases(old, verbosity=0)
    width = max(len(k) for k in result)
    for key, value in result.items():
        flag = "  <- must be 0" if key in MUST_BE_ZERO and value else ""
        print(f"{key:<{width}}  {value}{flag}")
    return 1 if any(result[k] for k in MUST_BE_ZERO) else 0


if __name__ == "__main__":
    sys.exit(main())
