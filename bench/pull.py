"""Benchmark the bulk import against baselines measured in the same run.

    python -m bench.pull [--customers 10000] [--memory [--memory-sizes 10000,100000]]

Seeds the bundled fake Stripe server (loopback) with N customers, then imports
them several ways into a database of its own (the test settings' PostgreSQL;
``CUSTOMERSYNC_BENCH_DB`` names it, default ``customersync_bench``):

- walk only: list every page over HTTP, store nothing (the floor: HTTP + JSON);
- naive: a lookup and a save per customer (what a simple importer does);
- customersync: ``sync.pull()`` into an empty mirror, then again over the
  same, unchanged customers (a re-walk: nothing to write but the pull's times);
- dj-stripe: ``djstripe_sync_models Customer`` against the same server, when
  dj-stripe is installed (``pip install --group bench``), in a database of its own.

It prints customers per second and each rate as a ratio to the walk's and the
naive importer's, queries per page and HTTP requests per customer, and the CPU
seconds each run took in this process (the fake server's threads included) and
in its PostgreSQL backend (when the server runs on this machine): on a shared
machine the CPU says what a run costs when the load makes its rate wander.

``--memory``: the peak RSS (``VmHWM``) of a process that pulls each size
(10k and 100k customers by default) into an empty mirror, against a process
that only walks the same pages. Each run is a child process of its own, so
sizes share no peak; the fake server holding the customers stays in this one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# dj-stripe checks the key's shape; the fake server takes any sk_test_ key.
BENCH_KEY = "sk_test_" + "bench" * 6
# The database the bench creates and drops: a name of its own lets several checkouts run it at once.
DB_NAME = os.environ.get("CUSTOMERSYNC_BENCH_DB", "customersync_bench")
DJSTRIPE_DB = f"{DB_NAME}_djstripe"
PAGE = 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--memory", action="store_true", help="also measure the pulling process's peak RSS")
    parser.add_argument("--memory-sizes", default="10000,100000", help="customers per memory run (comma-separated)")
    parser.add_argument("--child", choices=["walk", "pull"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    sys.path.insert(0, REPO)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    if args.child:
        return _child(args.child)
    from django.db import connection
    from django.test.utils import setup_databases, teardown_databases

    connection.settings_dict["TEST"]["NAME"] = (
        os.path.abspath(f".{DB_NAME}.sqlite3") if connection.vendor == "sqlite" else DB_NAME
    )
    old = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    try:
        _throughput(args.customers)
        if args.memory:
            _memory([int(n) for n in args.memory_sizes.split(",")])
    finally:
        connection.close()
        teardown_databases(old, verbosity=0)
    return 0


def _throughput(customers: int) -> None:
    from django.conf import settings
    from django.db import connection
    from django.test.utils import override_settings

    from customersync import sync
    from customersync.models import Customer
    from customersync.stripe.client import StripeClient
    from customersync.testing import FakeStripeServer

    rows = []
    with (
        FakeStripeServer() as server,
        override_settings(
            CUSTOMERSYNC={**settings.CUSTOMERSYNC, "API_KEY": BENCH_KEY, "API_BASE": server.url, "PULL_RATE": 0}
        ),
    ):
        server.seed(customers)
        client = StripeClient(BENCH_KEY, api_base=server.url)

        def measure(name, run, *, empty=True):
            if empty:
                _empty_mirror()
            executed = []

            def count_query(execute, sql, params, many, context):
                executed.append(1)
                return execute(sql, params, many, context)

            server.clear_requests()
            db_before = _backend_cpu()
            cpu = time.process_time()
            started = time.perf_counter()
            # An execute wrapper, not the query log: Django caps that at 9000 entries.
            with connection.execute_wrapper(count_query):
                count = run()
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
            db_after = _backend_cpu()
            db_cpu = None if db_before is None or db_after is None else db_after - db_before
            rows.append((name, count, elapsed, len(executed), len(server.requests), (cpu, db_cpu)))

        measure("walk only (HTTP, no storing)", lambda: sum(len(p) for p in client.iter_customers(limit=PAGE)))

        def naive():
            count = 0
            for page in client.iter_customers(limit=PAGE):
                for obj in page:
                    customer = Customer.objects.filter(stripe_id=obj["id"]).first() or Customer()
                    customer.merge_remote(obj, base=customer.stripe_data)
                    customer.save_synced()
                    count += 1
            return count

        measure("naive (a query or two per customer)", naive)
        measure("customersync pull (into an empty mirror)", lambda: sync.pull(page_size=PAGE).pulled)
        measure("customersync pull again (all unchanged)", lambda: sync.pull(page_size=PAGE).pulled, empty=False)
        if importlib.util.find_spec("djstripe"):
            server.clear_requests()
            try:
                rows.append(_djstripe(server.url, customers) + (len(server.requests), None))
            except AssertionError as err:  # a comparison row: the figures above stand without it
                print(f"dj-stripe row left out: {err}.")
        else:
            print("dj-stripe is not installed: pip install --group bench to compare with it.")

    walk, naive_row, ours, again = rows[:4]
    rate = {name: count / elapsed for name, count, elapsed, *_ in rows}
    print(
        f"bulk import of {customers} customers from the fake server on loopback ({connection.vendor}), "
        f"pages of {PAGE}, load average {_load()}"
    )
    print(
        f"{'method':<42}{'customers':>10}{'seconds':>9}{'customers/s':>13}{'vs walk':>9}{'vs naive':>10}"
        f"{'queries/page':>14}{'requests/customer':>19}{'cpu s':>7}{'db cpu s':>10}"
    )
    for name, count, elapsed, queries, requests, cpus in rows:
        per_page = f"{queries / (count / PAGE):.2f}" if queries is not None else "n/a"
        cpu, db_cpu = cpus or (None, None)
        print(
            f"{name:<42}{count:>10}{elapsed:>9.2f}{rate[name]:>13,.0f}{rate[name] / rate[walk[0]]:>9.2f}"
            f"{rate[name] / rate[naive_row[0]]:>10.1f}{per_page:>14}{requests / count:>19.3f}"
            f"{_seconds(cpu):>7}{_seconds(db_cpu):>10}"
        )
    print(f"customersync vs naive: {naive_row[2] / ours[2]:.1f}x faster, {ours[3] / naive_row[3]:.3f}x the queries")
    print(
        f"customersync vs walk only: {ours[2] / walk[2]:.2f}x the time of just fetching the pages "
        f"({again[2] / walk[2]:.2f}x for a re-walk finding nothing changed)"
    )
    if len(rows) > 4:
        print(f"customersync vs dj-stripe: {rows[4][2] / ours[2]:.1f}x faster")


def _memory(sizes: list[int]) -> None:
    from django.db import connection

    from customersync.testing import FakeStripeServer

    results = []
    for size in sizes:
        with FakeStripeServer() as server:
            server.seed(size)
            env = {
                **os.environ,
                "CUSTOMERSYNC_TEST_DB_NAME": connection.settings_dict["NAME"],
                "CUSTOMERSYNC_TEST_API_BASE": server.url,
                "CUSTOMERSYNC_TEST_API_KEY": BENCH_KEY,
                "CUSTOMERSYNC_TEST_LOG_LEVEL": "WARNING",
            }
            runs = {}
            for kind in ("walk", "pull"):
                _empty_mirror()
                connection.close()  # the child's pull writes: hold no connection meanwhile
                done = subprocess.run(
                    [sys.executable, "-m", "bench.pull", "--child", kind],
                    env=env,
                    cwd=REPO,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                runs[kind] = json.loads(done.stdout.strip().splitlines()[-1])
                assert runs[kind]["count"] == size, (kind, runs[kind], size)
        results.append((size, runs["walk"], runs["pull"]))

    print()
    print(f"peak RSS of the pulling process (VmHWM; a child process per run), load average {_load()}")
    print(
        f"{'customers':>10}{'walk only':>12}{'customersync pull':>19}{'pull - walk':>13}{'pull / walk':>13}"
        f"{'walk customers/s':>18}{'pull customers/s':>18}"
    )
    for size, walk, pull in results:
        print(
            f"{size:>10}{_mb(walk['maxrss_kb']):>12}{_mb(pull['maxrss_kb']):>19}"
            f"{_mb(pull['maxrss_kb'] - walk['maxrss_kb']):>13}{pull['maxrss_kb'] / walk['maxrss_kb']:>13.2f}"
            f"{size / walk['seconds']:>18,.0f}{size / pull['seconds']:>18,.0f}"
        )
    if len(results) > 1:
        (small, small_walk, small_pull), (large, large_walk, large_pull) = results[0], results[-1]
        print(
            f"from {small} to {large} customers ({large / small:g}x): the pull's peak "
            f"{_mb(large_pull['maxrss_kb'] - small_pull['maxrss_kb'], sign=True)} "
            f"({large_pull['maxrss_kb'] / small_pull['maxrss_kb']:.2f}x), the walk's "
            f"{_mb(large_walk['maxrss_kb'] - small_walk['maxrss_kb'], sign=True)} "
            f"({large_walk['maxrss_kb'] / small_walk['maxrss_kb']:.2f}x)"
        )


def _child(kind: str) -> int:
    """One memory run in this process: walk or pull every page, then report the peak RSS."""
    from customersync import sync
    from customersync.stripe.client import StripeClient

    started = time.perf_counter()
    if kind == "walk":
        from django.conf import settings

        client = StripeClient(BENCH_KEY, api_base=settings.CUSTOMERSYNC["API_BASE"])
        count = sum(len(page) for page in client.iter_customers(limit=PAGE))
    else:
        count = sync.pull(page_size=PAGE).pulled
    elapsed = time.perf_counter() - started
    print(json.dumps({"count": count, "seconds": elapsed, "maxrss_kb": _peak_rss_kib()}))
    return 0


def _peak_rss_kib() -> int:
    """This process's peak RSS in KiB. On Linux ``VmHWM``: ``ru_maxrss`` survives ``execve``, so in
    a child it starts at the bench process's size when it forked (the fake server and its customers)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS


def _empty_mirror() -> None:
    from django.db import connection

    from customersync.models import Customer

    if connection.vendor == "postgresql":  # 100k rows: no cascade collection in Python
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {connection.ops.quote_name(Customer._meta.db_table)} CASCADE")
    else:
        Customer.objects.all().delete()


def _mb(kib: float, *, sign: bool = False) -> str:
    return f"{kib / 1024:{'+' if sign else ''}.1f} MB"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _backend_cpu() -> float | None:
    """CPU seconds of this connection's PostgreSQL backend so far; None when it cannot be read
    (another database, or a server on another machine)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    host = connection.settings_dict.get("HOST") or "localhost"
    try:
        if host not in ("localhost", "127.0.0.1", "::1") and not host.startswith("/"):
            return None
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    return " ".join(f"{n:.2f}" for n in os.getloadavg())


def _djstripe(api_base: str, expected: int) -> tuple:
    """Time ``djstripe_sync_models Customer`` in a subprocess with its own settings and database."""
    import psycopg

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.djstripe_settings",
        "BENCH_STRIPE_API_BASE": api_base,
        "BENCH_STRIPE_KEY": BENCH_KEY,
        "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "BENCH_DJSTRIPE_DB": DJSTRIPE_DB,
    }
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as pg:
        pg.execute(f"DROP DATABASE IF EXISTS {DJSTRIPE_DB}")
        pg.execute(f"CREATE DATABASE {DJSTRIPE_DB}")
    try:
        subprocess.run([sys.executable, "-m", "django", "migrate", "-v0"], env=env, check=True)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "django", "djstripe_sync_models", "Customer"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        elapsed = time.perf_counter() - started
        with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DJSTRIPE_DB}") as pg:
            count = pg.execute("SELECT count(*) FROM djstripe_customer").fetchone()[0]
    finally:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as pg:
            pg.execute(f"DROP DATABASE IF EXISTS {DJSTRIPE_DB}")
    assert count == expected, f"dj-stripe synced {count} of {expected}"
    return ("dj-stripe djstripe_sync_models Customer", count, elapsed, None)


if __name__ == "__main__":
    sys.exit(main())
