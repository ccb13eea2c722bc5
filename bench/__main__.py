"""The benchmark suite: ``python -m bench`` (after the set-up in docs/operations/performance.md).

Starts its own fake Stripe server on loopback and its own worker processes,
uses the test settings' PostgreSQL and Redis (db 12, a database of its own)
and prints a table; every figure is a ratio against a baseline measured in
the same run. The benches that have modules of their own (the saves, the push
pipeline with 2 and 4 worker processes, the pipeline through real workers, the pull
with its memory) run first and
print their output after the table: ``--quick`` leaves them out. Benchmarks are not tests:
nothing here asserts.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The benches with modules of their own, each against its baseline in its own run.
MORE = (
    ("bench.saves",),
    ("bench.pipeline", "--workers", "2"),
    ("bench.pipeline", "--workers", "4"),
    ("bench.workers", "--compare"),
    ("bench.pull", "--customers", "10000", "--memory"),
)


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    sys.path.insert(0, REPO)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    broker = os.environ.setdefault("CUSTOMERSYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")
    os.environ.setdefault("CUSTOMERSYNC_TEST_RESULT_URL", broker)
    os.environ["CUSTOMERSYNC_TEST_COALESCE"] = "0.25"  # the app's default
    os.environ["CUSTOMERSYNC_TEST_RATE_LIMIT"] = "20"  # the app's default
    import django

    django.setup()
    import redis
    from django.conf import settings
    from django.db import connection
    from django.test.utils import override_settings, setup_databases, teardown_databases

    import project.celery  # noqa: F401  (the site's Celery app)
    from customersync.testing import FakeStripeServer

    # The benches with modules of their own run first, on a machine the worker processes of figure 4
    # have not just loaded (their sub-millisecond figures feel it most), and print after the table.
    more = [] if quick else [(command, _run(command)) for command in MORE]
    connection.settings_dict["TEST"]["NAME"] = "customersync_bench"
    redis.Redis.from_url(broker).flushdb()
    old = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    rows: list[tuple[str, str, str, str, str]] = []
    machine = _machine(connection, broker)
    try:
        with (
            FakeStripeServer(api_key=settings.TEST_API_KEY) as server,
            override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "API_BASE": server.url}),
        ):
            db_name = connection.settings_dict["NAME"]
            rows.append(burst(server, db_name))
            rows.append(request_bytes())
            rows.extend(save_latency(server))
            # The saves above queued pushes of their own: start the next figure from an empty broker.
            from customersync import sync

            sync.publisher.flush()
            redis.Redis.from_url(broker).flushdb()
            rows.extend(push_rate(server, db_name))
            rows.append(diff_cost(server))
    finally:
        connection.close()
        teardown_databases(old, verbosity=0)
    print()
    print(f"customersync benchmarks: {machine}")
    widths = [62, 16, 16, 9, 30]
    header = ("figure", "customersync", "baseline", "ratio", "target / note")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    for command, output in more:
        print(f"\n$ python -m {' '.join(command)}")
        print(output, end="")
    return 0


def _run(command: tuple[str, ...]) -> str:
    done = subprocess.run([sys.executable, "-m", *command], cwd=REPO, check=False, capture_output=True, text=True)
    return done.stdout + done.stderr


def _machine(connection, broker: str) -> str:
    """What the figures ran on: cores, CPU, load, and the versions that matter."""
    import celery
    import django
    import redis

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0].split()[0]
    redis_version = redis.Redis.from_url(broker).info("server").get("redis_version", "?")
    return (
        f"{os.cpu_count()} cores ({cpu}), load average {os.getloadavg()[0]:.2f}, "
        f"Python {platform.python_version()}, Django {django.__version__}, Celery {celery.__version__}, "
        f"PostgreSQL {postgres} and Redis {redis_version} on loopback"
    )


def _mirror(server, n: int, prefix: str):
    from customersync import sync
    from customersync.models import Customer
    from customersync.pull.pages import store_page

    ids = [server.add_customer(name=f"{prefix}{i}", email=f"{prefix}{i}@example.com")["id"] for i in range(n)]
    store_page([server.get_customer(i) for i in ids], sync.PullStats())
    return list(Customer.objects.filter(stripe_id__in=ids).order_by("pk"))


def burst(server, db_name: str):
    """1. Requests per burst of K saves of one customer, with a worker running."""
    from customersync import sync
    from tests.support import Worker

    k, bursts = 10, 10
    customers = _mirror(server, bursts, "burst")
    server.clear_requests()
    server.set_latency(0.2, 0.4)
    worker = Worker(server.url, db_name, ("--pool=threads", "--concurrency=4"), {"CUSTOMERSYNC_TEST_COALESCE": "0.25"})
    try:
        for customer in customers:
            for i in range(k):
                customer.description = f"edit {i}"
                customer.save()
        sync.publisher.flush()
        server.wait_for(lambda reqs: len([r for r in reqs if r.method == "POST"]) >= bursts, timeout=60)
        _quiet(server)
    finally:
        worker.stop()
        server.set_latency(0)
    per_burst = len([r for r in server.requests if r.method == "POST"]) / bursts
    return (
        f"1. requests per burst of {k} saves of one customer",
        f"{per_burst:.2f}",
        f"{k} (one per save)",
        f"{per_burst / k:.2f}",
        "target 1.0 request (ratio 0.10)",
    )


def _quiet(server, seconds: float = 1.5) -> None:
    """Wait until no request arrived for ``seconds`` (late pushes would show up here)."""
    while True:
        seen = len(server.requests)
        try:
            server.wait_for(lambda reqs, seen=seen: len(reqs) > seen, timeout=seconds)
        except TimeoutError:
            return


def request_bytes():
    """2. Bytes of a one-field edit against stripe-python's Customer.modify with every field."""
    from customersync.core.diff import diff
    from customersync.core.encoding import encode
    from tests.contract import customer_fixture

    customer = {
        **customer_fixture(),
        "email": "ann.smith@example.com",
        "name": "Ann Smith",
        "phone": "+33 1 23 45 67 89",
        "description": "Customer since 2019, VIP",
        "preferred_locales": ["fr", "en"],
        "metadata": {"plan": "pro", "seats": "12", "crm_id": "A-10042", "region": "emea"},
        "address": {
            "line1": "1 rue de Rivoli",
            "line2": "Apt 4",
            "city": "Paris",
            "state": None,
            "postal_code": "75001",
            "country": "FR",
        },
        "shipping": {
            "name": "Ann Smith",
            "phone": "+33 1 23 45 67 89",
            "address": {
                "line1": "1 rue de Rivoli",
                "line2": "Apt 4",
                "city": "Paris",
                "state": None,
                "postal_code": "75001",
                "country": "FR",
            },
        },
        "invoice_settings": {
            "custom_fields": [{"name": "PO", "value": "4500012345"}],
            "default_payment_method": None,
            "footer": "Thank you for your business.",
            "rendering_options": None,
        },
        "tax_exempt": "none",
        "invoice_prefix": "ACME01",
        "next_invoice_sequence": 42,
        "balance": 0,
    }
    ours = len(encode(diff(customer, {"email": "ann@example.org"})))
    full = {
        k: customer[k]
        for k in (
            "address",
            "balance",
            "description",
            "email",
            "invoice_prefix",
            "invoice_settings",
            "metadata",
            "name",
            "next_invoice_sequence",
            "phone",
            "preferred_locales",
            "shipping",
            "tax_exempt",
        )
    }
    full["email"] = "ann@example.org"
    full["invoice_settings"] = {k: v for k, v in full["invoice_settings"].items() if v is not None}
    baseline = len(encode(full))
    return (
        "2. request bytes, one-field edit",
        f"{ours} B",
        f"{baseline} B (modify, all)",
        f"{ours / baseline:.3f}",
        "target < 0.10",
    )


def save_latency(server):
    """3b. A 1,000-row bulk_update with mark_for_push, against the bulk_update alone."""
    from customersync import sync
    from customersync.models import Customer, PendingPush

    customers = _mirror(server, 1000, "save")

    def timed(fn, n):
        samples = []
        for i in range(n):
            started = time.perf_counter()
            fn(i)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    sync.publisher.flush()
    for c in customers:
        c.description = "bulk"

    def bulk_without(_):
        Customer.objects.bulk_update(customers, ["description"])

    def bulk_with(_):
        PendingPush.objects.all().delete()
        started = time.perf_counter()
        Customer.objects.bulk_update(customers, ["description"])
        sync.mark_for_push(Customer.objects.filter(pk__in=[c.pk for c in customers]))
        return time.perf_counter() - started

    bulk_base = timed(bulk_without, 5)
    bulk_ours = statistics.median(bulk_with(i) for i in range(5))
    return [  # 3a, 3c and 3d, the single saves: bench.saves, below
        (
            "3b. bulk_update of 1,000 + mark_for_push, median",
            f"{bulk_ours * 1000:.0f} ms",
            f"{bulk_base * 1000:.0f} ms (alone)",
            f"{bulk_ours / bulk_base:.2f}",
            "reported",
        ),
    ]


def push_rate(server, db_name: str):
    """4. Achieved push rate with 1, 2 and 4 workers against a 25/s budget (Stripe's cap per account),
    200-400 ms server latency, 16 threads per worker: the default algorithm (paced), also with
    Celery's default pool (prefork, 16 processes per worker); the window and the bucket to compare.
    The fake server counts arrivals as the kernel stamped them."""
    from customersync import sync
    from customersync.models import Customer
    from tests.support import Worker

    budget = 25.0
    rows = []
    runs = [*((n, "paced", "threads") for n in (1, 2, 4)), (2, "paced", "prefork")]
    runs += [*((n, "window", "threads") for n in (1, 2, 4)), (2, "bucket", "threads")]
    for workers, algorithm, pool in runs:
        customers = _mirror(server, 200, f"rate{workers}{algorithm}{pool}-")
        server.clear_requests()
        server.set_latency(0.2, 0.4)
        procs = [
            Worker(
                server.url,
                db_name,
                (f"--pool={pool}", "--concurrency=16"),
                {
                    "CUSTOMERSYNC_TEST_COALESCE": "0",
                    "CUSTOMERSYNC_TEST_RATE_ALGORITHM": algorithm,
                    "CUSTOMERSYNC_TEST_RATE_LIMIT": f"{budget:g}",
                },
            )
            for _ in range(workers)
        ]
        try:
            for customer in customers:
                Customer.objects.filter(pk=customer.pk).update(description="rate run")
            sync.mark_for_push(Customer.objects.filter(pk__in=[c.pk for c in customers]))
            sync.drain()
            expected = len(customers)
            server.wait_for(lambda reqs, n=expected: len([r for r in reqs if r.method == "POST"]) >= n, timeout=120)
        finally:
            for proc in procs:
                proc.stop()
            server.set_latency(0)
        times = sorted(r.time for r in server.requests if r.method == "POST")
        achieved = (len(times) - 1) / (times[-1] - times[0])
        peak = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
        rows.append(
            (
                f"4. push rate, {workers} worker(s) x 16 {'processes' if pool == 'prefork' else pool}, {algorithm}",
                f"{achieved:.1f}/s (peak {peak}/1s)",
                f"{budget:.0f}/s budget",
                f"{achieved / budget:.2f}",
                "target >= 0.97, peak <= 25" if algorithm == "paced" else "(comparison)",
            )
        )
    return rows


def diff_cost(server):
    """5. Diff plus encoding per customer against one loopback round trip."""
    import requests
    from django.conf import settings

    from customersync.models import Customer

    customer = _mirror(server, 1, "cost")[0]
    customer = Customer.objects.get(pk=customer.pk)
    customer.email = "cost-new@example.com"
    customer.metadata = {"plan": "pro"}
    n = 2000
    started = time.perf_counter()
    for _ in range(n):
        from customersync.core.encoding import encode

        encode(customer.pending_params())
    per_diff = (time.perf_counter() - started) / n
    session = requests.Session()
    url = f"{server.url}/v1/customers/{customer.stripe_id}"
    headers = {"Authorization": f"Bearer {settings.TEST_API_KEY}"}
    session.get(url, headers=headers)
    started = time.perf_counter()
    for _ in range(200):
        session.get(url, headers=headers)
    round_trip = (time.perf_counter() - started) / 200
    return (
        "5. diff + encode per customer",
        f"{per_diff * 1e6:.0f} us",
        f"{round_trip * 1e6:.0f} us (1 round trip)",
        f"{per_diff / round_trip:.3f}",
        "reported",
    )


if __name__ == "__main__":
    sys.exit(main())
