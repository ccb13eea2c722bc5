"""Benchmark the bulk import against baselines measured in the same run.

    python -m bench.pull [--customers 10000]

Seeds the bundled fake Stripe server (loopback) with N customers, then imports
them three ways into a database of its own (the test settings' PostgreSQL):

- walk only: list every page over HTTP, store nothing (the floor: HTTP + JSON);
- naive: one update_or_create per customer (what a simple importer does);
- customersync: ``sync.pull()`` (one locking select, bulk_create, bulk_update a page);
- dj-stripe: ``djstripe_sync_models Customer`` against the same server, when
  dj-stripe is installed (``pip install --group bench``), in a database of its own.

It prints customers per second, queries and HTTP requests per customer, and ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time

# dj-stripe checks the key's shape; the fake server takes any sk_test_ key.
BENCH_KEY = "sk_test_51BenchBenchBenchBenchBench00"
# The database the bench creates and drops: a name of its own lets several checkouts run it at once.
DB_NAME = os.environ.get("CUSTOMERSYNC_BENCH_DB", "customersync_bench")
DJSTRIPE_DB = f"{DB_NAME}_djstripe"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10_000)
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import override_settings, setup_databases, teardown_databases

    from customersync import sync
    from customersync.client import StripeClient
    from customersync.models import Customer
    from customersync.testing import FakeStripeServer

    connection.settings_dict["TEST"]["NAME"] = (
        os.path.abspath(f".{DB_NAME}.sqlite3") if connection.vendor == "sqlite" else DB_NAME
    )
    old = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    rows = []
    try:
        with (
            FakeStripeServer() as server,
            override_settings(
                CUSTOMERSYNC={**settings.CUSTOMERSYNC, "API_KEY": BENCH_KEY, "API_BASE": server.url, "PULL_RATE": 0}
            ),
        ):
            server.seed(args.customers)
            client = StripeClient(BENCH_KEY, api_base=server.url)

            def measure(name, run):
                Customer.objects.all().delete()
                executed = []

                def count_query(execute, sql, params, many, context):
                    executed.append(1)
                    return execute(sql, params, many, context)

                server.clear_requests()
                started = time.perf_counter()
                # An execute wrapper, not the query log: Django caps that at 9000 entries.
                with connection.execute_wrapper(count_query):
                    count = run()
                elapsed = time.perf_counter() - started
                rows.append((name, count, elapsed, len(executed), len(server.requests)))

            measure("walk only (HTTP, no storing)", lambda: sum(len(p) for p in client.iter_customers(limit=100)))

            def naive():
                count = 0
                for page in client.iter_customers(limit=100):
                    for obj in page:
                        customer = Customer.objects.filter(stripe_id=obj["id"]).first() or Customer()
                        customer.merge_remote(obj, base=customer.stripe_data)
                        customer.save_synced()
                        count += 1
                return count

            measure("naive (a query or two per customer)", naive)
            measure("customersync pull (bulk per page)", lambda: sync.pull().pulled)
            if importlib.util.find_spec("djstripe"):
                server.clear_requests()
                rows.append(_djstripe(server.url, args.customers) + (len(server.requests),))
            else:
                print("dj-stripe is not installed: pip install --group bench to compare with it.")
        vendor = connection.vendor
    finally:
        connection.close()
        teardown_databases(old, verbosity=0)

    walk, naive_row, ours = rows[:3]
    print(f"bulk import of {args.customers} customers from the fake server on loopback ({vendor})")
    print(
        f"{'method':<40}{'customers':>10}{'seconds':>9}{'customers/s':>13}{'queries/customer':>18}{'requests/customer':>19}"
    )
    for name, count, elapsed, queries, requests in rows:
        per_query = f"{queries / count:.3f}" if queries is not None else "n/a"
        print(f"{name:<40}{count:>10}{elapsed:>9.2f}{count / elapsed:>13,.0f}{per_query:>18}{requests / count:>19.3f}")
    print(f"customersync vs naive: {naive_row[2] / ours[2]:.1f}x faster, {ours[3] / naive_row[3]:.3f}x the queries")
    print(f"customersync vs walk only: {ours[2] / walk[2]:.2f}x the time of just fetching the pages")
    if len(rows) > 3:
        print(f"customersync vs dj-stripe: {rows[3][2] / ours[2]:.1f}x faster")
    return 0


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
            env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
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
