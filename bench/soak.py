"""Soak the push path: concurrent edits, several workers, random faults, worker kills.

Bounded in count and time, loopback only. Prints the edits made, the requests
sent and the counters that must all be 0: lost changes, stale overwrites,
duplicate applications, idempotency errors, overlapping requests (and values
of rolled-back edits that reached the server).

    python -m bench.soak [--edits 2000] [--customers 25] [--writers 4] [--workers 3] [--seconds 600]
                         [--all-hazards | --lease-seconds 4 --clock-skew 200,-30 --rate-limit 2 --db-restarts 3]

The hazards (``soak_hazards``): requests held at the server past the workers'
lease, workers whose clocks are off, a rate budget that makes grants queue,
and PostgreSQL restarted during the run; ``--all-hazards`` turns them all on
with the values above (a flag given beside it wins).

It uses the test settings (PostgreSQL and Redis as the test suite finds them,
see docs/operations/performance.md), in a database of its own that it creates and drops, with
Redis database 13 as the broker (``CUSTOMERSYNC_SOAK_REDIS_URL`` chooses
another; else ``CUSTOMERSYNC_TEST_REDIS_URL`` when set). With database
restarts the database is a PostgreSQL of the bench's own
(``tests.private_services``), never the shared one. ``run()`` is also called
by the test suite for a smaller run.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from bench import soak_hazards as hazards
from bench.soak_counters import MUST_BE_ZERO, change, counters

__all__ = ["ALL_HAZARDS", "MUST_BE_ZERO", "SoakConfig", "main", "run"]


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
    # The hazards, each off unless set (soak_hazards):
    lease_seconds: float = 0  # (a) the workers' LEASE_SECONDS; some requests held past it
    long_request_share: float = 0.3  # (a) of the faults injected, the share that are such requests
    clock_skews: tuple[float, ...] = ()  # (b) seconds the first workers' clocks are off
    rate_limit: float = 0  # (c) the workers' RATE_LIMIT (requests per second, fleet-wide)
    db_restarts: int = 0  # (d) PostgreSQL restarts while editing (run's ``restart_db`` does them)
    db_down: tuple[float, float] = (0.5, 4.0)  # (d) seconds the database stays down each time


ALL_HAZARDS = dict(lease_seconds=4.0, clock_skews=(200.0, -30.0), rate_limit=2.0, db_restarts=3)


class _Rollback(Exception):
    pass


def run(
    config: SoakConfig,
    *,
    server,
    db_name: str,
    log=print,
    restart_db: Callable[[float, str], None] | None = None,
) -> dict[str, object]:
    """Run the soak against ``server`` (a FakeStripeServer) and the configured database.

    Needs Django set up with the test settings and ``CUSTOMERSYNC['API_BASE']``
    pointing at ``server``; starts and stops its own worker processes.
    ``restart_db(seconds_down, mode)`` stops and starts the database, for ``db_restarts``.
    """
    from django.db import InterfaceError, OperationalError, connection, transaction

    from customersync import sync
    from customersync.core.diff import diff
    from customersync.models import Customer, PendingPush, PushState
    from tests.support import Worker

    if config.db_restarts and restart_db is None:
        raise ValueError("db_restarts needs restart_db")
    rng = random.Random(config.seed)
    deadline = time.monotonic() + config.seconds
    server.set_latency(*config.latency)
    pks = [
        sync.pull_one(server.add_customer(name=f"c{i}", email=f"c{i}@soak.test")["id"]).pk
        for i in range(config.customers)
    ]
    stripe_ids = dict(Customer.objects.filter(pk__in=pks).values_list("pk", "stripe_id"))
    server.clear_requests()

    def start_worker(index: int) -> Worker:
        return Worker(server.url, db_name, ("--pool=solo",), hazards.worker_env(config, index, server.url))

    workers = [start_worker(i) for i in range(config.workers)]
    retired: list[Worker] = []  # killed, kept for their logs
    seq = itertools.count(1)
    seq_lock = threading.Lock()
    counts: Counter = Counter()
    rolled_back: set[int] = set()
    remaining = itertools.count()
    progress = threading.Condition()
    editing = threading.Event()
    editing.set()
    _stop = threading.Event()

    def writer(wid: int) -> None:
        wrng = random.Random(config.seed * 1000 + wid)
        try:
            while next(remaining) < config.edits and time.monotonic() < deadline:
                edit(wrng)
        finally:
            connection.close()

    def edit(wrng: random.Random) -> None:
        """One operator's edit; made again (as a new edit) while the database is away."""
        pk = wrng.choice(pks)
        rollback = wrng.random() < config.rollback_rate
        while time.monotonic() < deadline:
            n = None
            try:
                with transaction.atomic():
                    customer = Customer.objects.select_for_update().get(pk=pk)
                    with seq_lock:
                        n = next(seq)
                    change(customer, wrng, f"s{n}")
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
            except (OperationalError, InterfaceError):
                # The database went away mid-edit: committed or not, nobody knows (a COMMIT
                # may have landed), so its values count neither as made nor as rolled back.
                connection.close()
                counts["edit tries cut by a restart"] += 1
                time.sleep(0.2)
                continue
            return

    def faulter() -> None:
        while editing.is_set() and time.monotonic() < deadline:
            if rng.random() < config.fault_rate:
                fault = hazards.faults(config, rng)
                server.inject(path_prefix=f"/v1/customers/{stripe_ids[rng.choice(pks)]}", **fault)
                counts["faults injected"] += 1
                counts["requests held past the lease"] += hazards.is_long(fault, config)
            if not editing.wait(0) or _stop.wait(0.1):
                break

    def reached(edits: int, while_editing: bool = False) -> bool:
        """Wait until ``edits`` edits were made; False when the run ends first."""
        with progress:
            progress.wait_for(
                lambda: counts["edits made"] >= edits or _stop.is_set() or (while_editing and not editing.is_set()),
                timeout=max(deadline - time.monotonic(), 0),
            )
            return counts["edits made"] >= edits and not _stop.is_set()

    def killer() -> None:
        # Kill at evenly spread points of progress, while pushes are in flight.
        for k in range(1, config.kills + 1):
            if not reached(k * config.edits // (config.kills + 1)):
                break
            index = rng.randrange(len(workers))
            workers[index].kill()
            retired.append(workers[index])
            workers[index] = start_worker(index)
            counts["workers killed"] += 1

    def sweeper() -> None:
        try:
            while not _stop.wait(1.0):
                hazards.tolerant(lambda: sync.sweep(older_than=2), _stop)
        finally:
            connection.close()

    helpers = [faulter, killer, sweeper]
    if config.db_restarts:
        assert restart_db is not None
        helpers.append(
            hazards.restarter(
                config,
                restart_db,
                lambda n: reached(n, while_editing=True),
                counts,
                random.Random(rng.random()),
                server,
            )
        )
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(config.writers)]
    helper_threads = [threading.Thread(target=f) for f in helpers]
    started = time.monotonic()
    for thread in threads + helper_threads:
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

        while not hazards.tolerant(settled):
            if time.monotonic() > deadline:
                log("soak: time bound reached before settling")
                break
            hazards.tolerant(lambda: sync.sweep(older_than=1))
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
        for thread in helper_threads:
            thread.join()
        for worker in workers:
            worker.stop()
        if os.environ.get("SOAK_WORKER_LOGS"):
            for worker in workers:
                log(worker.log[-3000:])
        server.set_latency(0)
    elapsed = time.monotonic() - started

    result: dict[str, object] = {
        "customers": config.customers,
        "writers": config.writers,
        "workers": config.workers,
        "edits made": counts["edits made"],
        "edits rolled back": counts["edits rolled back"],
        "edit tries cut by a restart": counts["edit tries cut by a restart"],
        "faults injected": counts["faults injected"],
        "requests held past the lease": counts["requests held past the lease"],
        "lease seconds": config.lease_seconds or "default",
        "clock skews": ", ".join(f"{s:+g}s" for s in config.clock_skews) or "none",
        "rate limit": f"{config.rate_limit:g}/s" if config.rate_limit else "default",
        "database restarts": counts["database restarts"],
        "workers killed": counts["workers killed"],
        "seconds": round(elapsed, 1),
        **hazards.seen_in_logs(workers + retired),
    }
    result.update(hazards.tolerant(lambda: counters(server, stripe_ids, rolled_back, log)))
    return result


def _config(args: argparse.Namespace) -> SoakConfig:
    hazard = ALL_HAZARDS if args.all_hazards else {}
    skews = args.clock_skew if args.clock_skew is not None else hazard.get("clock_skews", ())
    return SoakConfig(
        edits=args.edits,
        customers=args.customers,
        writers=args.writers,
        workers=args.workers,
        kills=args.kills,
        fault_rate=args.fault_rate,
        seconds=args.seconds,
        seed=args.seed,
        lease_seconds=args.lease_seconds if args.lease_seconds is not None else hazard.get("lease_seconds", 0),
        clock_skews=tuple(skews),
        rate_limit=args.rate_limit if args.rate_limit is not None else hazard.get("rate_limit", 0),
        db_restarts=args.db_restarts if args.db_restarts is not None else hazard.get("db_restarts", 0),
    )


def _skews(text: str) -> tuple[float, ...]:
    return tuple(float(s) for s in text.split(",") if s.strip())


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
    hazard = parser.add_argument_group("hazards (off unless given)")
    hazard.add_argument("--all-hazards", action="store_true", help="every hazard, with the values shown above")
    hazard.add_argument("--lease-seconds", type=float, help="(a) the workers' LEASE_SECONDS; requests held past it")
    hazard.add_argument("--clock-skew", type=_skews, help="(b) seconds the first workers' clocks are off: 200,-30")
    hazard.add_argument("--rate-limit", type=float, help="(c) the workers' fleet-wide RATE_LIMIT, per second")
    hazard.add_argument("--db-restarts", type=int, help="(d) PostgreSQL restarts while editing (a private one)")
    config = _config(parser.parse_args(argv))

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, repo)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    broker = os.environ.get("CUSTOMERSYNC_SOAK_REDIS_URL") or os.environ.setdefault(
        "CUSTOMERSYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/13"
    )
    os.environ["CUSTOMERSYNC_TEST_REDIS_URL"] = os.environ["CUSTOMERSYNC_TEST_RESULT_URL"] = broker
    with contextlib.ExitStack() as stack:
        restart_db = None
        if config.db_restarts:
            from tests.private_services import PrivatePostgres

            pg = stack.enter_context(PrivatePostgres())
            os.environ["CUSTOMERSYNC_TEST_DATABASE_URL"] = pg.url  # for this process and its workers

            def restart_db(down: float, mode: str) -> None:
                pg.stop(mode)
                time.sleep(down)  # the outage's length is the hazard's draw
                pg.start()

        result = _run_in_own_database(config, broker, restart_db)
    width = max(len(k) for k in result)
    for key, value in result.items():
        flag = "  <- must be 0" if key in MUST_BE_ZERO and value else ""
        print(f"{key:<{width}}  {value}{flag}")
    return 1 if any(result[k] for k in MUST_BE_ZERO) else 0


def _run_in_own_database(config: SoakConfig, broker: str, restart_db) -> dict[str, object]:
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
        test_settings["NAME"] = f"customersync_soak_{os.getpid()}"  # never another run's
    redis.Redis.from_url(broker).flushdb()
    old = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    try:
        with (
            FakeStripeServer(api_key=settings.TEST_API_KEY) as server,
            override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "API_BASE": server.url}),
        ):
            return run(config, server=server, db_name=connection.settings_dict["NAME"], restart_db=restart_db)
    finally:
        connection.close()
        teardown_databases(old, verbosity=0)


if __name__ == "__main__":
    sys.exit(main())
