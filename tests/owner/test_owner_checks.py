"""System checks for the owner link's settings."""

from __future__ import annotations

import pytest
from django.test import override_settings

from customersync.checks.configuration import check_owner


def ids(**owner_settings):
    from django.conf import settings

    with override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, **owner_settings}):
        return [m.id for m in check_owner()]


def test_the_test_sites_mapping_passes():
    assert ids() == []


@pytest.mark.parametrize(
    "owner_settings, expected",
    [
        ({"OWNER_MODEL": None, "OWNER_FIELDS": {"email": "email"}, "OWNER_BOTH_WAYS": ()}, ["customersync.E020"]),
        ({"OWNER_MODEL": "nope.Nothing"}, ["customersync.E021"]),
        ({"OWNER_FIELDS": {"address[": "city"}, "OWNER_BOTH_WAYS": ()}, ["customersync.E022"]),
        ({"OWNER_FIELDS": {"balance_x": "city"}, "OWNER_BOTH_WAYS": ()}, ["customersync.E022"]),
        ({"OWNER_FIELDS": {"email": "no_such_field"}, "OWNER_BOTH_WAYS": ()}, ["customersync.E023"]),
        ({"OWNER_FIELDS": {"email": 5}, "OWNER_BOTH_WAYS": ()}, ["customersync.E023"]),
        ({"OWNER_FIELDS": {"email": "city"}, "OWNER_BOTH_WAYS": ["phone"]}, ["customersync.E024"]),
        (
            {"OWNER_FIELDS": {"description": "customer_description"}, "OWNER_BOTH_WAYS": ["description"]},
            ["customersync.E025"],
        ),
    ],
    ids=[
        "fields-without-model",
        "unknown-model",
        "malformed-key",
        "unknown-param",
        "unknown-attribute",
        "not-a-path",
        "both-ways-unmapped",
        "both-ways-from-a-method",
    ],
)
def test_owner_settings_errors(owner_settings, expected):
    assert ids(**owner_settings) == expected


def test_messages_name_the_setting_and_the_attribute():
    from django.conf import settings

    with override_settings(
        CUSTOMERSYNC={**settings.CUSTOMERSYNC, "OWNER_FIELDS": {"email": "bilingmail"}, "OWNER_BOTH_WAYS": ()}
    ):
        (message,) = check_owner()
    assert "OWNER_FIELDS" in message.msg and "'bilingmail'" in message.msg
