"""System checks of several accounts: the platforms' settings, and (``check --database``) the
accounts and customers against them."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Tags, Warning, register
from django.db import DatabaseError

from ..accounts import DEFAULT, key_livemode, platform_problem
from ..conf import app_settings
from ..exceptions import ConfigurationError


@register()
def check_platforms(app_configs: Any = None, **kwargs: Any) -> list:
    try:
        entries = app_settings.get("PLATFORMS")
    except ConfigurationError:
        return []  # unknown keys in CUSTOMERSYNC: check_settings reports them (E002)
    if not isinstance(entries, dict):
        return [Error("CUSTOMERSYNC['PLATFORMS'] must be a dict of platform name -> settings.", id="customersync.E040")]
    messages: list = []
    for name, entry in entries.items():
        problem = platform_problem(name, entry)
        if problem:
            messages.append(Error(problem, id="customersync.E040"))
            continue
        where = f"CUSTOMERSYNC['PLATFORMS'][{name!r}]"
        key = entry.get("API_KEY")
        if not key:
            messages.append(
                Warning(
                    f"{where}['API_KEY'] is not set: pushes and pulls of its accounts will fail.",
                    hint="Read it from the environment in your settings.",
                    id="customersync.W041",
                )
            )
        elif key_livemode(key) is None:
            messages.append(
                Warning(
                    f"{where}['API_KEY'] is not a Stripe secret or restricted key "
                    "(sk_test_, sk_live_, rk_test_, rk_live_): its mode cannot be checked.",
                    id="customersync.W042",
                )
            )
    return messages


@register(Tags.database)
def check_account_modes(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list:
    """Accounts naming no configured platform, and customers whose mode is not their account's key's
    (a push to them is refused): run by ``manage.py check --database default``."""
    if not databases:
        return []
    from ..accounts import platforms
    from ..models import Account, Customer

    try:
        known = platforms()
        # No ordering: the model's (platform, stripe_account) would make DISTINCT keep one row per account.
        others = Account.objects.exclude(platform__in=list(known)).order_by()
        unknown = list(others.values_list("platform", flat=True).distinct())
        mismatched = 0
        for name, found in known.items():
            if found.livemode is None:
                continue
            customers = Customer.objects.filter(account=None) if name == DEFAULT else Customer.objects.none()
            customers = customers | Customer.objects.filter(account__platform=name)
            mismatched += customers.filter(stripe_data__livemode=not found.livemode).count()
    except DatabaseError:
        return []  # not migrated yet (migrate runs database checks first)
    except ConfigurationError:
        return []  # a settings error: check_platforms reports it
    messages: list = []
    if unknown:
        messages.append(
            Error(
                f"Stripe accounts name platforms missing from CUSTOMERSYNC['PLATFORMS']: {', '.join(sorted(unknown))}.",
                hint="Add them to the setting, with their keys.",
                id="customersync.E043",
            )
        )
    if mismatched:
        messages.append(
            Error(
                f"{mismatched} customers are in another mode (test or live) than their account's "
                "key: pushes to them are refused.",
                hint="Filter the customer list by mode and account, and point them at an account "
                "whose key is in their mode.",
                id="customersync.E044",
            )
        )
    return messages
