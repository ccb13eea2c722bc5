"""Benchmark whether reading the status figures costs a save or a push anything: each figure a
ratio of the same work with a reader on against none, in the same run.

    python -m bench.health [--rounds 300] [--block 20] [--customers 2000] [--interval 0.05] [--idle-reader]

The figures are read at scrape time, never written by a save or a push, so "on" is a reader:
another process calling ``sync.status()`` in a loop (``--interval`` seconds between
calls; 0: back to back) while the saves and pushes run; "off" is no reader. The rounds go in
blocks of ``--block``, on and off in turn, so the machine's noise hits both; each round is one
edit's save (its outbox record written) and that customer's push through a fake Stripe server
on loopback (lease, take, request, confirm), each timed. The database is seeded with
``--customers`` customers over several accounts, a sync log, conflicts and webhook events
within the window, so the reader's queries have rows to read. ``--idle-reader`` runs the same
with a reader that calls nothing: its ratios are the method's noise on this machine at this time.

Uses the test settings' PostgreSQL in a database of its own (``CUSTOMERSYNC_BENCH_DB``, default
``customersync_bench_health``) and their Redis (the rate budget, high enough not to pace).
Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=300, help="rounds on and rounds off, each")
    parser.add_argument("--block", type=int, default=20, help="rounds in a row before the reader switches")
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between the reader's calls")
    parser.add_argument(
        "--idle-reader", action="store_true", help="the reader calls nothing: the method's own noise (on against off)"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, REPO)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import logging

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import override_settings, setup_databases, teardown_databases

    logging.getLogger("customersync").setLevel(logging.WARNING)  # a line per push is not the push's cost

    from customersync.testing import FakeStripeServer

    connection.settings_dict["TEST"]["NAME"] = os.environ.get("CUSTOMERSYNC_BENCH_DB", "customersync_bench_health")
    old = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    server = FakeStripeServer(api_key=settings.TEST_API_KEY).start()
    try:
        config = {
            **settings.CUSTOMERSYNC,
            "API_BASE": server.url,
            "PUSH_ON_SAVE": False,  # the push is timed on its own, in this process
            "RATE_LIMIT": 10_000,  # the budget is asked, never paces
        }
        with override_settings(CUSTOMERSYNC=config):
            _seed(args.customers)
            result = _run(args, server)
    finally:
        server.stop()
        teardown_databases(old, verbosity=0)
    (save_on, save_off), (push_on, push_off), (reads, spent) = result
    print(
        f"Status reader against none, {connection.vendor} ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}), "
        f"{args.customers} customers, median of {args.rounds} rounds each side in blocks of {args.block}; "
        + (
            "reader idle (the method's noise):"
            if args.idle_reader
            else f"reader: status() every {args.interval:g} s, {reads} calls of {spent / max(reads, 1) * 1000:.1f} ms:"
        )
    )
    print(f"{'figure':<40} {'reader on':>12} {'reader off':>12} {'ratio':>6}")
    for name, on, off in (("one save changing a synced field", save_on, save_off), ("one push", push_on, push_off)):
        print(f"{name:<40} {on * 1000:>9.3f} ms {off * 1000:>9.3f} ms {on / off:>6.2f}")
    return 0


def _seed(customers: int) -> None:
    """Customers over five accounts, a sync log, conflicts and webhook events within the window."""
    from django.utils import timezone

    from customersync.models import (
        Account,
        Conflict,
        Customer,
        PendingPush,
        PushAttempt,
        PushState,
        Resolution,
        SyncStatus,
        WebhookEvent,
    )

    accounts = [None, *(Account.objects.create(stripe_account=f"acct_Bench{n}") for n in range(4))]
    rows = [
        Customer(
            stripe_id=f"cus_Seed{n}",
            name=f"Seed {n}",
            account=accounts[n % len(accounts)],
            sync_status=SyncStatus.FAILED if n % 50 == 0 else SyncStatus.IN_SYNC,
        )
        for n in range(customers)
    ]
    Customer.objects.bulk_create(rows, batch_size=1000)
    seeded = list(Customer.objects.order_by("pk"))
    pushes = PendingPush.objects.bulk_create(
        [PendingPush(customer=c, state=PushState.SENT, completed_at=timezone.now()) for c in seeded], batch_size=1000
    )
    PendingPush.objects.bulk_create(
        [PendingPush(customer=c, enqueued_at=timezone.now()) for c in seeded[::20]], batch_size=1000
    )
    PushAttempt.objects.bulk_create(
        [
            PushAttempt(push=p, customer_id=p.customer_id, idempotency_key="k", outcome="succeeded", http_status=200)
            for p in pushes
        ],
        batch_size=1000,
    )
    Conflict.objects.bulk_create(
        [Conflict(customer=c, param="email", source="webhook", resolution=Resolution.LOCAL_WINS) for c in seeded[::40]]
    )
    WebhookEvent.objects.bulk_create(
        [
            WebhookEvent(event_id=f"evt_Seed{n}", type="customer.updated", created=timezone.now(), outcome="applied")
            for n in range(customers)
        ],
        batch_size=1000,
    )


def _reader(on, stop, interval: float, calls, spent, idle: bool) -> None:
    """The scraper: ``status()`` in a loop while ``on`` is set, on a connection of its own (``idle``:
    it only waits)."""
    from django.db import connections

    from customersync import sync

    connections.close_all()  # the parent's connection is the parent's: open one of this process's own
    while not stop.is_set():
        if not on.wait(0.1):
            continue
        if idle:
            time.sleep(0.1)
            continue
        started = time.perf_counter()
        sync.status()
        with calls.get_lock():
            calls.value += 1
        with spent.get_lock():
            spent.value += time.perf_counter() - started
        if interval:
            time.sleep(interval)


def _run(args, server):
    from django.db import connections

    from customersync import sync

    customer = sync.pull_one(server.add_customer(name="Ann", email="ann@example.com")["id"])
    context = multiprocessing.get_context("fork")
    on, stop, calls, spent = context.Event(), context.Event(), context.Value("i", 0), context.Value("d", 0.0)
    connections.close_all()  # none shared with the forked reader
    reader = context.Process(
        target=_reader, args=(on, stop, args.interval, calls, spent, args.idle_reader), daemon=True
    )
    reader.start()
    saves: dict[bool, list[float]] = {True: [], False: []}
    pushes: dict[bool, list[float]] = {True: [], False: []}
    try:
        for i in range(2 * args.rounds):
            reading = (i // args.block) % 2 == 1
            if i % args.block == 0:
                on.set() if reading else on.clear()
                time.sleep(0.2)  # the reader's call under way (or its last one over)
            customer.name = f"Ann {i}"
            started = time.perf_counter()
            customer.save()
            saved = time.perf_counter()
            outcome = sync.push(customer.pk).outcome
            pushed = time.perf_counter()
            if outcome is not sync.Outcome.PUSHED:
                raise SystemExit(f"push {i}: {outcome}")
            saves[reading].append(saved - started)
            pushes[reading].append(pushed - saved)
    finally:
        stop.set()
        on.set()
        reader.join(10)
    medians = [
        (statistics.median(samples[True][args.block :]), statistics.median(samples[False][args.block :]))
        for samples in (saves, pushes)
    ]
    return medians[0], medians[1], (calls.value, spent.value)


if __name__ == "__main__":
    raise SystemExit(main())
