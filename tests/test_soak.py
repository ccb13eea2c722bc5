"""A small run of the soak bench: concurrent edits, workers, faults and a kill; all counters 0."""

import pytest
from django.db import connection

from bench.soak import MUST_BE_ZERO, SoakConfig, run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_small_soak(stripe, purge_broker):
    config = SoakConfig(edits=80, customers=4, writers=3, workers=2, kills=1, fault_rate=0.3, seconds=150)
    result = run(config, server=stripe, db_name=connection.settings_dict["NAME"], log=print)
    print(result)
    assert result["edits made"] > 50 and result["requests sent"] > 0
    assert result["faults injected"] > 0 and result["workers killed"] == 1
    assert {key: result[key] for key in MUST_BE_ZERO} == dict.fromkeys(MUST_BE_ZERO, 0)
