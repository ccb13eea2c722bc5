"""An account's platform name and connected id are checked whole: no trailing newline, no junk.

Each refused value is a ``ValidationError`` naming the field (``full_clean``, so the admin's form
too); the same value without the junk passes.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from customersync.models import Account

pytestmark = pytest.mark.django_db

# (id, the fields given, the field refused)
REFUSED = [
    ("connected-id-trailing-newline", {"stripe_account": "acct_12\n"}, "stripe_account"),
    ("connected-id-trailing-crlf", {"stripe_account": "acct_12\r\n"}, "stripe_account"),
    ("connected-id-leading-newline", {"stripe_account": "\nacct_12"}, "stripe_account"),
    ("connected-id-newline-inside", {"stripe_account": "acct_12\nacct_34"}, "stripe_account"),
    ("connected-id-trailing-space", {"stripe_account": "acct_12 "}, "stripe_account"),
    ("platform-trailing-newline", {"platform": "eu\n", "stripe_account": "acct_12"}, "platform"),
    ("platform-newline-inside", {"platform": "eu\nus", "stripe_account": "acct_12"}, "platform"),
]


@pytest.mark.parametrize(("fields", "field"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_an_id_with_a_newline_or_junk_is_refused_naming_the_field(settings, fields, field):
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "PLATFORMS": {"eu": {"API_KEY": "sk_test_eu"}}}
    with pytest.raises(ValidationError) as info:
        Account(**fields).full_clean()
    assert field in info.value.message_dict, info.value.message_dict


@pytest.mark.parametrize("platform", ["default", "eu"])
def test_the_same_ids_without_the_junk_pass(settings, platform):
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "PLATFORMS": {"eu": {"API_KEY": "sk_test_eu"}}}
    Account(platform=platform, stripe_account="acct_12").full_clean()
