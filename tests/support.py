"""Helpers shared by the end-to-end tests and the soak bench: real worker processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


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
        self.times: list[float] = []  # time.monotonic() at which each line was read
        self.ready = threading.Event()
        self._more = threading.Condition()
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
            with self._more:
                self.lines.append(line)
                self.times.append(time.monotonic())
                self._more.notify_all()
            if " ready." in line:
                self.ready.set()
        self.ready.set()  # the process ended: stop waiting either way
        with self._more:
            self._more.notify_all()

    def wait_for_line(self, pattern: str, count: int = 1, timeout: float = 30.0, since: int = 0) -> float:
        """Block until ``count`` log lines from line ``since`` on match ``pattern`` (a regular
        expression); returns when the last of them was read (``time.monotonic()``)."""
        regex = re.compile(pattern)

        def matches() -> list[float]:
            return [t for line, t in zip(self.lines[since:], self.times[since:], strict=True) if regex.search(line)]

        with self._more:
            found = self._more.wait_for(
                lambda: len(matches()) >= count or self.process.poll() is not None, timeout=timeout
            )
            hits = matches()
        if not found or len(hits) < count:
            raise TimeoutError(f"{len(hits)} of {count} lines matching {pattern!r} in the worker's log:\n{self.log}")
        return hits[count - 1]

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


def run_django(code: str, env: dict[str, str], timeout: float = 120) -> object:
    """Run ``code`` in a fresh Python process set up with the test settings and ``env`` (say, another
    database's CUSTOMERSYNC_TEST_DATABASE_URL); returns what it printed last, parsed as JSON."""
    # The site's Celery app (configured from the settings), as the worker has it.
    prelude = "import django, json\ndjango.setup()\nimport project.celery\n"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(REPO), **env}
    result = subprocess.run(
        [sys.executable, "-c", prelude + code], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"helper process failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def current_app():
    from project.celery import app

    return app


def wait_for_tasks(ids, timeout=60):
    """Block until every task in ``ids`` has finished (retries included)."""
    from celery.result import AsyncResult

    from customersync.sync import publisher

    assert publisher.flush(timeout), "the background publisher did not finish"

    for task_id in list(ids):
        AsyncResult(task_id, app=current_app()).get(timeout=timeout, propagate=True)


def push_in_thread(customer_pk: int):
    """Start ``sync.push`` in a thread with its own database connection; returns (thread, results).

    ``results`` gets the push's result, or the exception it raised.
    """
    from django.db import connection

    from customersync import sync

    results: list = []

    def run() -> None:
        try:
            results.append(sync.push(customer_pk))
        except Exception as err:  # the test looks at it
            results.append(err)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results


SHARED_KEYS = ("customersync:budget:*", "customersync:health:*")


def forget_shared_keys() -> None:
    """Empty what the app keeps in the shared Redis (the rate budgets, a 429's pause, the counted
    bad signatures): Stripe's side of one test, like the fake server's customers, is not the next one's."""
    import redis
    from django.conf import settings

    with redis.Redis.from_url(settings.CELERY_BROKER_URL) as client:  # the budgets' Redis in the tests
        for pattern in SHARED_KEYS:
            if keys := list(client.scan_iter(pattern)):
                client.delete(*keys)
