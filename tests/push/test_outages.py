"""PostgreSQL stops between Stripe's answer and storing it; the push recovers without the sweeper.

Each test has a PostgreSQL of its own (``PrivatePostgres``): a helper process
migrates it, mirrors a customer and saves an edit; a real worker (no beat, no
sweeper anywhere) pushes it. The fake server holds the request until the test
has stopped the database, so Stripe's 200 arrives with the database gone. The
database comes back on an event (the worker's log says it is waiting for it),
never after a blind sleep; the time from its return to the customer being in
sync is measured and printed.

Redis wiped or a message lost is not a database outage: the outbox record
stays, and the sweeper queues it again (``test_reliability``).
"""

from __future__ import annotations

import time

import pytest

from tests.private_services import PrivatePostgres
from tests.support import Worker, run_django

pytestmark = [pytest.mark.e2e]

HELD = 1.5  # seconds the fake server holds the request: enough to stop the database meanwhile
# Celery's copy of each log line (the test settings' console handler prints another).
STORING_AGAIN = r"/MainProcess\] Stripe confirmed \d+ but the database is unavailable; storing its answer again"
RETRY = r"customersync\.push_customer\[[^\]]+\] retry: "
PUSHED = r"Pushed \d+ \(cus_\w+\): Stripe confirmed\."

PREPARE = """
from django.core.management import call_command
from customersync import sync
call_command("migrate", verbosity=0)
customer = sync.pull_one({stripe_id!r})
customer.name = "Bob"
customer.save()
assert sync.publisher.flush(30), "the push task was not published"
print(json.dumps(customer.pk))
"""


@pytest.fixture
def private_db():
    with PrivatePostgres() as pg:
        pg.create_database("outage")
        yield pg


@pytest.fixture
def outage(stripe, purge_broker, private_db, request):
    """Start a worker on the private database (``env`` on top) once a customer's edit is queued.

    Returns (worker, customer pk, its path at the fake server).
    """
    workers: list[Worker] = []
    db_env = {"CUSTOMERSYNC_TEST_DATABASE_URL": private_db.url_for("outage"), "CUSTOMERSYNC_TEST_DB_NAME": "outage"}

    def start(env: dict[str, str]) -> tuple[Worker, int, str]:
        stripe_id = stripe.add_customer(name="Ann")["id"]
        path = f"/v1/customers/{stripe_id}"
        stripe.inject(delay=HELD, path_prefix=path)  # the request reaches the server, then waits
        pk = run_django(PREPARE.format(stripe_id=stripe_id), {**db_env, "CUSTOMERSYNC_TEST_API_BASE": stripe.url})
        worker = Worker(stripe.url, "outage", env={**db_env, **env})
        workers.append(worker)
        return worker, int(pk), path

    yield start
    for worker in workers:
        worker.stop()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for worker in workers:
            print(f"--- worker log ---\n{worker.log}\n--- postgres log ---\n{private_db.log}")


def stop_during_request(stripe, pg, path):
    stripe.wait_for_arrivals(1, timeout=30, method="POST", path_prefix=path)
    pg.stop()  # before the server answers: the 200 arrives with the database gone


def customer_row(pg, pk):
    (row,) = pg.query(
        "outage", "SELECT name, sync_status, stripe_data->>'name' FROM customersync_customer WHERE id = %s", (pk,)
    )
    return row


def record_states(pg, pk):
    rows = pg.query("outage", "SELECT state FROM customersync_pendingpush WHERE customer_id = %s ORDER BY id", (pk,))
    return [state for (state,) in rows]


def posts(stripe, path):
    return sorted((r for r in stripe.requests if r.method == "POST" and r.path == path), key=lambda r: r.time)


def test_database_back_within_the_in_process_window_no_second_request(stripe, outage, private_db):
    worker, pk, path = outage({})  # LEASE_SECONDS 30: the answer is kept for up to 15 s
    stop_during_request(stripe, private_db, path)
    down = time.monotonic()
    # Down for a few seconds: until the worker has tried to store the answer four times.
    worker.wait_for_line(STORING_AGAIN, count=4, timeout=30)
    private_db.start()
    back = time.monotonic()
    synced = worker.wait_for_line(PUSHED, timeout=30)
    print(f"database down {back - down:.1f}s; back -> in sync {synced - back:.2f}s (in-process retry)")

    (request,) = posts(stripe, path)  # Stripe was asked once: its answer was kept, not asked for again
    assert request.status == 200 and not request.replayed and request.body == b"name=Bob"
    assert customer_row(private_db, pk) == ("Bob", "in_sync", "Bob")
    assert stripe.get_customer(path.rsplit("/", 1)[1])["name"] == "Bob"
    assert record_states(private_db, pk) == ["sent"]
    assert "retry:" not in worker.log and "Sweeper" not in worker.log


def test_database_down_past_the_window_the_task_resumes_its_lease_and_replays(stripe, outage, private_db):
    # LEASE_SECONDS 4: the worker keeps the answer for 2 s, then the task is retried.
    worker, pk, path = outage({"CUSTOMERSYNC_TEST_LEASE_SECONDS": "4"})
    stop_during_request(stripe, private_db, path)
    down = time.monotonic()
    # Down past the lease: until two retried runs have found it still down (they start without it).
    worker.wait_for_line(RETRY, count=3, timeout=60)
    private_db.start()
    back = time.monotonic()
    synced = worker.wait_for_line(PUSHED, timeout=60)
    print(f"database down {back - down:.1f}s; back -> in sync {synced - back:.2f}s (task retry, lease resumed)")

    first, *rest = posts(stripe, path)
    assert first.status == 200 and not first.replayed
    # Resent under the same key with the same body: Stripe replays its answer, applies nothing twice.
    assert [(r.idempotency_key, r.body, r.replayed) for r in rest] == [(first.idempotency_key, first.body, True)]
    assert customer_row(private_db, pk) == ("Bob", "in_sync", "Bob")
    assert record_states(private_db, pk) == ["sent"]
    assert "Took over the lease" not in worker.log and "Sweeper" not in worker.log
