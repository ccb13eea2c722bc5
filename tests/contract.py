"""Where the shared wire contract lives (read by tests; never copied)."""

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONTRACT_DIR = Path(os.environ.get("CUSTOMERSYNC_CONTRACT_DIR", REPO.parent / "shared" / "contract"))
SEED_FILE = Path(os.environ.get("CUSTOMERSYNC_SEED_FILE", REPO.parent / "shared" / "seed" / "000_e685c05cc354e840.txt"))
FIXTURES = REPO / "tests" / "fixtures"


def load(name: str) -> dict:
    return json.loads((CONTRACT_DIR / name).read_text())


def customer_fixture() -> dict:
    return json.loads((FIXTURES / "customer_fixture.json").read_text())["customer"]
