"""Several Stripe accounts against the fake server: two platforms, each with a connected account.

Every request carries its customer's account (the platform's key, the connected
account in Stripe-Context), pulls and pushes keep the accounts apart, the same
``cus_`` id in two accounts is two customers, and a 429 on one account pauses
that account's budget only.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from django.db import IntegrityError, transaction

from customersync import sync
from customersync.accounts import budget_name
from customersync.exceptions import RetryLater
from customersync.models import Account, Customer, SyncStatus
from customersync.stripe import rate_budget
from tests.stripe.test_ratelimit import max_in_any_second
from tests.support import wait_for_tasks

P1_KEY = "sk_test_customersync_tests"  # tests/settings.py's API_KEY: the default platform
P2_KEY = "sk_test_second_platform_key"
SAME_ID = "cus_SameIdInEveryAccount"
# label -> (the server's account the request acts on, its connected id or "", the key it must carry)
WHERE = {
    "P1": ("acct_P1", "", P1_KEY),
    "C1": ("acct_C1", "acct_C1", P1_KEY),
    "P2": ("acct_P2", "", P2_KEY),
    "C2": ("acct_C2", "acct_C2", P2_KEY),
}
PLATFORMS = {"second": {"API_KEY": P2_KEY}}


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@pytest.fixture
def fleet(stripe, settings):
    """The four accounts, registered on the fake server and as Account rows; label -> Account or None."""
    stripe.add_platform("acct_P1", [P1_KEY], connected=["acct_C1"])
    stripe.add_platform("acct_P2", [P2_KEY], connected=["acct_C2"])
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "PLATFORMS": PLATFORMS}
    yield {
        "P1": None,
        "C1": Account.objects.create(platform="default", stripe_account="acct_C1"),
        "P2": Account.objects.create(platform="second"),
        "C2": Account.objects.create(platform="second", stripe_account="acct_C2"),
    }
    stripe.forget_platforms()  # the server is the session's: the next test finds it in legacy mode


def seed_same_id(stripe) -> None:
    for label, (server_account, _, _) in WHERE.items():
        stripe.add_customer(account=server_account, id=SAME_ID, name=f"Ann of {label}", email=f"{label}@example.com")


@pytest.mark.django_db
def test_the_same_id_in_four_accounts_is_four_customers_each_pushed_to_its_own(stripe, fleet):
    seed_same_id(stripe)
    for account in fleet.values():
        sync.pull(account=account)
    customers = {label: Customer.objects.get(account=account, stripe_id=SAME_ID) for label, account in fleet.items()}
    assert {label: c.name for label, c in customers.items()} == {label: f"Ann of {label}" for label in WHERE}
    stripe.clear_requests()
    for label, customer in customers.items():
        customer.name = f"Bob of {label}"
        customer.save()
        assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED

    posts = [r for r in stripe.requests if r.method == "POST"]
    assert len(posts) == 4
    for label, request in zip(WHERE, posts, strict=True):
        server_account, connected, key = WHERE[label]
        assert request.body == f"name=Bob+of+{label}".encode()
        assert request.account == server_account and request.key_fingerprint == fingerprint(key)
        assert request.headers.get("Stripe-Context") == (connected or None)
        assert "Stripe-Account" not in request.headers
    for label, (server_account, _, _) in WHERE.items():
        assert stripe.get_customer(SAME_ID, account=server_account)["name"] == f"Bob of {label}"
        assert stripe.get_customer(SAME_ID, account=server_account)["email"] == f"{label}@example.com"


@pytest.mark.django_db
def test_a_pull_of_one_account_leaves_the_others_alone(stripe, fleet):
    seed_same_id(stripe)
    for label, (server_account, _, _) in WHERE.items():
        for i in range(3):
            stripe.add_customer(account=server_account, name=f"{label} {i}")
    for account in fleet.values():
        sync.pull(account=account)
    assert Customer.objects.count() == 16
    stripe.clear_requests()
    # A whole walk of C2, where one customer was deleted: only C2's is marked deleted.
    gone = next(c for c in stripe.customers_of("acct_C2") if c != SAME_ID)
    stripe.delete_customer(gone, account="acct_C2")
    stats = sync.pull(account=fleet["C2"])
    assert stats.deleted == 1 and stats.updated == 3
    assert {r.account for r in stripe.requests} == {"acct_C2"}
    deleted = Customer.objects.filter(sync_status=SyncStatus.DELETED)
    assert list(deleted.values_list("account__stripe_account", "stripe_id")) == [("acct_C2", gone)]


@pytest.mark.django_db
def test_stripe_id_is_unique_per_account_not_across(fleet):
    Customer.objects.create(stripe_id=SAME_ID, name="a")
    Customer.objects.create(stripe_id=SAME_ID, name="b", account=fleet["C1"])
    for account in (None, fleet["C1"]):
        with pytest.raises(IntegrityError), transaction.atomic():
            Customer.objects.create(stripe_id=SAME_ID, name="again", account=account)


@pytest.mark.django_db
def test_a_create_goes_to_the_customers_account(stripe, fleet):
    customer = Customer.objects.create(name="New in C2", account=fleet["C2"])
    assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    customer.refresh_from_db()
    (request,) = [r for r in stripe.requests if r.method == "POST"]
    assert request.path == "/v1/customers" and request.account == "acct_C2"
    assert request.headers["Stripe-Context"] == "acct_C2"
    assert stripe.get_customer(customer.stripe_id, account="acct_C2")["name"] == "New in C2"
    assert stripe.get_customer(customer.stripe_id, account="acct_P2") is None


@pytest.mark.django_db
def test_an_older_api_version_sends_stripe_account_instead(stripe, fleet, settings):
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "API_VERSION": "2024-06-20"}
    stripe.add_customer(account="acct_C1", id=SAME_ID, name="Ann")
    customer = sync.pull_one(SAME_ID, account=fleet["C1"])
    (request,) = stripe.requests
    assert request.headers["Stripe-Account"] == "acct_C1" and "Stripe-Context" not in request.headers
    assert customer.account == fleet["C1"] and request.account == "acct_C1"


@pytest.mark.django_db
def test_a_429_on_one_account_pauses_that_accounts_budget_only(stripe, fleet, settings):
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "RATE_LIMIT_PAUSE": 60.0}
    seed_same_id(stripe)
    customers = {}
    for label in ("C1", "C2"):
        customers[label] = sync.pull_one(SAME_ID, account=fleet[label])
        customers[label].name = "Edited"
        customers[label].save()
    stripe.inject(
        status=429,
        account="acct_C1",
        error={"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests"},
    )
    with pytest.raises(RetryLater):
        sync.push(customers["C1"].pk)
    c1 = rate_budget.budget(budget_name(fleet["C1"]))
    c2 = rate_budget.budget(budget_name(fleet["C2"]))
    assert c1 is not c2 and c1.try_acquire() > 50  # C1 waits out the pause
    assert sync.push(customers["C2"].pk).outcome is sync.Outcome.PUSHED  # C2 does not wait at all
    assert [(r.account, r.status) for r in stripe.requests if r.method == "POST"] == [
        ("acct_C1", 429),
        ("acct_C2", 200),
    ]
    assert stripe.get_customer(SAME_ID, account="acct_C2")["name"] == "Edited"
    assert stripe.get_customer(SAME_ID, account="acct_C1")["name"] == "Ann of C1"


# Two accounts' budgets together pass one account's rate only while workers write at once:
# SQLite takes one writer at a time.
@pytest.mark.postgresql
def test_two_accounts_each_get_their_own_budget_through_real_workers(stripe, start_worker, published_tasks, fleet):
    """Rate figures per account: each stays within its budget in every one-second window, and
    together they exceed it (one shared budget would hold both to it)."""
    for label in ("C1", "C2"):
        for i in range(30):
            stripe.add_customer(account=WHERE[label][0], name=f"{label} {i}")
        sync.pull(account=fleet[label])
    stripe.clear_requests()
    stripe.set_latency(0.01, 0.03)
    env = {"CUSTOMERSYNC_TEST_RATE_LIMIT": "8", "CUSTOMERSYNC_TEST_PLATFORMS": json.dumps(PLATFORMS)}
    start_worker("--pool=threads", "--concurrency=2", env=env)
    for customer in Customer.objects.all():
        customer.name = f"{customer.name} edited"
        customer.save()
    wait_for_tasks(published_tasks, timeout=120)

    posts = [r for r in stripe.requests if r.method == "POST"]
    assert len(posts) == 60 and all(r.status == 200 for r in posts)
    by_account = {a: [r.time for r in posts if r.account == a] for a in ("acct_C1", "acct_C2")}
    figures = {a: max_in_any_second(times) for a, times in by_account.items()}
    print("most requests in one second, per account:", figures)
    assert all(1 <= n <= 8 for n in figures.values()), figures
    assert max_in_any_second([r.time for r in posts]) > 8  # the accounts were not held to one budget
    assert not Customer.objects.exclude(sync_status=SyncStatus.IN_SYNC).exists()


def test_a_forked_worker_opens_its_own_connections_not_its_parents(stripe):
    """A prefork worker forked after its parent talked to Stripe: two processes reading one
    inherited keep-alive socket would garble each other's answers, so the child's client is its own."""
    import os

    from customersync import accounts

    parent = accounts.client_for(None)
    parent.retrieve_customer(stripe.add_customer(name="Ann")["id"])  # a connection left open
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's cleanup
        child = accounts.client_for(None)
        os.write(write, b"own" if child is not parent else b"shared")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.waitpid(pid, 0)
    assert answer == b"own"
    assert accounts.client_for(None) is parent  # the parent keeps its own
