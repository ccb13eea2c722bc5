"""Small runs of the soak bench: concurrent edits, workers, faults, kills; all counters 0.

The second run turns every hazard on (requests held past a short lease, skewed
clocks, a low rate budget, PostgreSQL restarts), as ``python -m bench.soak
--all-hazards`` does: in a process of its own, since its database is a private
PostgreSQL that it stops and starts.
"""

import os
import re
import subprocess
import sys

import pytest
from django.conf import settings
from django.db import connection

from bench.soak import MUST_BE_ZERO, SoakConfig, run
from tests.support import REPO

pytestmark = [pytest.mark.e2e]


@pytest.mark.django_db(transaction=True)
def test_small_soak(stripe, purge_broker):
    config = SoakConfig(edits=80, customers=4, writers=3, workers=2, kills=1, fault_rate=0.3, seconds=150)
    result = run(config, server=stripe, db_name=connection.settings_dict["NAME"], log=print)
    print(result)
    assert result["edits made"] > 50 and result["requests sent"] > 0
    assert result["faults injected"] > 0 and result["workers killed"] == 1
    assert {key: result[key] for key in MUST_BE_ZERO} == dict.fromkeys(MUST_BE_ZERO, 0)


def test_small_soak_with_every_hazard():
    args = [
        "--all-hazards",
        "--edits",
        "300",
        "--customers",
        "5",
        "--writers",
        "3",
        "--workers",
        "3",
        "--kills",
        "1",
        "--fault-rate",
        "0.3",
        "--seconds",
        "150",
    ]
    env = {**os.environ, "CUSTOMERSYNC_SOAK_REDIS_URL": settings.CELERY_BROKER_URL}  # the suite's own broker db
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    print(done.stdout[-4000:], done.stderr[-4000:])
    table = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in done.stdout.splitlines() if "  " in line)
    assert done.returncode == 0
    assert int(table["edits made"]) > 200 and int(table["requests sent"]) > 0
    assert int(table["faults injected"]) > 0 and int(table["workers killed"]) == 1
    assert int(table["database restarts"]) == 3 and table["clock skews"] == "+200s, -30s"
    assert {key: table[key] for key in MUST_BE_ZERO} == dict.fromkeys(MUST_BE_ZERO, "0")
