"""The endpoint's wire contract, as kept in ``tests/fixtures/`` (see its README for the sources)."""

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REFERENCE_PAGE = FIXTURES / "update_customer_reference.txt"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def customer_fixture() -> dict:
    return load("customer_fixture.json")["customer"]
