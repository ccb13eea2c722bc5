"""``--account`` scopes a command's whole run, not only the ids it is given.

Four accounts (two platforms, each with a connected account), one customer of each owing
Stripe a push: ``customersync_push --account X`` pushes X's only, and its exit status is
X's alone; ``customersync_pull`` and ``customersync_link`` read and write X's customers only.
Through ``call_command`` and through ``manage.py`` in a process of its own (its exit status).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from customersync import sync
from customersync.models import Customer, SyncStatus
from tests.accounts.test_accounts import PLATFORMS, SAME_ID, WHERE, seed_same_id
from tests.accounts.test_accounts import fleet as fleet  # the fixture, for these tests
from tests.owners import make_owner, owner_metadata_key
from tests.support import REPO

REFUSED = {"type": "invalid_request_error", "message": "Refused for this account.", "param": "name"}
# label -> what --account names it
NAMED = {"P1": "default", "C1": "default/acct_C1", "P2": "second", "C2": "second/acct_C2"}


@pytest.fixture
def owed(stripe, fleet, settings):
    """One customer in each account, mirrored and then renamed here: each owes Stripe a push, left to
    the command (no task is queued: nothing but the command pushes them)."""
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "PUSH_ON_SAVE": False}
    customers = {}
    for label, (server_account, _, _) in WHERE.items():
        created = stripe.add_customer(account=server_account, name=f"Ann of {label}")
        customer = sync.pull_one(created["id"], account=fleet[label])
        customer.name = f"Bob of {label}"
        customer.save()
        customers[label] = customer
    stripe.clear_requests()
    return customers


def statuses(owed) -> dict[str, str]:
    return {label: Customer.objects.get(pk=c.pk).sync_status for label, c in owed.items()}


def push_lines(*args: str) -> list[str]:
    out = StringIO()
    call_command("customersync_push", *args, stdout=out, stderr=StringIO())
    return out.getvalue().splitlines()


# -- customersync_push --------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("label", list(NAMED))
def test_push_with_an_account_and_no_ids_pushes_that_accounts_customers_only(stripe, owed, label):
    # Every other account's push would be refused: none is sent, none fails this run.
    for other, (server_account, _, _) in WHERE.items():
        if other != label:
            stripe.inject(status=400, error=REFUSED, account=server_account)
    customer = owed[label]
    assert push_lines("--account", NAMED[label]) == [
        f"{customer.stripe_id}: pushed [name=Bob+of+{label}]",
        "1 customer processed.",
    ]
    server_account = WHERE[label][0]
    assert [(r.method, r.path, r.account) for r in stripe.requests] == [
        ("POST", f"/v1/customers/{customer.stripe_id}", server_account)
    ]
    assert statuses(owed) == {other: SyncStatus.IN_SYNC if other == label else SyncStatus.PENDING for other in WHERE}


@pytest.mark.django_db
def test_push_with_an_account_fails_on_that_accounts_refusal_only(stripe, owed):
    stripe.inject(status=400, error=REFUSED, account="acct_C1")
    with pytest.raises(CommandError) as info:
        push_lines("--account", "default/acct_C1")
    assert str(info.value).startswith("1 of 1 customer failed")
    assert {r.account for r in stripe.requests} == {"acct_C1"}
    assert statuses(owed) == {
        "P1": SyncStatus.PENDING,
        "C1": SyncStatus.FAILED,
        "P2": SyncStatus.PENDING,
        "C2": SyncStatus.PENDING,
    }


@pytest.mark.django_db
def test_push_without_an_account_and_without_ids_pushes_every_accounts_customers(stripe, owed):
    lines = push_lines()
    assert lines[-1] == "4 customers processed."
    assert sorted(r.account for r in stripe.requests) == sorted(where[0] for where in WHERE.values())
    assert set(statuses(owed).values()) == {SyncStatus.IN_SYNC}


@pytest.mark.django_db
def test_push_of_ids_finds_them_in_the_account_only(stripe, owed):
    # The same id in two accounts: --account says which customer it is.
    with pytest.raises(CommandError, match="No local customer with Stripe id"):
        push_lines("--account", "second", owed["C2"].stripe_id)
    assert push_lines("--account", "second/acct_C2", owed["C2"].stripe_id)[-1] == "1 customer processed."
    assert [r.account for r in stripe.requests] == ["acct_C2"]


def manage(*args: str, stripe) -> subprocess.CompletedProcess:
    """``manage.py`` in a process of its own, on this test's database and fake server; without the
    shared rate budget, which this test is not about (its pacing follows Redis's clock, and a
    clock stepped back while an account's last slot is kept stalls that account's next push)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CUSTOMERSYNC_TEST_DB_NAME": connection.settings_dict["NAME"],
        "CUSTOMERSYNC_TEST_API_BASE": stripe.url,
        "CUSTOMERSYNC_TEST_PLATFORMS": json.dumps(PLATFORMS),
        "CUSTOMERSYNC_TEST_RATE_LIMIT": "0",
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.django_db(transaction=True)
def test_the_push_commands_exit_status_is_its_accounts_alone(stripe, owed):
    stripe.inject(status=400, error=REFUSED, account="acct_C1")
    ok = manage("customersync_push", "--account", "second/acct_C2", stripe=stripe)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[-1] == "1 customer processed."
    assert [r.account for r in stripe.requests] == ["acct_C2"]
    refused = manage("customersync_push", "--account", "default/acct_C1", stripe=stripe)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "CommandError: 1 of 1 customer failed" in refused.stderr
    assert [r.account for r in stripe.requests] == ["acct_C2", "acct_C1"]
    assert statuses(owed) == {
        "P1": SyncStatus.PENDING,
        "C1": SyncStatus.FAILED,
        "P2": SyncStatus.PENDING,
        "C2": SyncStatus.IN_SYNC,
    }


# -- customersync_pull and customersync_link ----------------------------------------------------


@pytest.mark.django_db
def test_pull_with_an_account_reads_and_writes_that_accounts_customers_only(stripe, fleet):
    seed_same_id(stripe)
    call_command("customersync_pull", "--account", "second/acct_C2", stdout=StringIO())
    assert {r.account for r in stripe.requests} == {"acct_C2"}
    assert list(Customer.objects.values_list("account__stripe_account", "stripe_id", "name")) == [
        ("acct_C2", SAME_ID, "Ann of C2")
    ]
    stripe.clear_requests()
    call_command("customersync_pull", "--account", "second", SAME_ID, stdout=StringIO())
    assert [r.account for r in stripe.requests] == ["acct_P2"]
    assert sorted(Customer.objects.values_list("name", flat=True)) == ["Ann of C2", "Ann of P2"]


@pytest.mark.django_db
def test_link_with_an_account_links_that_accounts_customers_only(stripe, fleet):
    owner = make_owner("Acme")
    key = owner_metadata_key()[len("metadata[") : -1]
    mirrored = {}
    for label, (server_account, _, _) in WHERE.items():
        created = stripe.add_customer(account=server_account, name=f"Acme in {label}", metadata={key: str(owner.pk)})
        mirrored[label] = sync.pull_one(created["id"], account=fleet[label])
    call_command("customersync_link", "--metadata", key, "--account", "second/acct_C2", stdout=StringIO())
    linked = {label: Customer.objects.get(pk=c.pk).owner_id for label, c in mirrored.items()}
    assert linked == {"P1": None, "C1": None, "P2": None, "C2": owner.pk}
