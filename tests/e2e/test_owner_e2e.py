"""Owners end to end: saves through a real worker, and creation raced across processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.db import connection, transaction

from customersync import sync
from customersync.models import Customer, SyncStatus
from tests.e2e.test_e2e import canary, posts_for  # noqa: F401  (canary: a fixture)
from tests.owners import field, identity, make_owner, owner_model
from tests.support import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_owner_edit_reaches_stripe_through_a_worker_as_exactly_that_param(stripe, start_worker, canary):  # noqa: F811
    owner = make_owner(**{field("email"): "billing@acme.test", "city": "Paris", "country": "FR"})
    customer = sync.get_or_create_for(owner, wait=True)
    stripe.clear_requests()
    start_worker()
    with transaction.atomic():
        setattr(owner, field("email"), "accounts@acme.test")
        owner.save()
    canary()  # everything queued before it has been sent
    (request,) = posts_for(stripe, customer)
    assert request.body == b"email=accounts%40acme.test"
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC and customer.email == "accounts@acme.test"


def test_owner_save_changing_nothing_mapped_sends_nothing_through_a_worker(stripe, start_worker, canary):  # noqa: F811
    owner = make_owner(**{field("email"): "billing@acme.test"})
    customer = sync.get_or_create_for(owner, wait=True)
    stripe.clear_requests()
    start_worker()
    owner.plan_note = "renewal in March"
    owner.save()
    canary()
    assert posts_for(stripe, customer) == []


def _race(owner_pk: int, processes: int, threads: int, api_base: str) -> list[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CUSTOMERSYNC_TEST_DB_NAME": connection.settings_dict["NAME"],
        "CUSTOMERSYNC_TEST_API_BASE": api_base,
        "PYTHONPATH": str(REPO),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.owner_race", str(owner_pk), str(threads)],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for proc in procs:  # every thread of every process is waiting on "go"
            line = proc.stdout.readline().strip()
            assert line == "ready", proc.stderr.read()
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        lines = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            lines += out.splitlines()
        return lines
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


# Sixteen writers at once: SQLite serializes them, and one that waits past its busy timeout fails
# "database is locked" before the race this test is about.
@pytest.mark.postgresql
def test_get_or_create_for_from_8_threads_in_2_processes_makes_one_customer(stripe, purge_broker):
    owner = make_owner("Raced", **{field("email"): "race@acme.test"})
    # The first create is applied at Stripe and its answer dropped: the caller
    # that sent it cannot know it succeeded.
    stripe.inject(action="drop_after", method="POST", path_prefix="/v1/customers")
    lines = _race(owner.pk, processes=2, threads=8, api_base=stripe.url)

    assert len(lines) == 16, lines
    assert [line for line in lines if not line.startswith("id cus_")] == []
    (stripe_id,) = {line.removeprefix("id ") for line in lines}
    assert list(stripe.customers) == [stripe_id]
    assert stripe.customers[stripe_id]["metadata"]["customersync_owner"] == identity(owner)
    (customer,) = Customer.objects.filter(owner=owner)
    assert customer.stripe_id == stripe_id
    creates = [r for r in stripe.requests if r.method == "POST" and r.path == "/v1/customers"]
    assert creates[0].status is None  # the dropped answer happened
    assert len({r.idempotency_key for r in creates}) == 1  # every create under the owner's one key
    assert owner_model().objects.filter(pk=owner.pk).exists()
