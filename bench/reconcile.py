"""Benchmark the reconcile: its rate and peak memory at two sizes, and the drift it finds.

    python -m bench.reconcile [--sizes 10000,100000] [--drift 0.01]

For each size, seeds the bundled fake Stripe server (loopback) with N customers,
pulls them into an empty mirror (the test settings' PostgreSQL, in a database of
its own: ``CUSTOMERSYNC_BENCH_DB``, default ``customersync_bench_reconcile``),
then plants what a missed outage leaves, without events: ``--drift`` of the
customers changed in Stripe (their email), half as many deleted in Stripe, and
as many added there. A child process of its own then runs ``reconcile()`` with
no rate budget and ``PULL_RATE`` 0 (the walk goes as fast as the fake answers)
and reports its customers per second and peak RSS (``VmHWM``); the figures it
found must equal those planted. The last lines give the large size against the
small one: the rate's ratio (flat: the cost per customer does not grow) and the
peak's (flat: the walk holds one page, whatever the size).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_KEY = "sk_test_" + "bench" * 6
DB_NAME = os.environ.get("CUSTOMERSYNC_BENCH_DB", "customersync_bench_reconcile")
PAGE = 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="customers per run (comma-separated)")
    parser.add_argument("--drift", type=float, default=0.01, help="share of the customers changed in Stripe")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    sys.path.insert(0, REPO)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    if args.child:
        return _child()
    from django.db import connection
    from django.test.utils import setup_databases, teardown_databases

    connection.settings_dict["TEST"]["NAME"] = DB_NAME
    old = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    try:
        results = [_run(int(size), args.drift) for size in args.sizes.split(",")]
    finally:
        connection.close()
        teardown_databases(old, verbosity=0)
    _report(results)
    return 0 if all(r["found"] == r["planted"] for r in results) else 1


def _run(size: int, drift_share: float) -> dict:
    from django.conf import settings
    from django.db import connection
    from django.test.utils import override_settings

    from customersync import sync
    from customersync.testing import FakeStripeServer

    _empty_mirror()
    with FakeStripeServer() as server:
        ids = [c["id"] for c in server.seed(size)]
        config = {**settings.CUSTOMERSYNC, "API_KEY": BENCH_KEY, "API_BASE": server.url, "PULL_RATE": 0}
        with override_settings(CUSTOMERSYNC=config):
            sync.pull(page_size=PAGE)
        drifted = max(1, int(size * drift_share))
        deleted = max(1, drifted // 2)
        for cus in ids[:drifted]:
            server.update_customer_directly(cus, email=f"moved-{cus}@example.com")
        for cus in ids[drifted : drifted + deleted]:
            server.delete_customer(cus)
        for n in range(deleted):
            server.add_customer(name=f"Added {n}")
        planted = {"seen": size, "drifted": drifted, "deleted": deleted, "added": deleted}
        env = {
            **os.environ,
            "CUSTOMERSYNC_TEST_DB_NAME": connection.settings_dict["NAME"],
            "CUSTOMERSYNC_TEST_API_BASE": server.url,
            "CUSTOMERSYNC_TEST_API_KEY": BENCH_KEY,
            "CUSTOMERSYNC_TEST_RATE_LIMIT": "0",
            "CUSTOMERSYNC_TEST_LOG_LEVEL": "WARNING",
        }
        connection.close()  # the child writes: hold no connection meanwhile
        done = subprocess.run(
            [sys.executable, "-m", "bench.reconcile", "--child"],
            env=env,
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return {"size": size, "planted": planted, **found}


def _child() -> int:
    from customersync.pull import catchup

    started = time.perf_counter()
    figures = catchup.reconcile(page_size=PAGE)
    elapsed = time.perf_counter() - started
    found = {"seen": figures.seen, "drifted": figures.drifted, "deleted": figures.deleted, "added": figures.added}
    print(json.dumps({"found": found, "seconds": elapsed, "maxrss_kb": _peak_rss_kib()}))
    return 0


def _report(results: list[dict]) -> None:
    from django.db import connection

    print(
        f"reconcile of the fake server's customers on loopback ({connection.vendor}), pages of {PAGE}, "
        f"no rate budget, load average {' '.join(f'{n:.2f}' for n in os.getloadavg())}"
    )
    print(f"{'customers':>10}{'seconds':>9}{'customers/s':>13}{'peak RSS':>11}  drift found == planted")
    for r in results:
        same = "yes" if r["found"] == r["planted"] else f"NO: found {r['found']}, planted {r['planted']}"
        print(
            f"{r['size']:>10}{r['seconds']:>9.2f}{r['size'] / r['seconds']:>13,.0f}"
            f"{r['maxrss_kb'] / 1024:>8.1f} MB  {same} ({r['found']['drifted']} drifted, "
            f"{r['found']['deleted']} deleted, {r['found']['added']} added)"
        )
    if len(results) > 1:
        small, large = results[0], results[-1]
        rate = (large["size"] / large["seconds"]) / (small["size"] / small["seconds"])
        print(
            f"from {small['size']} to {large['size']} customers ({large['size'] / small['size']:g}x): "
            f"customers/s {rate:.2f}x, peak RSS {large['maxrss_kb'] / small['maxrss_kb']:.2f}x"
        )


def _peak_rss_kib() -> int:
    """This process's peak RSS in KiB (``VmHWM``: ``ru_maxrss`` survives ``execve``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _empty_mirror() -> None:
    from customersync.models import Customer, Drift, EventCursor

    Drift.objects.all().delete()
    EventCursor.objects.all().delete()
    Customer.objects.all().delete()


if __name__ == "__main__":
    sys.exit(main())
