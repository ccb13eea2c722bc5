"""The health tests start and end with no rate budget, 429 pause or counted bad signature in Redis,
stripe fixture or not: one test's figures are not the next one's."""

from __future__ import annotations

import pytest

from tests.support import forget_shared_keys


@pytest.fixture(autouse=True)
def clean_redis():
    forget_shared_keys()
    yield
    forget_shared_keys()
