"""The pipeline through real workers: ``python -m bench.workers [--customers N] [--compare]``.

What a site runs, measured from outside: N customers changed and marked
(``sync.mark_for_push``, whose drain task publishes their pushes from a worker),
then separately N saves through the public ``save()``; real ``celery worker``
processes of the demo project (``project/``, its settings as docs/operations/celery.md
recommends, the rate budget off: ``bench.site_settings``), on Redis and
PostgreSQL, against the bundled fake Stripe server run as its own process
(``python -m customersync.testing``) answering at once. Each run is timed from
the first publish to the last request the fake server received; the baseline, in
the same run against the same server, is a plain ``requests`` loop POSTing the
same one-field update. Each run also says the CPU used per push by its worker
processes (all of a worker's threads share one core under the GIL: a second of
CPU over that figure is one process's ceiling), by the database's backends on
this host, by the fake server and by the bench's own process (the marking or
the saves, whose duration it also says): together, what the machine's cores
must afford per push. Then a run with ``bench.probe`` in the workers says where a
push task's time goes. ``--compare`` adds rows for other settings (a connection
per task, the thread pool). Uses the test settings' PostgreSQL
server (a database of its own, named after the settings' one with
``_bench_workers`` appended) and Redis (db 11 unless ``BENCH_WORKERS_REDIS_URL``).
A benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlsplit, urlunsplit

from tests.private_services import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_KEY = "sk_test_bench_workers"
# As docs/operations/celery.md recommends: a thread pool sharing Django's connection pool (the demo's
# settings), one push reserved at a time.
RECOMMENDED = {"workers": 1, "pool": "threads", "concurrency": 8, "env": {}}


class FakeServer:
    """``python -m customersync.testing`` in a process of its own, driven through its control API."""

    def __init__(self) -> None:
        import requests

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "customersync.testing", "--port", str(self.port), "--quiet", "--api-key", API_KEY],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for line in self.process.stdout:
            if "listening on" in line:
                break
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {API_KEY}", "X-Fake-Stripe-Control": "1"})

    def control(self, method: str, route: str, **body) -> object:
        answer = self.session.request(method, f"{self.url}/_fake/{route}", json=body or None)
        answer.raise_for_status()
        return answer.json()

    def posts(self) -> list[dict]:
        return [r for r in self.control("GET", "requests") if r["method"] == "POST"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) a process has used so far; 0.0 where ``/proc`` is not there."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database_cpu(name: str) -> float:
    """CPU seconds used so far by this host's PostgreSQL backends connected to database ``name``
    (found by their process titles; 0.0 when the server runs elsewhere)."""
    total = 0.0
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as cmdline:
                title = cmdline.read().decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres:") and f" {name} " in title:
            total += cpu_seconds(int(path.split("/")[2]))
    return total


class Workers:
    """``celery -A project worker`` processes on the bench's database, broker and fake server.

    ``cpu``: the CPU seconds the worker processes used from their answering a ping to ``stop()``.
    """

    def __init__(self, count: int, pool: str, concurrency: int, env: dict[str, str]) -> None:
        from project.celery import app

        self.names = [f"bench-{os.getpid()}-{i}@%h".replace("%h", socket.gethostname()) for i in range(count)]
        self.processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "project",
                    "worker",
                    f"--pool={pool}",
                    f"--concurrency={concurrency}",
                    "--queues=customersync,celery",
                    "--loglevel=WARNING",
                    "--without-mingle",
                    "--without-gossip",
                    "--without-heartbeat",
                    f"--hostname={name}",
                    *(["--include=bench.probe"] if env.get("BENCH_PROBE_DIR") else []),
                ],
                cwd=REPO,
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name in self.names
        ]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answered = {name for reply in app.control.ping(destination=self.names, timeout=0.5) for name in reply}
            if answered >= set(self.names):
                self.cpu = -sum(cpu_seconds(process.pid) for process in self.processes)
                return
        self.stop()
        raise RuntimeError("the workers did not answer a ping within 60 s")

    def stop(self) -> None:
        self.cpu += sum(cpu_seconds(process.pid) for process in self.processes)
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _first_publish() -> list[float]:
    """Times (``time.monotonic()``) of this process's task publishes from now on."""
    from celery.signals import before_task_publish

    times: list[float] = []

    def remember(**kwargs) -> None:
        times.append(time.monotonic())

    before_task_publish.connect(remember, weak=False)
    return times


def _wait_until_pushed(n: int, timeout: float = 300) -> None:
    from customersync.models import PendingPush, PushState

    deadline = time.monotonic() + timeout
    while PendingPush.objects.filter(state__in=[PushState.PENDING, PushState.SENDING]).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"pushes still queued after {timeout:.0f} s")
        time.sleep(0.2)


def pipeline_run(
    server: FakeServer, customers: list, how: str, workers: dict, tag: str
) -> tuple[int, float, float, dict[str, float]]:
    """Push every customer's one-field change through real workers; (pushes, seconds from first publish,
    seconds this process took to mark or save them, CPU seconds used meanwhile by the worker processes,
    the database's backends, the fake server and this process)."""
    from django.db import connection

    from customersync import sync
    from customersync.models import Customer

    server.control("DELETE", "requests")
    running = Workers(workers["workers"], workers["pool"], workers["concurrency"], workers["env"])
    database = connection.settings_dict["NAME"]
    cpu = {"workers": 0.0, "database": -database_cpu(database), "fake server": -cpu_seconds(server.process.pid)}
    cpu["this process"] = -time.process_time()
    try:
        published = _first_publish()
        began = time.monotonic()
        if how == "marked":
            Customer.objects.filter(pk__in=[c.pk for c in customers]).update(description=f"marked {tag}")
            sync.mark_for_push(Customer.objects.filter(pk__in=[c.pk for c in customers]))
        else:
            for customer in customers:
                customer.description = f"saved {tag}"
                customer.save()
        made = time.monotonic() - began
        _wait_until_pushed(len(customers))
        posts = server.posts()
    finally:
        cpu["database"] += database_cpu(database)
        cpu["fake server"] += cpu_seconds(server.process.pid)
        cpu["this process"] += time.process_time()
        running.stop()
    cpu["workers"] = running.cpu
    return len(posts), max(r["time"] for r in posts) - published[0], made, cpu


def plain_loop(server: FakeServer, customers: list) -> float:
    """Requests per second of a plain ``requests`` loop POSTing the same one-field update."""
    import requests

    session = requests.Session()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    began = time.monotonic()
    for customer in customers:
        answer = session.post(
            f"{server.url}/v1/customers/{customer.stripe_id}", data={"description": "plain"}, headers=headers
        )
        answer.raise_for_status()
    return len(customers) / (time.monotonic() - began)


def publish_cost(customers: list, broker: str) -> tuple[float, float]:
    """Milliseconds per published push task: through ``outbox.publish`` (pooled, one producer for the
    batch), and through a connection of its own per task; nothing consumes them (flushed after)."""
    import redis
    from celery import current_app

    from customersync.push import outbox

    pks = [customer.pk for customer in customers]
    outbox.publish(pks[:10])  # the pool's first connection
    began = time.perf_counter()
    outbox.publish(pks)
    pooled = (time.perf_counter() - began) / len(pks) * 1000
    began = time.perf_counter()
    for pk in pks:
        with current_app.connection_for_write() as connection:
            current_app.send_task(outbox.PUSH_TASK, args=[pk], connection=connection, **outbox.queue_options())
    own = (time.perf_counter() - began) / len(pks) * 1000
    redis.Redis.from_url(broker).flushdb()
    return pooled, own


def breakdown(directory: str, pushes: int, seconds: float, slots: int) -> list[str]:
    """Where a push task's time went, from ``bench.probe``'s lines (push tasks only)."""
    lines = []
    for path in glob.glob(os.path.join(directory, "*.jsonl")):
        with open(path) as source:
            lines.extend(json.loads(line) for line in source)
    tasks = [line for line in lines if line["task"] == "customersync.push_customer"]
    if not tasks:
        return ["  (no push task reported)"]

    def mean_ms(key: str) -> float:
        return statistics.fmean(task[key] for task in tasks) * 1000

    wall, cpu = mean_ms("wall"), mean_ms("cpu")
    queries, connect, http = mean_ms("queries"), mean_ms("connect"), mean_ms("http")
    slot = slots * seconds / max(pushes, 1) * 1000
    return [
        f"  a worker slot per push: {slot:.2f} ms ({slots} slots x {seconds:.2f} s / {pushes} pushes)",
        f"  the task (task_prerun to task_postrun), mean of {len(tasks)}: {wall:.2f} ms, of it CPU {cpu:.2f} ms",
        f"    database queries: {queries:.2f} ms ({statistics.fmean(t['query_count'] for t in tasks):.1f} a push)",
        f"    opening database connections: {connect:.2f} ms",
        f"    the HTTP request to the fake server: {http:.2f} ms",
        f"    the rest of the push in Python: {wall - queries - connect - http:.2f} ms",
        f"  outside the task (Celery: message, ack, prefork hand-off, the drain): {slot - wall:.2f} ms",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1000, help="at most 1200: one drain run with no budget")
    parser.add_argument("--compare", action="store_true", help="also a connection per task, and the thread pool")
    args = parser.parse_args(argv)
    sys.path.insert(0, REPO)
    database = urlsplit(os.environ.get("CUSTOMERSYNC_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"))
    name = f"{database.path.strip('/') or 'customersync'}_bench_workers"  # beside the settings' own database
    broker = os.environ.get("BENCH_WORKERS_REDIS_URL", "redis://127.0.0.1:6379/11")
    server = FakeServer()
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench.site_settings",
            "DATABASE_URL": urlunsplit(database._replace(path=f"/{name}_base")),
            "CELERY_BROKER_URL": broker,
            "STRIPE_API_BASE": server.url,
            "STRIPE_API_KEY": API_KEY,
            "PYTHONPATH": REPO,
        }
    )
    import django

    django.setup()
    import redis
    from django.db import connection
    from django.test.utils import setup_databases, teardown_databases

    from customersync import sync
    from customersync.models import Customer

    redis.Redis.from_url(broker).flushdb()
    connection.settings_dict["TEST"]["NAME"] = name
    old = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    os.environ["DATABASE_URL"] = urlunsplit(database._replace(path=f"/{connection.settings_dict['NAME']}"))
    probe = tempfile.mkdtemp(prefix="bench-probe-")
    rows = []
    try:
        server.control("POST", "seed", n=args.customers)
        sync.pull()
        customers = list(Customer.objects.order_by("pk"))
        plain = plain_loop(server, customers)
        pooled, own = publish_cost(customers, broker)
        runs = [("marked", "recommended", RECOMMENDED), ("saves", "recommended", RECOMMENDED)]
        if args.compare:
            no_pool = {"BENCH_DB_POOL": "0"}
            runs += [
                ("marked", "without Django's connection pool", {**RECOMMENDED, "env": no_pool}),
                ("marked", "2 workers x 4 threads", {**RECOMMENDED, "workers": 2, "concurrency": 4}),
                (
                    "marked",
                    "prefork x 2, CONN_MAX_AGE = 600, no pool",
                    {
                        "workers": 1,
                        "pool": "prefork",
                        "concurrency": 2,
                        "env": {**no_pool, "BENCH_CONN_MAX_AGE": "600"},
                    },
                ),
            ]
        for i, (how, label, workers) in enumerate(runs):
            pushes, seconds, made, cpu = pipeline_run(server, customers, how, workers, str(i))
            rows.append((how, label, pushes, seconds, made, cpu))
        probed = {**RECOMMENDED, "env": {"BENCH_PROBE_DIR": probe}}
        pushes, seconds, _made, _cpu = pipeline_run(server, customers, "marked", probed, "probe")
        where = breakdown(probe, pushes, seconds, RECOMMENDED["workers"] * RECOMMENDED["concurrency"])
        plain_after = plain_loop(server, customers)
    finally:
        connection.close()
        teardown_databases(old, verbosity=0)
        server.stop()
        shutil.rmtree(probe, ignore_errors=True)
    plain = (plain + plain_after) / 2
    print(
        f"the pipeline through real workers: {RECOMMENDED['workers']} worker(s) x {RECOMMENDED['concurrency']} "
        f"{RECOMMENDED['pool']} unless said, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, "
        "budget off, fake server (its own process) answering at once"
    )
    print(f"  baseline, plain requests POST loop: {plain:.0f} requests/s (mean of one loop before, one after)")
    print(
        f"  publishing a push task: {pooled:.2f} ms through the pooled producer, {own:.2f} ms over a connection "
        f"of its own (ratio {pooled / own:.2f})"
    )
    for how, label, pushes, seconds, made, cpu in rows:
        rate = pushes / seconds
        print(
            f"  {how:<6} {label:<42} {pushes} pushes in {seconds:.2f} s = {rate:.0f} pushes/s, ratio {rate / plain:.2f}"
        )
        print(
            f"         {'marking' if how == 'marked' else 'saving'} them took this process {made:.2f} s; CPU a push: "
            + ", ".join(f"{where} {used * 1000 / pushes:.1f} ms" for where, used in cpu.items())
        )
    print(f"where a push task's time goes (a run of {args.customers} marked, bench.probe in the workers):")
    print("\n".join(where))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
