"""The parameter table covers every parameter of the seed page and of the contract."""

import re

import pytest

from customersync.core.diff import diff
from customersync.core.encoding import encode
from customersync.core.params import BY_NAME, PARAMS, Role
from tests.contract import REFERENCE_PAGE, load


def seed_names():
    """Top-level names of the seed page's "Request body fields"."""
    text = REFERENCE_PAGE.read_text()
    body = text.split("Request body fields", 1)[1].split("How to start integrating", 1)[0]
    names = set()
    for line in body.splitlines():
        match = re.match(r"^([a-z_]+(?:\.[a-z_]+)*)(?:\[\])?(?: (?:String|Integer|Object|Array))? No$", line.strip())
        if match:
            names.add(match.group(1))
    return sorted(names)


SEED_NAMES = seed_names()


def test_seed_page_parsed():
    assert len([n for n in SEED_NAMES if "." not in n]) == 23


def _bracket(dotted: str) -> str:
    head, *rest = dotted.split(".")
    return head + "".join(f"[{p}]" for p in rest)


@pytest.mark.parametrize("name", SEED_NAMES)
def test_every_seed_param_is_in_the_table(name):
    bracket = _bracket(name)
    assert any(p.name == bracket or p.name.startswith(bracket + "[") for p in PARAMS), name


@pytest.mark.parametrize("entry", load("customer_update_params.json")["form_keys"], ids=lambda e: e["key"] + e["value"])
def test_every_contract_form_key_is_expressible(entry):
    key = entry["key"].replace("[<N>]", "").replace("[<key>]", "")
    # The key, or a parent of it that is sent whole, is in the table.
    parts = key.replace("]", "").split("[")
    prefixes = {parts[0] + "".join(f"[{p}]" for p in parts[1:i]) for i in range(1, len(parts) + 1)}
    assert prefixes & set(BY_NAME), entry["key"]


def test_contract_emptyable_params_can_be_sent_empty():
    emptyable = {
        "address",
        "shipping",
        "tax_exempt",
        "business_name",
        "individual_name",
        "invoice_settings[custom_fields]",
        "invoice_settings[rendering_options]",
        "tax[ip_address]",
    }
    for name in emptyable:
        assert BY_NAME[name].clearable, name


def test_roles():
    write_once = {p.name for p in PARAMS if p.role is Role.WRITE_ONCE}
    assert write_once == {
        "source",
        "card",
        "bank_account",
        "default_card",
        "default_bank_account",
        "default_alipay_account",
        "cash_balance[settings][reconciliation_mode]",
        "tax[ip_address]",
    }
    assert {p.name for p in PARAMS if p.role is Role.OPTION} == {"expand", "tax[validate_location]", "validate"}


def test_newer_emptyable_names_unset():
    confirmed = {"business_name": "Acme", "individual_name": "Ann"}
    assert encode(diff(confirmed, {"business_name": "", "individual_name": None})) == "business_name=&individual_name="
