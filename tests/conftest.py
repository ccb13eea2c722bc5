"""Shared fixtures: the fake Stripe server, settings pointing at it, real Celery workers."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings

from customersync.testing import FakeStripeServer
from project.celery import app as celery_app
from tests.support import REPO, Worker, forget_shared_keys, wait_for_tasks  # noqa: F401  (wait_for_tasks: for the tests)

# The tests of an owner whose details live on related models need that site (``tests.teamapp``):
# ``tests/owner/test_owner_setups.py`` runs them with CUSTOMERSYNC_TEST_OWNER=team.
collect_ignore = [] if settings.OWNER == "team" else ["teamsite"]


@pytest.fixture(scope="session")
def fake_stripe_server():
    """One fake Stripe server on 127.0.0.1 for the session; reset before each test."""
    server = FakeStripeServer(api_key=settings.TEST_API_KEY).start()
    yield server
    server.stop()


@pytest.fixture
def stripe(fake_stripe_server):
    """The fake server, empty, with CUSTOMERSYNC['API_BASE'] pointing at it, and no budget or
    pause left in Redis by an earlier test."""
    fake_stripe_server.reset()
    forget_shared_keys()
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


# -- the browser tests: Playwright driving Debian's Chromium, never a downloaded browser --------

CHROMIUM = os.environ.get("CUSTOMERSYNC_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
# The docs' screenshots: the browser tests that show those pages write them here when
# CUSTOMERSYNC_DOCS_SCREENSHOTS=1 (scripts/screenshots); otherwise only to test-artifacts/.
DOCS_IMAGES = REPO / "docs" / "images"
DOCS_SCREENSHOTS = os.environ.get("CUSTOMERSYNC_DOCS_SCREENSHOTS") == "1"


@pytest.fixture(scope="module")
def chromium():
    """Chromium for one module's browser tests. Playwright's sync API runs an event loop in this
    thread while it is on; it stops with the module, so a later test meets no running loop (where
    ``async_to_sync``, which django-health-check's view uses, would refuse to run)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"The browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium).")
    # Django must still let the test thread use the database while that loop runs.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, live_server, admin_user, request):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")
    page.shots = []

    def shot(name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{request.node.name}-{len(page.shots) + 1}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        page.shots.append(path)

    def docs_shot(image: str, *, width: int, down_to: str) -> Path:
        """The page as the docs show it, ``width`` pixels wide, from its top to the bottom of the
        element ``down_to`` selects: kept in test-artifacts/, and written to docs/images/``image``.png
        when CUSTOMERSYNC_DOCS_SCREENSHOTS=1."""
        page.set_viewport_size({"width": width, "height": 900})
        bottom = page.locator(down_to).evaluate("element => element.getBoundingClientRect().bottom + window.scrollY")
        clip = {"x": 0, "y": 0, "width": width, "height": math.ceil(bottom) + 24}
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{request.node.name}-{len(page.shots) + 1}-{image}.png"
        page.screenshot(path=str(path), full_page=True, clip=clip)
        page.shots.append(path)
        if DOCS_SCREENSHOTS:
            shutil.copyfile(path, DOCS_IMAGES / f"{image}.png")
        return path

    page.shot = shot
    page.docs_shot = docs_shot
    yield page
    context.close()


def pytest_runtest_setup(item):
    """A test marked ``postgresql`` needs PostgreSQL itself (a private server, row locks held
    across connections). On another database it fails, never skips: a run there leaves it out
    with ``-m "not postgresql"`` (the matrix's SQLite cell), so no skip is counted as a pass."""
    if item.get_closest_marker("postgresql") and not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        pytest.fail("This test needs PostgreSQL; on other databases run the suite with -m 'not postgresql'.")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    # In CI a skip is a failure: a test that could not run has shown nothing, and is not a pass.
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"Skipped in CI, where every test must run: {report.longrepr}"
    setattr(item, f"rep_{report.when}", report)
    return report
