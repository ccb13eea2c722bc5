"""Shared fixtures: the fake Stripe server, settings pointing at it, real Celery workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings

from customersync.testing import FakeStripeServer
from project.celery import app as celery_app

REPO = Path(__file__).resolve().parent.parent


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


class Worker:
    """A real ``celery worker`` process on the test database and the fake server."""

    def __init__(
        self, api_base: str, db_name: str, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> None:
        env = {
            **os.environ,
            **(env or {}),
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "CUSTOMERSYNC_TEST_DB_NAME": db_name,
            "CUSTOMERSYNC_TEST_API_BASE": api_base,
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
        }
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "project",
                "worker",
                # Defaults first: a later --pool or --loglevel in extra_args wins.
                "--pool=solo",
                "--loglevel=INFO",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                f"--hostname=test-{os.getpid()}-{id(self)}@%h",
                *extra_args,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self.ready.wait(timeout=60):
            self.stop()
            raise RuntimeError("Celery worker did not become ready:\n" + self.log)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if " ready." in line:
                self.ready.set()
        self.ready.set()  # the process ended: stop waiting either way

    @property
    def log(self) -> str:
        return "".join(self.lines)

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, no acknowledgement, no cleanup."""
        self.process.kill()
        self.process.wait()
        self._reader.join(timeout=5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)


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


def wait_for_tasks(ids, timeout=60):
    """Block until every task in ``ids`` has finished (retries included)."""
    from celery.result import AsyncResult

    for task_id in list(ids):
        AsyncResult(task_id, app=celery_app).get(timeout=timeout, propagate=True)


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
