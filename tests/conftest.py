"""Shared fixtures: the fake Stripe server, settings pointing at it, real Celery workers."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from customersync.testing import FakeStripeServer
from project.celery import app as celery_app
from tests.support import Worker, wait_for_tasks  # noqa: F401  (wait_for_tasks: for the tests)


@pytest.fixture(scope="session")
def fake_stripe_server():
    """One fake Stripe server on 127.0.0.1 for the session; reset before each test."""
    server = FakeStripeServer(api_key=settings.TEST_API_KEY).start()
    yield server
    server.stop()


@pytest.fixture
def stripe(fake_stripe_server):
    """The fake server, empty, with CUSTOMERSYNC['API_BASE'] pointing at it."""
    fake_stripe_server.reset()
    with override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "API_BASE": fake_stripe_server.url}):
        yield fake_stripe_server


@pytest.fixture(scope="session")
def broker_db():
    """The test broker's Redis database, emptied once per session.

    It is the suite's own (db 15 by default): emptying it also drops messages a
    killed worker of an earlier run left unacknowledged, which Redis would
    otherwise hand back to a worker of this run an hour later.
    """
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def purge_broker(broker_db):
    """Drop messages other tests left on the broker, so a worker sees only ours."""
    celery_app.control.purge()


@pytest.fixture
def published_tasks():
    """Ids of the tasks this process publishes during the test, to wait on their results."""
    from celery.signals import before_task_publish

    ids: list[str] = []

    def remember(headers=None, **kwargs):
        ids.append(headers["id"])

    before_task_publish.connect(remember, weak=False)
    yield ids
    before_task_publish.disconnect(remember)


@pytest.fixture
def start_worker(stripe, transactional_db, purge_broker, request):
    """Start real worker processes on demand: ``worker = start_worker()``."""
    from django.db import connection

    workers: list[Worker] = []

    def start(*extra_args: str, env: dict[str, str] | None = None) -> Worker:
        worker = Worker(stripe.url, connection.settings_dict["NAME"], extra_args, env)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for worker in workers:
            print(f"--- worker log ---\n{worker.log}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
