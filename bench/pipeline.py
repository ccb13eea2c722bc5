"""The push pipeline's ceiling: ``python -m bench.pipeline [--customers N] [--workers W] [--threads]``.

Pushes N customers, each with one queued edit, through ``push.push`` (lease, read,
freeze and attempt, request, confirm, release) from W worker processes (default 2,
one per core of the development machine, forked with a database connection each;
``--threads``: W in-process threads instead), with the rate budget off, against the
bundled fake server on loopback answering at once (in the parent process). The
baseline, measured in the same run against the same server from the same workers: a
plain ``requests`` loop POSTing the same one-field update. Also counts the queries
per push. Uses the test settings' PostgreSQL (a database of its own,
``customersync_bench_pipeline``). A benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _threads(count: int, work: list, run) -> float:
    """Seconds for ``count`` threads to run ``run(item)`` over ``work`` (shared, in order)."""
    lock, items = threading.Lock(), iter(work)
    start = threading.Barrier(count + 1)

    def loop() -> None:
        from django.db import connection

        start.wait()
        try:
            while True:
                with lock:
                    item = next(items, None)
                if item is None:
                    return
                run(item)
        finally:
            connection.close()

    workers = [threading.Thread(target=loop) for _ in range(count)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    return time.perf_counter() - began


def _forked(count: int, work: list, run) -> float:
    """Seconds for ``count`` forked processes to run ``run(item)`` over their share of ``work``."""
    import multiprocessing

    from django.db import connection

    connection.close()  # each child opens its own
    context = multiprocessing.get_context("fork")
    barrier, spans = context.Barrier(count), context.Queue()

    def child(share: list) -> None:
        barrier.wait()
        began = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
        for item in share:
            run(item)
        spans.put((began, time.perf_counter()))
        connection.close()

    children = [context.Process(target=child, args=(work[i::count],)) for i in range(count)]
    for process in children:
        process.start()
    got = [spans.get() for _ in children]
    for process in children:
        process.join()
    return max(end for _, end in got) - min(start for start, _ in got)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", action="store_true", help="in-process threads instead of processes")
    args = parser.parse_args(argv)
    spread, kind = (_threads, "in-process threads") if args.threads else (_forked, "worker processes")
    sys.path.insert(0, REPO)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    os.environ["CUSTOMERSYNC_TEST_RATE_LIMIT"] = "0"  # the budget off: the pipeline's own ceiling
    os.environ.setdefault("CUSTOMERSYNC_TEST_LOG_LEVEL", "WARNING")  # a line per push would bury the figures
    import django

    django.setup()
    import requests
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext, override_settings, setup_databases, teardown_databases

    from customersync import sync
    from customersync.models import Customer
    from customersync.pull.pages import store_page
    from customersync.push import send
    from customersync.testing import FakeStripeServer

    connection.settings_dict["TEST"]["NAME"] = "customersync_bench_pipeline"
    old = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    try:
        with (
            FakeStripeServer(api_key=settings.TEST_API_KEY) as server,
            override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "API_BASE": server.url, "PUSH_ON_SAVE": False}),
        ):
            ids = [server.add_customer(name=f"c{i}")["id"] for i in range(args.customers + 1)]
            store_page([server.get_customer(i) for i in ids], sync.PullStats())
            customers = list(Customer.objects.filter(stripe_id__in=ids).order_by("pk"))
            for customer in customers:
                customer.name = f"{customer.name} edited"
                customer.save()  # one queued push each
            with connection.cursor() as cursor:  # what one committed write costs here (its WAL flush)
                cursor.execute("CREATE TABLE bench_probe (id int PRIMARY KEY, n int)")
                cursor.execute("INSERT INTO bench_probe VALUES (1, 0)")
                began = time.perf_counter()
                for _ in range(100):
                    cursor.execute("UPDATE bench_probe SET n = n + 1 WHERE id = 1")
                commit_ms = (time.perf_counter() - began) * 10
            connection.close()  # the workers open their own

            first, rest = customers[0], customers[1:]
            with CaptureQueriesContext(connection) as captured:
                send.push(first.pk)  # also warms up the client and the fake server
            queries = len(captured.captured_queries)

            def push_one(customer) -> None:
                send.push(customer.pk)

            server.clear_requests()
            pipeline = spread(args.workers, rest, push_one)
            pushed = Customer.objects.filter(pk__in=[c.pk for c in rest], last_pushed_at__isnull=False).count()

            sessions = threading.local()
            headers = {"Authorization": f"Bearer {settings.TEST_API_KEY}"}

            def post_one(customer) -> None:
                session = getattr(sessions, "session", None) or requests.Session()
                sessions.session = session
                answer = session.post(
                    f"{server.url}/v1/customers/{customer.stripe_id}", data={"name": "plain"}, headers=headers
                )
                answer.raise_for_status()

            server.clear_requests()
            plain = spread(args.workers, rest, post_one)
    finally:
        connection.close()
        teardown_databases(old, verbosity=0)
    push_rate, post_rate = pushed / pipeline, len(rest) / plain
    print(f"push pipeline: {args.workers} {kind}, budget off, fake server on loopback answering at once")
    print(f"  queries per push (one update, lease to release): {queries}; one committed write: {commit_ms:.2f} ms")
    print(f"  customersync push.push: {pushed}/{len(rest)} pushed in {pipeline:.2f} s = {push_rate:.0f} pushes/s")
    print(f"  baseline, plain requests POST loop: {len(rest)} in {plain:.2f} s = {post_rate:.0f} requests/s")
    print(f"  ratio (pushes/s / requests/s): {push_rate / post_rate:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
