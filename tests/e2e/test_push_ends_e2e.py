"""Through a real worker: a push that cannot succeed ends recorded, and a pause holds no worker.

A real Celery worker process, Redis, the test database and the fake server; every
assertion is on what the worker left in the database and what the server received.
"""

from __future__ import annotations

import json

import pytest
import redis
from celery.result import AsyncResult
from celery.signals import before_task_publish
from django.conf import settings

from customersync import sync
from customersync.accounts import budget_name
from customersync.models import Account, Customer, PendingPush, PushState, SyncStatus
from customersync.push.outbox import PUSH_TASK
from customersync.stripe import rate_budget
from tests.support import current_app, wait_for_tasks

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def tasks_by_customer():
    """The push tasks this process publishes during the test: customer pk -> task ids."""
    found: dict[int, list[str]] = {}

    def remember(headers=None, **kwargs):
        if headers and headers.get("task") == PUSH_TASK:
            pk = int(str(headers.get("argsrepr", "")).strip("(),[] ").split(",")[0])
            found.setdefault(pk, []).append(headers["id"])

    before_task_publish.connect(remember, weak=False)
    yield found
    before_task_publish.disconnect(remember)


def outcome_of(task_ids, timeout=30):
    return [AsyncResult(i, app=current_app()).get(timeout=timeout) for i in task_ids]


# -- a push no retry can help ends failed, once: not re-sent by every run, not swept again ---------


HOSTILE = [
    pytest.param(dict(status=None, headers={"Content-Length": "\u00b2"}), "Content-Length", id="length-²"),
    pytest.param(dict(status=200, answer={"created": "yesterday"}), "TypeError", id="created-text"),
    pytest.param(dict(status=200, answer={"name": "\ud800"}), "", id="surrogate"),
]


@pytest.mark.parametrize(("fault", "says"), HOSTILE)
def test_a_200_that_cannot_be_read_ends_the_workers_push_failed_once(
    stripe, start_worker, published_tasks, fault, says
):
    customer = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    start_worker()
    stripe.clear_requests()
    answer = fault.pop("answer", None)
    if answer is not None:
        fault["body"] = json.dumps({**stripe.get_customer(customer.stripe_id), "name": "Bea", **answer})
    stripe.inject(**fault)
    customer.name = "Bea"
    customer.save()
    wait_for_tasks(published_tasks)

    assert outcome_of(published_tasks) == ["failed"]  # the task ended, recorded: no exception, no retry
    assert [(r.method, r.path, r.body) for r in stripe.requests] == [
        ("POST", f"/v1/customers/{customer.stripe_id}", b"name=Bea")
    ]
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.FAILED and says in customer.sync_error["message"]
    assert customer.stripe_data["name"] == "Ann"
    assert list(PendingPush.objects.filter(customer=customer).values_list("state", flat=True)) == [PushState.FAILED]
    assert sync.sweep(older_than=0) == 0  # nothing left for the sweeper to send again


def test_a_customer_of_a_platform_the_workers_settings_lack_ends_failed_once(stripe, start_worker, published_tasks):
    start_worker(env={"CUSTOMERSYNC_TEST_PLATFORMS": "{}"})
    gone = Account.objects.create(platform="gone")
    customer = Customer.objects.create(name="New", account=gone)
    wait_for_tasks(published_tasks)

    assert outcome_of(published_tasks) == ["failed"]
    assert stripe.requests == []
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.FAILED and customer.sync_error["type"] == "ConfigurationError"
    assert "No platform 'gone'" in customer.sync_error["message"]
    assert list(PendingPush.objects.filter(customer=customer).values_list("state", flat=True)) == [PushState.FAILED]
    assert sync.sweep(older_than=0) == 0


# -- a paused account holds no worker -----------------------------------------------------


@pytest.fixture
def two_accounts(stripe):
    stripe.add_platform("acct_P1", [settings.TEST_API_KEY], connected=["acct_C1", "acct_C2"])
    yield (
        Account.objects.create(platform="default", stripe_account="acct_C1"),
        Account.objects.create(platform="default", stripe_account="acct_C2"),
    )
    stripe.forget_platforms()


def test_a_push_for_another_account_completes_while_one_account_is_paused(
    stripe, start_worker, published_tasks, tasks_by_customer, two_accounts
):
    paused, other = two_accounts
    waiting = [
        sync.pull_one(stripe.add_customer(account="acct_C1", name=f"A{i}")["id"], account=paused) for i in range(4)
    ]
    customer = sync.pull_one(stripe.add_customer(account="acct_C2", name="B")["id"], account=other)
    start_worker("--pool=threads", "--concurrency=2")
    stripe.clear_requests()
    # The account's budget as the worker has it, in the broker's Redis.
    budget = rate_budget.RateBudget(redis.Redis.from_url(settings.CELERY_BROKER_URL), 50, name=budget_name(paused))
    budget.penalize(5.0)
    try:
        for edited in [*waiting, customer]:  # more of the paused account's pushes than worker threads, first
            edited.name += " edited"
            edited.save()
        assert sync.publisher.flush(30)  # every task published
        assert outcome_of(tasks_by_customer[customer.pk]) == ["pushed"]
        # The ordering: the other account's push completed while the pause was still on.
        assert budget.redis.pttl(budget.penalty_key) > 0
        wait_for_tasks(published_tasks, timeout=60)
    finally:
        budget.redis.delete(budget.penalty_key, budget.key)
        budget.redis.close()

    posts = [r for r in stripe.requests if r.method == "POST"]
    assert [r.account for r in posts] == ["acct_C2"] + ["acct_C1"] * 4  # the paused account's after it
    assert all(r.status == 200 for r in posts)
    assert set(Customer.objects.values_list("sync_status", flat=True)) == {SyncStatus.IN_SYNC}
    assert all(outcome == "pushed" for outcome in outcome_of(published_tasks))
