"""System checks for the app's settings."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core.checks import Error, Warning, register

from .conf import DEFAULTS, app_settings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list:
    messages: list = []
    try:
        key = app_settings.get("API_KEY")
        base = app_settings.get("API_BASE")
    except Exception as err:  # ImproperlyConfigured for unknown keys
        return [Error(str(err), id="customersync.E002")]
    if not key:
        messages.append(
            Error(
                "CUSTOMERSYNC['API_KEY'] is not set.",
                hint="Set it to your Stripe secret key, e.g. from an environment variable.",
                id="customersync.E001",
            )
        )
    parts = urlsplit(base or "")
    if parts.scheme != "https" and parts.hostname not in LOOPBACK:
        messages.append(
            Warning(
                f"CUSTOMERSYNC['API_BASE'] is {base!r}: the API key would travel unencrypted.",
                hint=f"Use https (the default is {DEFAULTS['API_BASE']!r}), or a loopback address for a fake server.",
                id="customersync.W001",
            )
        )
    if isinstance(key, str) and key.startswith(("sk_live_", "rk_live_")) and parts.hostname in LOOPBACK:
        messages.append(
            Warning(
                "A live-mode key is configured with a loopback API_BASE.",
                hint="Use a test-mode key with fake servers.",
                id="customersync.W002",
            )
        )
    return messages
