"""Stripe accounts: platforms, their API keys, their connected accounts, what a request acts on,
and each account's ``Idempotency-Key`` handling.

Without a platform registered the fake is in legacy mode: the server's
``api_key`` (or, when None, any ``sk_test_`` key) authenticates and requests
act on one default store. A ``Stripe-Context`` (or the older
``Stripe-Account``) header naming an ``acct_...`` id acts on that account's
own store instead, made on demand.

Once a platform is registered (``FakeStripeServer.add_platform``) only the
platforms' keys authenticate: a key acts on its platform's own account, and
with the header on one of that platform's connected accounts (any other
account: 403 ``account_invalid``). A key retired by ``set_platform_keys``
answers 401 "Expired API Key provided." The key's mode follows Stripe's
names: ``_live_`` in it is live mode (customers it creates have
``livemode: true``), anything else test mode; both modes share the account's
store.

Each account, the legacy default one included, has its own customers and its
own Idempotency-Keys, honoured as Stripe does: a second request while one with
the same key is in flight gets a 409; a key reused for a different request
gets a 400; otherwise the first answer is replayed, marked
``Idempotent-Replayed: true``. ``set_rate_limit`` answers 429 past a number of
arrivals per second for one account.

Public names: ``Accounts``, ``bearer_key``, ``key_fingerprint``,
``is_live_key``, ``rate_limited``, ``in_progress``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .handler import Headers, RecordedRequest, Response
from .rules import FakeStripeAPIError, random_id
from .store import CustomerStore, error_response


def bearer_key(headers: Headers) -> str | None:
    """The API key from ``Authorization`` (Bearer, or Basic with the key as user name)."""
    scheme, _, credential = (headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return credential.strip() or None
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credential.strip(), validate=True).decode().partition(":")[0] or None
        except (ValueError, UnicodeDecodeError):
            return None
    return None


@dataclass
class _CachedResult:
    """What an Idempotency-Key was first used for, and the answer to replay."""

    method: str
    path: str
    body: bytes
    status: int
    payload: bytes
    request_id: str


class _IdempotencyKeys:
    """The keys in flight and the first answer given under each key. Not thread-safe: the server locks."""

    def __init__(self) -> None:
        self.in_flight: set[str] = set()
        self.results: dict[str, _CachedResult] = {}

    def begin(self, key: str) -> bool:
        """Mark ``key`` in flight; False if it already is."""
        if key in self.in_flight:
            return False
        self.in_flight.add(key)
        return True

    def end(self, key: str) -> None:
        self.in_flight.discard(key)

    def answer(self, record: RecordedRequest, key: str, execute: Callable[[], Response]) -> Response:
        """The answer first given under ``key``, replayed; or ``execute()``'s, saved for replay."""
        cached = self.results.get(key)
        if cached is not None:
            if (cached.method, cached.path, cached.body) != (record.method, record.path, record.body):
                error = FakeStripeAPIError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with. Try using a key other than "
                    f"'{key}' if you meant to execute a different request.",
                    type="idempotency_error",
                )
                return error_response(error, {"Idempotency-Key": key})
            record.replayed = True
            return Response(
                cached.status,
                cached.payload,
                {"Idempotency-Key": key, "Idempotent-Replayed": "true", "Original-Request": cached.request_id},
            )
        response = execute()
        response.headers["Idempotency-Key"] = key
        # Like Stripe, save only requests that started executing: not 400 validation errors.
        if 200 <= response.status < 300 or response.status == 404:
            request_id = response.headers.get("Request-Id") or random_id("req_")  # the one its event names
            response.headers["Request-Id"] = request_id
            self.results[key] = _CachedResult(
                record.method, record.path, record.body, response.status, response.body, request_id
            )
        return response


def in_progress(key: str) -> Response:
    # Like Stripe: a second request while one with the same key is in flight.
    error = FakeStripeAPIError(
        409,
        "There is currently another in-progress request using this Stripe API key and "
        "idempotency key. Please try again later.",
        type="idempotency_error",
    )
    return error_response(error, {"Idempotency-Key": key})


# Arrivals are counted over this window (seconds) for set_rate_limit.
_RATE_WINDOW = 1.0


def key_fingerprint(key: str | None) -> str:
    """Tells keys apart in the log without holding them: the first 12 hex digits of the key's
    SHA-256 (``""`` for a request without a key)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12] if key else ""


def is_live_key(key: str | None) -> bool:
    """Live mode for ``sk_live_...``/``rk_live_...`` keys, test mode for any other."""
    return key is not None and "_live_" in key


def _check_account_id(account_id: object) -> str:
    if not isinstance(account_id, str) or not account_id.startswith("acct_") or len(account_id) <= len("acct_"):
        raise ValueError(f"an account id looks like acct_..., not {account_id!r}")
    return account_id


def _check_keys(keys: Iterable[str]) -> set[str]:
    if isinstance(keys, str):
        raise TypeError("keys must be a list of keys, not one string")
    checked = set(keys)
    if any(not isinstance(key, str) or not key.strip() or key != key.strip() for key in checked):
        raise ValueError("each key must be a non-empty string without surrounding spaces")
    return checked


def _invalid_key() -> FakeStripeAPIError:
    # Never echo the key, not even masked.
    return FakeStripeAPIError(401, "Invalid API Key provided.")


def rate_limited(account: str | None) -> Response:
    error = FakeStripeAPIError(
        429,
        "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests. "
        f"(rate limit set for {account or 'the default account'})",
        code="rate_limit",
    )
    return error_response(error)


@dataclass
class _Account:
    """One account's state: its customers and its Idempotency-Keys (Stripe scopes both per account)."""

    store: CustomerStore = field(default_factory=CustomerStore)
    idempotency: _IdempotencyKeys = field(default_factory=_IdempotencyKeys)


@dataclass
class _Platform:
    keys: set[str]
    connected: set[str]


class Accounts:
    """Every account, the platforms and their keys, and the rate limits. Not thread-safe: the server locks."""

    def __init__(self, api_key: str | None) -> None:
        self.api_key = api_key  # legacy mode's key (None: any sk_test_ key)
        self.default = _Account()
        self.accounts: dict[str, _Account] = {}
        self.platforms: dict[str, _Platform] = {}
        self.retired: set[str] = set()  # keys a platform had before set_platform_keys
        self.limits: dict[str | None, int] = {}
        self.arrivals: dict[str | None, deque[float]] = {}

    def account(self, account_id: str | None) -> _Account:
        """The state of ``account_id`` (None: the legacy default account), made on first use."""
        if account_id is None:
            return self.default
        return self.accounts.setdefault(_check_account_id(account_id), _Account())

    def clear(self) -> None:
        """Forget every account's customers and saved idempotent answers, and the rate limits."""
        for account in (self.default, *self.accounts.values()):
            account.store = CustomerStore()
            account.idempotency.results.clear()
        self.limits.clear()
        self.arrivals.clear()

    def event_account(self, account_id: str | None) -> str | None:
        """The ``account`` an event about ``account_id``'s customers names: the id of a connected
        account; None for a platform's own account and for legacy mode's default one."""
        return None if account_id is None or account_id in self.platforms else _check_account_id(account_id)

    # platforms and keys

    def forget_platforms(self) -> None:
        """Back to legacy mode: no platforms, no retired keys (customers stay)."""
        self.platforms.clear()
        self.retired.clear()

    def add_platform(self, account_id: str, keys: Iterable[str], connected: Iterable[str]) -> None:
        _check_account_id(account_id)
        if isinstance(connected, str):
            raise TypeError("connected must be a list of account ids, not one string")
        connected_ids = {_check_account_id(connected_id) for connected_id in connected}
        if account_id in connected_ids:
            raise ValueError(f"{account_id!r} is the platform itself")
        if account_id in self.platforms:
            raise ValueError(f"platform {account_id!r} is already registered")
        checked = self._free_keys(account_id, keys)  # all checked before anything changes
        self.platforms[account_id] = _Platform(keys=set(), connected=connected_ids)
        self.set_keys(account_id, checked)
        for known in (account_id, *connected_ids):
            self.account(known)

    def add_connected(self, platform: str, account_id: str) -> None:
        owner = self._platform(platform)
        if _check_account_id(account_id) == platform:
            raise ValueError(f"{account_id!r} is the platform itself")
        owner.connected.add(account_id)
        self.account(account_id)

    def set_keys(self, platform: str, keys: Iterable[str]) -> None:
        owner = self._platform(platform)
        new = self._free_keys(platform, keys)
        self.retired |= owner.keys - new
        owner.keys = new

    def _platform(self, account_id: str) -> _Platform:
        if account_id not in self.platforms:
            raise KeyError(f"no platform {account_id!r}: register it with add_platform")
        return self.platforms[account_id]

    def _free_keys(self, platform: str, keys: Iterable[str]) -> set[str]:
        checked = _check_keys(keys)
        for other, registered in self.platforms.items():
            if other != platform and checked & registered.keys:
                raise ValueError(f"a key given for {platform!r} already belongs to {other!r}")
        return checked

    def _platform_of(self, key: str) -> str | None:
        for account_id, platform in self.platforms.items():
            if any(secrets.compare_digest(key.encode(), known.encode()) for known in platform.keys):
                return account_id
        return None

    # authentication and the account a request acts on

    def authorized(self, key: str | None) -> bool:
        """Whether ``key`` authenticates now (the control API takes the same keys)."""
        if key is None:
            return False
        if self.platforms:
            return self._platform_of(key) is not None
        if self.api_key is None:
            return key.startswith("sk_test_") and len(key) > len("sk_test_")
        return secrets.compare_digest(key.encode(), self.api_key.encode())

    def resolve(self, key: str | None, headers: Headers) -> str | None:
        """The account a request with ``key`` and ``headers`` acts on (None: legacy mode's default).

        Raises the error to answer instead: 401 for a key that does not
        authenticate (or was retired), 400 for two context headers that
        disagree, 403 for an account the key cannot reach.
        """
        if not self.authorized(key):
            if key is not None and self.platforms and key in self.retired:
                raise FakeStripeAPIError(401, "Expired API Key provided.", code="api_key_expired")
            raise _invalid_key()
        assert key is not None
        context = _context_header(headers)
        platform = self._platform_of(key) if self.platforms else None
        if context is None:
            return platform
        reachable = context.startswith("acct_") and len(context) > len("acct_")
        if platform is not None:
            reachable = context == platform or context in self.platforms[platform].connected
        if not reachable:
            raise FakeStripeAPIError(
                403,
                f"The provided key does not have access to account '{context}' (or that account does not "
                "exist). Application access may have been revoked.",
                code="account_invalid",
            )
        return context

    # rate limits

    def set_rate_limit(self, account: str | None, per_second: int | None) -> None:
        if account is not None:
            _check_account_id(account)
        self.arrivals.pop(account, None)
        if per_second is None:
            self.limits.pop(account, None)
            return
        if isinstance(per_second, bool) or not isinstance(per_second, int) or per_second < 0:
            raise ValueError(f"per_second must be a whole number from 0, or None, not {per_second!r}")
        self.limits[account] = per_second

    def over_limit(self, account: str | None, now: float) -> bool:
        """Count an arrival for ``account`` at ``now``; True if it makes more than its limit in the window."""
        limit = self.limits.get(account)
        if limit is None:
            return False
        arrivals = self.arrivals.setdefault(account, deque())
        while arrivals and now - arrivals[0] >= _RATE_WINDOW:
            arrivals.popleft()
        arrivals.append(now)
        return len(arrivals) > limit


def _context_header(headers: Headers) -> str | None:
    """The account named by ``Stripe-Context`` or ``Stripe-Account`` (400 when they disagree)."""
    context = (headers.get("Stripe-Context") or "").strip() or None
    account = (headers.get("Stripe-Account") or "").strip() or None
    if context is not None and account is not None and context != account:
        raise FakeStripeAPIError(
            400,
            f"The Stripe-Context header ('{context}') and the Stripe-Account header ('{account}') name "
            "different accounts. Send one of them.",
        )
    return context or account
