"""The owner link in the other setups a site may have.

The suite runs with an organization as the owner model. The owner tests
run again here, in a pytest of their own, with a custom user model as the
owner (``CUSTOMERSYNC_TEST_OWNER=user``: other tables, so another test
database), and with organizations keyed by a UUID and by a string
(``uuid``, ``code``) on PostgreSQL and SQLite; a team whose billing details live
on a profile and a contact (``team``) on both too; and a site with no owner
model at all keeps working.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.push.test_reliability import RedisServer
from tests.support import REPO

pytestmark = pytest.mark.e2e

OWNER_TESTS = [
    "tests/owner/test_owner.py",
    "tests/owner/test_owner_save.py",
    "tests/e2e/test_owner_e2e.py",
    "tests/owner/test_owner_checks.py",
    "tests/owner/test_link.py",
    "tests/owner/test_owner_admin.py",
    "tests/owner/test_owner_identity.py",
    "tests/owner/test_owner_unlink.py",
]
# The owner tests hold the webhook's and the pull's cases for an owner's customer.
KEY_OWNER_TESTS = [*OWNER_TESTS, "tests/owner/test_owner_accounts.py"]


def _env(owner: str, database_url: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "CUSTOMERSYNC_TEST_OWNER": owner,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(REPO),
    }
    env.pop("CUSTOMERSYNC_TEST_DB_NAME", None)
    if database_url:
        env["CUSTOMERSYNC_TEST_DATABASE_URL"] = database_url
    return env


def run(args: list[str], owner: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=_env(owner), capture_output=True, text=True, timeout=timeout
    )


def run_each(runs: list[list[str]], owner: str, database_urls: list[str], timeout: float = 900) -> list:
    """Each of ``runs`` on its database at once (the machine's cores shared), their results in order; each
    after the first with a Redis of its own, so their workers and broker purges never meet."""
    brokers, processes = [], []
    try:
        for index, (args, url) in enumerate(zip(runs, database_urls, strict=True)):
            env = _env(owner, url)
            if index:
                broker = RedisServer()
                broker.start()
                brokers.append(broker)
                env["CUSTOMERSYNC_TEST_REDIS_URL"] = env["CUSTOMERSYNC_TEST_RESULT_URL"] = broker.url
            processes.append(
                subprocess.Popen(
                    [sys.executable, *args],
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        results = []
        for process in processes:
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        for broker in brokers:
            broker.stop()


def passed(result: subprocess.CompletedProcess) -> int:
    """How many tests passed; fails on any failure, error or skip, and on a deselection but of the
    tests marked ``postgresql`` on SQLite."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    summary = output.strip().splitlines()[-1]
    assert "skipped" not in summary, summary
    if "not postgresql" not in result.args:
        assert "deselected" not in summary, summary
    match = re.search(r"(\d+) passed", summary)
    assert match, summary
    return int(match.group(1))


def on_sqlite() -> bool:
    from django.conf import settings

    return settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")


def pytest_args(sqlite: bool) -> list[str]:
    """pytest's arguments for a run of the owner tests; on SQLite without those needing PostgreSQL."""
    return ["-m", "pytest", "-q", "-p", "no:cacheprovider", *(["-m", "not postgresql"] if sqlite else [])]


def test_owner_tests_pass_with_a_custom_user_model_as_the_owner():
    result = run([*pytest_args(on_sqlite()), *OWNER_TESTS], owner="user")
    assert passed(result) >= 30


def databases(tmp_path) -> list[str]:
    """The session's database and SQLite (the session's alone when it is SQLite)."""
    session = os.environ.get("CUSTOMERSYNC_TEST_DATABASE_URL", "")
    return [session] if on_sqlite() else [session, f"sqlite:///{tmp_path / 'owner.sqlite3'}"]


@pytest.mark.parametrize("owner", ["uuid", "code"])
def test_owner_tests_pass_with_an_owner_keyed_by_a_uuid_or_a_string_on_each_database(owner, tmp_path):
    urls = databases(tmp_path)
    runs = [[*pytest_args(url.startswith("sqlite")), *KEY_OWNER_TESTS] for url in urls]
    results = run_each(runs, owner, urls)
    for url, result in zip(urls, results, strict=True):
        assert passed(result) >= 100, url


def test_an_owner_whose_details_live_on_related_models_on_each_database(tmp_path):
    """The team site (``tests/teamsite``): a profile's save, a contact's, the checks, a real worker
    and the admin's inline in a browser, on the session's database and SQLite."""
    urls = databases(tmp_path)
    runs = [[*pytest_args(url.startswith("sqlite")), "tests/teamsite"] for url in urls]
    results = run_each(runs, "team", urls)
    for url, result in zip(urls, results, strict=True):
        assert passed(result) >= 13, url


def test_without_an_owner_model_the_app_has_no_owner_link_and_refuses_owner_calls():
    check = run(
        [
            "-c",
            (
                "import django; django.setup()\n"
                "from django.core.management import call_command\n"
                "from customersync import sync\n"
                "from customersync.exceptions import ConfigurationError\n"
                "from customersync.models import Customer\n"
                "assert 'owner' not in {f.name for f in Customer._meta.get_fields()}\n"
                "call_command('makemigrations', '--check', '--dry-run', verbosity=0)\n"
                "try:\n"
                "    sync.get_or_create_for(object())\n"
                "except ConfigurationError as err:\n"
                "    print('refused:', err)\n"
            ),
        ],
        owner="none",
    )
    assert check.returncode == 0, check.stderr
    assert "refused: CUSTOMERSYNC['OWNER_MODEL'] is not set" in check.stdout
    result = run(
        [*pytest_args(on_sqlite()), "tests/test_sync.py", "tests/e2e/test_e2e.py", "tests/pull/test_mirror.py"], "none"
    )
    assert passed(result) >= 50
