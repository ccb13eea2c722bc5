"""The shared rate budget: correctness only (speed is measured by ``python -m bench``)."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings

from customersync import sync
from customersync.models import Customer, PendingPush, PushState
from customersync.stripe.rate_budget import RateBudget
from tests.support import wait_for_tasks


def max_in_any_second(times: list[float]) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    yield client
    client.close()


def sent_times(budget, clients: int, slow=None, late=None) -> list[float]:
    """``clients`` threads taking ``budget`` for 2.5 s (``slow()``: seconds between acquire() and
    sending(), a freeze the database made slow; ``late()``: seconds between sending() and the
    write, a thread the machine did not run in time); the times their requests are written."""
    import threading
    import time

    sent: list[float] = []
    lock = threading.Lock()

    def client():
        stop = time.monotonic() + 2.5
        while time.monotonic() < stop:
            budget.acquire(timeout=5)
            if slow is not None:
                time.sleep(slow())
            written = budget.sending()
            if late is not None:
                time.sleep(late())
            with lock:
                sent.append(time.monotonic())
            if written is not None:
                written()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sent


@pytest.mark.parametrize("algorithm", ["paced", "window", "bucket"])
def test_budget_never_grants_more_than_the_rate_in_any_second(redis_client, algorithm):
    import time

    budget = RateBudget(redis_client, 15, name=f"test-{algorithm}-{time.time()}", algorithm=algorithm)
    granted = sent_times(budget, 6)
    assert max_in_any_second(granted) <= 15
    assert len(granted) >= 15 * 2  # and it does grant: about the rate, not a trickle


def test_paced_requests_late_for_their_times_still_never_crowd_a_second(redis_client):
    """Slow freezes between acquire() and sending(), at random: the times requests really leave
    (after sending()) never hold more than the rate in any second, and the budget is still used."""
    import random
    import time

    budget = RateBudget(redis_client, 20, name=f"test-late-{time.time()}", algorithm="paced")
    chance = random.Random(7)
    sent = sent_times(budget, 8, slow=lambda: chance.choice([0, 0, 0, 0.03, 0.08, 0.15]))
    assert max_in_any_second(sent) <= 20
    assert len(sent) >= 20 * 2


def test_paced_requests_written_late_still_never_crowd_a_second(redis_client):
    """Writes late after sending(), at random (the interpreter lock, a busy machine): the budget
    logs each request when it is written, not when it was let go, so the writes never hold more
    than the rate in any second."""
    import random
    import time

    budget = RateBudget(redis_client, 20, name=f"test-written-{time.time()}", algorithm="paced")
    chance = random.Random(11)
    written = sent_times(budget, 8, late=lambda: chance.choice([0, 0, 0, 0, 0.02, 0.04, 0.06]))
    assert max_in_any_second(written) <= 20
    assert len(written) >= 20 * 2


def test_paced_times_nobody_reserved_while_every_worker_was_busy_are_not_lost(redis_client):
    """Every worker busy for 0.3 s, reserving nothing: the next reservations get the times they
    missed (up to CATCH_UP back, already due: the log of writes still holds the rate), not one
    interval after another from now on, which would lose those 0.3 s of the budget for good."""
    import time

    budget = RateBudget(redis_client, 20, name=f"test-catch-up-{time.time()}", algorithm="paced")
    assert budget.try_acquire() == 0
    time.sleep(0.3)  # the busy workers (the scenario, not a wait for anything)
    reserved = []
    for _ in range(4):
        assert budget.try_acquire() == 0
        reserved.append(budget._slots.at)
    now = time.monotonic()
    assert all(at <= now for at in reserved), [round(at - now, 3) for at in reserved]
    assert all(b - a > 0.04 for a, b in zip(reserved, reserved[1:], strict=False))  # still one per interval


def test_paced_requests_let_go_together_are_spread_half_an_interval_apart(redis_client):
    """Times caught up after a busy spell are all due at once: the requests still go at least half
    an interval apart (Redis's clock), not in a burst that the log of writes would echo a second later."""
    import threading
    import time

    budget = RateBudget(redis_client, 20, name=f"test-gap-{time.time()}", algorithm="paced")
    assert budget.try_acquire() == 0
    time.sleep(0.3)  # the busy workers (the scenario, not a wait for anything)

    def client():
        budget.acquire(timeout=5)
        budget.sending()  # never written: each stays "going", scored when it was let go

    threads = [threading.Thread(target=client) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    let_go = [score for _member, score in redis_client.zrange(budget.going_key, 0, -1, withscores=True)]
    assert len(let_go) == 5
    assert min(b - a for a, b in zip(let_go, let_go[1:], strict=False)) >= 0.5 / 20 * 1_000_000


def test_paced_times_during_a_pause_for_a_429_are_not_caught_up_after_it(redis_client):
    import time

    budget = RateBudget(redis_client, 20, name=f"test-pause-{time.time()}", algorithm="paced")
    paused_at = time.monotonic()
    budget.penalize(0.2)
    assert budget.try_acquire() > 0  # paused
    time.sleep(0.3)  # the pause runs out (the scenario, not a wait for anything)
    assert budget.try_acquire() == 0
    assert budget._slots.at >= paused_at + 0.15  # from the pause's end, not handed out from before it


def test_a_request_let_go_counts_until_it_is_written_then_at_its_write(redis_client):
    import time

    budget = RateBudget(redis_client, 20, name=f"test-going-{time.time()}", algorithm="paced")
    budget.acquire()
    written = budget.sending()
    assert (redis_client.zcard(budget.going_key), redis_client.zcard(budget.sent_key)) == (1, 0)
    written()
    assert (redis_client.zcard(budget.going_key), redis_client.zcard(budget.sent_key)) == (0, 1)


def test_penalty_pauses_everyone(redis_client):
    import time

    name = f"test-penalty-{time.time()}"
    first = RateBudget(redis_client, 100, name=name)
    second = RateBudget(redis_client, 100, name=name)  # another worker
    assert first.try_acquire() == 0
    first.penalize(1.5)
    assert second.try_acquire() > 1.0


@pytest.mark.parametrize("algorithm", ["paced", "window", "bucket"])
def test_a_pause_is_not_slept_through_acquire_raises_paused_with_what_is_left(redis_client, algorithm):
    import time

    from customersync.exceptions import Paused

    budget = RateBudget(redis_client, 20, name=f"test-paused-{algorithm}-{time.time()}", algorithm=algorithm)
    budget.penalize(30)
    with pytest.raises(Paused) as info:
        budget.acquire()  # at once: the old budget slept here, holding the worker
    assert 25 < info.value.seconds <= 30 and budget.name in info.value.error.message
    assert budget.try_acquire() > 25  # still answers the wait, for callers that only ask
    redis_client.delete(budget.penalty_key, budget.key)
    budget.acquire()  # the pause over, a grant as before


def test_a_pause_that_begins_after_the_grant_stops_sending_with_paused(redis_client):
    import time

    from customersync.exceptions import Paused

    budget = RateBudget(redis_client, 20, name=f"test-paused-sending-{time.time()}", algorithm="paced")
    budget.acquire()
    budget.penalize(30)  # a 429 for another of the account's customers, in between
    with pytest.raises(Paused) as info:
        budget.sending()
    assert 25 < info.value.seconds <= 30
    assert redis_client.zcard(budget.going_key) == 0  # nothing let go


def test_a_local_budgets_pause_raises_paused_too():
    from customersync.exceptions import Paused
    from customersync.stripe.rate_budget import LocalBudget

    budget = LocalBudget(100)
    budget.acquire()
    budget.penalize(30)
    with pytest.raises(Paused) as info:
        budget.acquire()
    assert 25 < info.value.seconds <= 30


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_four_workers_in_two_processes_stay_within_ten_per_second(stripe, start_worker, published_tasks):
    for i in range(40):
        stripe.add_customer(name=f"c{i}")
    sync.pull()
    stripe.clear_requests()
    stripe.set_latency(0.02, 0.08)
    env = {"CUSTOMERSYNC_TEST_RATE_LIMIT": "10"}
    start_worker("--pool=threads", "--concurrency=2", env=env)
    start_worker("--pool=threads", "--concurrency=2", env=env)
    for customer in Customer.objects.all():
        customer.name = f"{customer.name} edited"
        customer.save()
    wait_for_tasks(published_tasks, timeout=120)

    posts = [r for r in stripe.requests if r.method == "POST"]
    assert len(posts) == 40 and all(r.status == 200 for r in posts)  # all delivered
    assert max_in_any_second([r.time for r in posts]) <= 10
    assert not PendingPush.objects.filter(state__in=[PushState.PENDING, PushState.SENDING]).exists()


@pytest.mark.django_db
def test_a_burst_of_saves_joins_one_queued_push(stripe, django_capture_on_commit_callbacks):
    customer = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    with django_capture_on_commit_callbacks() as callbacks:
        for i in range(5):
            customer.name = f"Ann {i}"
            customer.save()
    assert len(callbacks) == 1  # one task queued
    assert PendingPush.objects.filter(customer=customer).count() == 1
    sync.push(customer.pk)
    assert [r.body for r in stripe.requests if r.method == "POST"] == [b"name=Ann+4"]


@pytest.mark.django_db
def test_mark_for_push_after_queryset_update(stripe, django_capture_on_commit_callbacks):
    for i in range(5):
        stripe.add_customer(name=f"c{i}")
    sync.pull()
    Customer.objects.filter(name__in=["c1", "c3"]).update(description="bulk edited")  # no save() signals
    with django_capture_on_commit_callbacks() as callbacks:
        marked = sync.mark_for_push(Customer.objects.all())
    assert marked == 2 and len(callbacks) == 1  # one drain task, not one task per customer
    assert PendingPush.objects.filter(enqueued_at=None).count() == 2
    assert sync.mark_for_push(Customer.objects.all()) == 2  # idempotent: no second record
    assert PendingPush.objects.count() == 2
    published, left = sync.drain()
    assert (published, left) == (2, 0)
    sync.publisher.flush()
    for pk in Customer.objects.filter(description="bulk edited").values_list("pk", flat=True):
        sync.push(pk)
    assert sorted(r.body for r in stripe.requests if r.method == "POST") == [b"description=bulk+edited"] * 2


@pytest.mark.django_db
def test_the_drain_publishes_its_batch_and_stamps_it_in_constant_queries(stripe, purge_broker, published_tasks):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for count in (2, 6):
        for i in range(count):
            stripe.add_customer(name=f"d{count}-{i}")
        sync.pull()
        Customer.objects.filter(name__startswith=f"d{count}-").update(description=f"bulk {count}")
        assert sync.mark_for_push(Customer.objects.filter(name__startswith=f"d{count}-")) == count
        published_tasks.clear()
        with CaptureQueriesContext(connection) as queries:
            assert sync.drain() == (count, 0)
        # The customers' ids, one UPDATE stamping them all, what is left: the same for 2 and for 6.
        assert len(queries.captured_queries) == 3
        assert len(published_tasks) == count
        assert not PendingPush.objects.filter(state=PushState.PENDING, enqueued_at=None).exists()


@pytest.mark.django_db(transaction=True)
def test_the_grant_is_taken_right_before_the_request_not_before_a_slow_freeze(stripe):
    """An operator's save holds the customer's row while the push freezes its change: the
    request must still leave within the budget's slack of its grant, or grants 1.1 s apart
    become more than ``rate`` arrivals in one second at Stripe."""
    import threading
    import time
    from unittest import mock

    from django.db import connection, transaction

    from customersync.stripe import rate_budget
    from customersync.stripe.rate_budget import WINDOW_SLACK

    customer = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    customer.name = "Bea"
    customer.save()
    grants: list[float] = []
    budget = mock.Mock(acquire=lambda timeout=None: grants.append(time.monotonic()))
    locked, release = threading.Event(), threading.Event()

    def operator() -> None:
        try:
            with transaction.atomic():
                Customer.objects.select_for_update().get(pk=customer.pk)
                locked.set()
                release.wait(5)
        finally:
            connection.close()

    thread = threading.Thread(target=operator)
    thread.start()
    locked.wait(5)
    threading.Timer(0.3, release.set).start()  # the save commits 0.3 s into the push
    with mock.patch.object(rate_budget, "budget", return_value=budget):
        assert sync.push(customer.pk).outcome is sync.Outcome.PUSHED
    thread.join()
    (request,) = [r for r in stripe.requests if r.method == "POST"]
    assert len(grants) == 1
    assert request.time - grants[0] < WINDOW_SLACK, f"sent {request.time - grants[0]:.2f}s after its grant"
