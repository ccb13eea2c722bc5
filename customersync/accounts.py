"""Platforms (settings) and accounts (data): which key, header and budget a customer's requests use.

``CUSTOMERSYNC["PLATFORMS"]`` names the Stripe platforms beside the default
one (the top-level ``API_KEY``)::

    "PLATFORMS": {
        "eu": {
            "API_KEY": os.environ["STRIPE_EU_KEY"],
            "WEBHOOK_SECRET": os.environ["STRIPE_EU_WEBHOOK_SECRET"],          # its account endpoint
            "CONNECT_WEBHOOK_SECRET": os.environ["STRIPE_EU_CONNECT_SECRET"],  # its Connect endpoint
        },
    }

Keys are read at each request, never stored (not in the database, the
outbox or a task's arguments), so rotating one is a settings change: every
push queued before it goes with the new key once the workers run it. A
webhook secret may be a list while Stripe signs with both the old and the new.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .conf import MISSING, app_settings
from .exceptions import ConfigurationError
from .stripe.client import StripeClient

if TYPE_CHECKING:
    from .models import Account, Customer

DEFAULT = "default"
PLATFORM_KEYS = frozenset({"API_KEY", "WEBHOOK_SECRET", "CONNECT_WEBHOOK_SECRET", "RATE_LIMIT"})
# Stripe-Context supersedes Stripe-Account; API versions before it know only the latter.
CONTEXT_SINCE = "2024-09-30"
_clients = threading.local()
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def _forget_clients() -> None:
    """In a forked child (a prefork worker), drop the parent's clients: their open connections
    are the parent's sockets, and two processes reading one socket garble each other's answers."""
    _clients.__dict__.pop("by_config", None)


os.register_at_fork(after_in_child=_forget_clients)


@dataclass(frozen=True)
class Platform:
    name: str
    # Never in a repr: a debug page or a log showing a Platform shows no secret.
    api_key: str | None = field(repr=False)
    webhook_secrets: tuple[str, ...] = field(repr=False)
    connect_webhook_secrets: tuple[str, ...] = field(repr=False)
    rate_limit: float | None = None

    def setting(self, key: str = "API_KEY") -> str:
        """Where ``key`` of this platform is set, for messages."""
        if self.name == DEFAULT:
            return f"CUSTOMERSYNC[{key!r}]"
        return f"CUSTOMERSYNC['PLATFORMS'][{self.name!r}][{key!r}]"

    @property
    def livemode(self) -> bool | None:
        """True for a live key, False for a test key, None when the key does not say."""
        return key_livemode(self.api_key)


def key_livemode(key: Any) -> bool | None:
    if not isinstance(key, str):
        return None
    if key.startswith(("sk_live_", "rk_live_")):
        return True
    if key.startswith(("sk_test_", "rk_test_")):
        return False
    return None


def secrets_of(value: Any) -> tuple[str, ...]:
    """A secret setting as a tuple: one string, or several while Stripe rolls it."""
    if not value:
        return ()
    if isinstance(value, (str, bytes)):
        return (value.decode() if isinstance(value, bytes) else value,)
    return tuple(str(v) for v in value if v)


def configured_secrets() -> tuple[str, ...]:
    """Every API key and webhook secret in the settings, the default platform's and each platform's:
    what ``core.redaction.scrub`` takes out of stored text. Read as leniently as it can be: a
    ``PLATFORMS`` setting that is not what it should be still gives the secrets it holds."""
    names = ("API_KEY", "WEBHOOK_SECRET", "CONNECT_WEBHOOK_SECRET")
    try:
        settings = [app_settings.get(name) for name in (*names, "PLATFORMS")]
    except ConfigurationError:  # an unknown key in CUSTOMERSYNC: the shapes are still redacted
        return ()
    *sources, entries = settings
    if isinstance(entries, dict):
        sources += [entry.get(name) for entry in entries.values() if isinstance(entry, dict) for name in names]
    found: list[str] = []
    for value in sources:
        try:
            found += secrets_of(value)
        except (TypeError, ValueError):  # not text nor a list of it: nothing there to hide
            continue
    return tuple(found)


def platforms() -> dict[str, Platform]:
    """Every platform, ``"default"`` (the top-level keys) first."""
    found = {
        DEFAULT: Platform(
            DEFAULT,
            app_settings.get("API_KEY"),
            secrets_of(app_settings.get("WEBHOOK_SECRET")),
            secrets_of(app_settings.get("CONNECT_WEBHOOK_SECRET")),
            app_settings.get("RATE_LIMIT"),
        )
    }
    entries = app_settings.get("PLATFORMS") or {}
    if not isinstance(entries, dict):
        raise ConfigurationError("CUSTOMERSYNC['PLATFORMS'] must be a dict of platform name -> settings.")
    for name, entry in entries.items():
        problem = platform_problem(name, entry)
        if problem:
            raise ConfigurationError(problem)
        found[name] = Platform(
            name,
            entry.get("API_KEY"),
            secrets_of(entry.get("WEBHOOK_SECRET")),
            secrets_of(entry.get("CONNECT_WEBHOOK_SECRET")),
            entry.get("RATE_LIMIT", app_settings.get("RATE_LIMIT")),
        )
    return found


def platform_problem(name: Any, entry: Any) -> str | None:
    """What is wrong with one entry of ``CUSTOMERSYNC['PLATFORMS']``, or None."""
    where = f"CUSTOMERSYNC['PLATFORMS'][{name!r}]"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return f"{where}: a platform's name is lowercase letters, digits, _ and - (up to 64)."
    if name == "connect":
        return f"{where}: 'connect' names the default platform's Connect endpoint (webhook/connect/); choose another."
    if name == DEFAULT:
        return f"{where}: 'default' is the top-level API_KEY and WEBHOOK_SECRET; name this platform otherwise."
    if not isinstance(entry, dict):
        return f"{where} must be a dict with API_KEY (and WEBHOOK_SECRET, CONNECT_WEBHOOK_SECRET, RATE_LIMIT)."
    unknown = set(entry) - PLATFORM_KEYS
    if unknown:
        return f"{where} has unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(PLATFORM_KEYS))}."
    return None


def platform(name: str) -> Platform:
    found = platforms()
    if name not in found:
        raise ConfigurationError(f"No platform {name!r} in CUSTOMERSYNC['PLATFORMS'] (known: {', '.join(found)}).")
    return found[name]


def platform_of(account: Account | None) -> Platform:
    return platform(account.platform if account is not None else DEFAULT)


def context_header(api_version: str) -> str:
    return "Stripe-Account" if api_version[:10] < CONTEXT_SINCE else "Stripe-Context"


def client_for(account: Account | None, found: Platform | None = None) -> StripeClient:
    """A client with the account's platform key, acting on the account (its ``acct_`` in the context header).
    ``found``: the account's platform, when the caller has it already."""
    found = found or platform_of(account)
    if not found.api_key:
        if found.name == DEFAULT:
            raise ConfigurationError(MISSING["API_KEY"])
        raise ConfigurationError(
            f"{found.setting()} is not set: customersync needs the platform's Stripe secret key (sk_... or rk_...)."
        )
    config = (
        found.api_key,
        app_settings.API_BASE,
        app_settings.API_VERSION,
        app_settings.TIMEOUT,
        app_settings.REQUEST_DEADLINE,
        (account.stripe_account or None) if account is not None else None,
        context_header(app_settings.API_VERSION),
    )
    # One client per configuration and thread: its session keeps the connection to Stripe open
    # between pushes (a new client per push paid a TCP and TLS handshake each time). Keyed by
    # the key itself, so a rotated key gets a new client; only this process's memory holds it.
    clients: dict[tuple, StripeClient] = _clients.__dict__.setdefault("by_config", {})
    client = clients.get(config)
    if client is None:
        if len(clients) >= 256:
            clients.clear()
        key, base, version, timeout, deadline, connected, header = config
        client = clients[config] = StripeClient(
            key,
            api_base=base,
            api_version=version,
            timeout=timeout,
            deadline=deadline,
            stripe_account=connected,
            account_header=header,
        )
    return client


def stripe_client(account: Account | None = None) -> StripeClient:
    """A client for ``account`` (None: the default platform's own account), configured from settings."""
    return client_for(account)


def budget_name(account: Account | None) -> str:
    """The rate budget an account's requests share (Stripe limits each account on its own)."""
    if account is None:
        return "stripe"
    return f"{account.platform}:{account.stripe_account or 'own'}"


def account_of(customer: Customer) -> Account | None:
    """The customer's account (one query when it has one, none otherwise)."""
    if customer.account_id is None:
        return None
    return customer.account


def mode_problem(customer: Customer, found: Platform) -> str | None:
    """Why the key of ``found`` (the customer's account's platform) must not write to this
    customer: a test key and a live customer, or the reverse."""
    remote = (customer.stripe_data or {}).get("livemode")
    if not isinstance(remote, bool):
        return None  # not confirmed by Stripe yet: a create goes in the key's mode
    key_mode = found.livemode
    if key_mode is None or key_mode == remote:
        return None
    key_kind, customer_kind = ("live", "test") if key_mode else ("test", "live")
    return (
        f"The customer is a {customer_kind}-mode customer and {found.setting()} is a {key_kind}-mode key: "
        f"nothing was sent. Point the customer at an account whose key is in {customer_kind} mode."
    )


def resolve(account: Any) -> Account | None:
    """``account`` as given to the API: an ``Account``, its pk, ``"platform"`` or ``"platform/acct_..."``, or None."""
    from .models import Account

    if account is None or isinstance(account, Account):
        return account
    if isinstance(account, int):
        return Account.objects.get(pk=account)
    if isinstance(account, str):
        name, _, connected = account.partition("/")
        if name == DEFAULT and not connected:
            return None
        found = Account.objects.filter(platform=name, stripe_account=connected).first()
        if found is None:
            raise ConfigurationError(missing_account(name, connected))
        return found
    raise TypeError(f"An account is an Account, its pk or 'platform[/acct_...]', not {type(account).__name__}.")


def missing_account(name: str, connected: str = "") -> str:
    """Why ``"name[/connected]"`` names no account, for ``resolve``: an account needs both its platform
    in the settings and an ``Account`` row; this says which of the two is missing, and where to add it."""
    from django.apps import apps

    from .models import Account

    given = f"{name}/{connected}" if connected else name
    admin = f"{apps.get_app_config('customersync').verbose_name} > {Account._meta.verbose_name_plural}"
    account = f"connected account {connected!r}" if connected else "connected account left empty"
    row = f"in the admin ({admin}: platform {name!r}, {account})"
    if name == DEFAULT:
        return (
            f"No Stripe account {given!r}: a connected account of the default platform (the top-level API_KEY) "
            f"needs an Account row; add it {row}."
        )
    needs = (
        f"No Stripe account {given!r}: an account needs both its platform in CUSTOMERSYNC['PLATFORMS'] "
        "(with its API_KEY) and an Account row."
    )
    entries = app_settings.get("PLATFORMS")
    if isinstance(entries, dict) and name in entries:
        return f"{needs} {name!r} is in CUSTOMERSYNC['PLATFORMS'] but has no such row: add it {row}."
    known = ", ".join([DEFAULT, *(entries if isinstance(entries, dict) else ())])
    return f"{needs} {name!r} is not in CUSTOMERSYNC['PLATFORMS'] (known: {known}): add it there, then the row {row}."
