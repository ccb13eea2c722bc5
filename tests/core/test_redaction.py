"""Secrets out of stored and shown text: Stripe's shapes, the configured secrets, and storable text."""

from __future__ import annotations

import pytest

from customersync.core.redaction import REDACTED, scrub, storable
from customersync.exceptions import APIError, AuthenticationError

# Shaped as Stripe's secrets, built here so no key-shaped literal sits in the tree.
FAKE_KEY = "sk_test_" + "not0a0real0key0" * 2
FAKE_WEBHOOK_SECRET = "whsec_" + "notArealSecret+/="
LIVE, RESTRICTED_LIVE = "sk_" + "live_", "rk_" + "live_"

SHAPES = [
    (f"Invalid API Key provided: {FAKE_KEY}", "Invalid API Key provided: [redacted]"),
    (f"{LIVE}51Habc and {RESTRICTED_LIVE}51Hxyz", "[redacted] and [redacted]"),
    ("rk_test_abcd1234.", "[redacted]."),
    (f"signed with {FAKE_WEBHOOK_SECRET}", "signed with [redacted]"),
    ("Invalid API Key provided: sk_test_****ests", "Invalid API Key provided: sk_test_****ests"),  # Stripe's mask
    ("pk_test_51Habcdef is publishable", "pk_test_51Habcdef is publishable"),
    ("nothing secret here", "nothing secret here"),
]


@pytest.mark.parametrize(("text", "shown"), SHAPES)
def test_what_is_shaped_like_a_stripe_secret_is_redacted(text, shown):
    assert scrub(text) == shown


def test_configured_secrets_are_redacted_whatever_their_shape_and_their_tails_too():
    configured = ["sk_test_customersync_tests", "hook-secret-0123456789abcdef", "short"]
    text = "a sk_test_customersync_tests b customersync_tests c hook-secret-0123456789abcdef d short"
    assert scrub(text, configured) == f"a {REDACTED} b {REDACTED} c {REDACTED} d {REDACTED}"


def test_a_short_tail_alone_is_not_redacted():
    # "tests" could be any word: only a tail of twelve characters or more is unmistakable.
    assert scrub("the tests ran", ["sk_test_tests"]) == "the tests ran"


def test_stored_text_holds_no_lone_surrogate_nor_nul():
    assert storable("a\ud800b\x00c\udfff") == "a\ufffdbc\ufffd"
    assert scrub("x\ud800") == "x\ufffd"


def test_a_stripe_error_keeps_no_secret_in_any_field_its_text_or_its_repr():
    err = AuthenticationError(
        f"Invalid API Key provided: {LIVE}abcdefgh",
        code="c_rk_test_abcdefgh",
        param="whsec_abcdefgh",
        request_id="req_sk_test_abcdefgh",
        http_status=401,
    )
    for shown in (str(err), repr(err), str(err.as_dict()), *err.args):
        assert "abcdefgh" not in shown and REDACTED in shown


def test_redact_takes_configured_secrets_out_and_keeps_the_columns_lengths():
    err = APIError("key odd-key-0123456789", code="odd-key-0123456789" * 3)
    err.redact(["odd-key-0123456789"])
    assert err.message == f"key {REDACTED}" and err.args == (err.message,)
    assert err.code == REDACTED * 3 and len(err.code) <= 64
