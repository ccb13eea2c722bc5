"""The owner link in the other setups a site may have (issue 11).

The suite runs with an organization as the owner model. The owner tests
run again here, in a pytest of their own, with a custom user model as the
owner (``CUSTOMERSYNC_TEST_OWNER=user``: other tables, so another test
database); and a site with no owner model at all keeps working as before.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support import REPO

pytestmark = pytest.mark.e2e

OWNER_TESTS = [
    "tests/test_owner.py",
    "tests/test_owner_save.py",
    "tests/test_owner_e2e.py",
    "tests/test_owner_checks.py",
    "tests/test_link.py",
    "tests/test_owner_admin.py",
]


def run(args: list[str], owner: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUSTOMERSYNC_TEST_OWNER": owner, "DJANGO_SETTINGS_MODULE": "tests.settings",
           "PYTHONPATH": str(REPO)}  # fmt: skip
    env.pop("CUSTOMERSYNC_TEST_DB_NAME", None)
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def passed(result: subprocess.CompletedProcess) -> int:
    """How many tests passed; fails on any failure, error or skip."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    summary = output.strip().splitlines()[-1]
    assert "skipped" not in summary and "deselected" not in summary, summary
    match = re.search(r"(\d+) passed", summary)
    assert match, summary
    return int(match.group(1))


def test_owner_tests_pass_with_a_custom_user_model_as_the_owner():
    result = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", *OWNER_TESTS], owner="user")
    assert passed(result) >= 30


def test_without_an_owner_model_the_app_works_as_before():
    check = run(
        ["-c", (
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
        )],
        owner="none",
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert "refused: CUSTOMERSYNC['OWNER_MODEL'] is not set" in check.stdout
    result = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_sync.py", "tests/test_e2e.py",
                  "tests/test_mirror.py"], "none")  # fmt: skip
    assert passed(result) >= 50
