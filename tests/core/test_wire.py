"""The encoder against the contract's captured stripe-python bodies, byte for byte."""

import pytest

from customersync.core.encoding import decode, encode
from tests.contract import load

EXAMPLES = load("form_encoding_examples.json")["examples"]


def test_contract_has_examples():
    assert len(EXAMPLES) >= 20


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["title"] for e in EXAMPLES])
def test_encode_matches_stripe_python(example):
    assert encode(example["params"]) == example["wire_body"]


@pytest.mark.parametrize(
    "body, expected",
    [
        ("metadata[a]=", {"metadata": {"a": ""}}),
        ("metadata=", {"metadata": ""}),
        ("metadata[0]=x&metadata[1]=y", {"metadata": {"0": "x", "1": "y"}}),
        ("preferred_locales[0]=en&preferred_locales[1]=fr", {"preferred_locales": ["en", "fr"]}),
        (
            "invoice_settings[custom_fields][0][name]=PO&invoice_settings[custom_fields][0][value]=7",
            {"invoice_settings": {"custom_fields": [{"name": "PO", "value": "7"}]}},
        ),
        (
            "name=Zo%C3%AB+%26+Co&email=a%2Bb%40x.io",
            {"name": "Zoë & Co", "email": "a+b@x.io"},
        ),
        ("shipping[address][line1]=x", {"shipping": {"address": {"line1": "x"}}}),
    ],
)
def test_decode(body, expected):
    assert decode(body) == expected


@pytest.mark.parametrize(
    "example",
    [e for e in EXAMPLES if e["wire_body"] and "True" not in e["wire_body"] and "foo" not in e["params"]],
    ids=lambda e: e["title"],
)
def test_decode_inverts_encode(example):
    # Encoding then decoding gives the params back as strings (the wire has no types).
    def stringify(value):
        if isinstance(value, dict):
            return {k: stringify(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [stringify(v) for v in value]
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    assert decode(example["wire_body"]) == stringify(example["params"])
