"""The state helpers of ``FakeStripeServer``: what a test reads and sets directly, not over HTTP.

Customers in any account's store (``account=None``: the legacy default
store), and the accounts themselves: platforms, their keys and connected
accounts, key rotation and rate limits (see ``accounts``). None of it is
logged. ``FakeStripeServer`` takes these methods from ``_StateMethods``.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable
from typing import Any

from ..wire import decode, encode
from .accounts import _Accounts
from .customer import _Customer


class _StateMethods:
    """``FakeStripeServer``'s methods on its state: customers per account, platforms, keys, rate limits."""

    _lock: threading.RLock
    _accounts: _Accounts

    @property
    def customers(self) -> dict[str, dict[str, Any]]:
        """Copy of the default store, id -> object in insertion order (deleted ones as their stub)."""
        return self.customers_of(None)

    def add_customer(self, *, account: str | None = None, **fields: Any) -> dict[str, Any]:
        """Store a customer directly (not logged). Accepts ``id=`` and any customer-object field."""
        with self._lock:
            return self._accounts.account(account).store.add(fields).render()

    def get_customer(self, customer_id: str, account: str | None = None) -> dict[str, Any] | None:
        """The stored object (a deep copy), the deleted stub, or None."""
        with self._lock:
            customer = self._accounts.account(account).store.customers.get(customer_id)
            return None if customer is None else customer.render()

    def seed(self, n: int, prefix: str = "Customer", account: str | None = None) -> list[dict[str, Any]]:
        """Store ``n`` plausible customers, deterministic given ``n`` (description ``"<prefix> <i>"``)."""
        with self._lock:
            return [customer.render() for customer in self._accounts.account(account).store.seed(int(n), prefix)]

    def attach_source(
        self, customer_id: str, source_id: str, kind: str | None = None, *, account: str | None = None
    ) -> dict[str, Any]:
        """Attach a source (``card_...``, ``ba_...``) to a customer without making it the default."""
        with self._lock:
            return copy.deepcopy(self._stored(customer_id, account).attach(source_id, kind))

    def update_customer_directly(self, customer_id: str, account: str | None = None, **params: Any) -> dict[str, Any]:
        """Apply an update as if another integration sent it (not logged, no idempotency).

        ``params`` are update params as a client would pass them; they go through
        the wire encoding, so the same validation and semantics apply.
        """
        with self._lock:
            return self._accounts.account(account).store.update(customer_id, decode(encode(params)))

    def delete_customer(self, customer_id: str, account: str | None = None) -> dict[str, Any]:
        """Delete a customer as if from the dashboard (not logged)."""
        with self._lock:
            return self._accounts.account(account).store.delete(customer_id, {})

    def sources(self, customer_id: str, account: str | None = None) -> list[dict[str, Any]]:
        """The sources attached to a customer."""
        with self._lock:
            return copy.deepcopy(list(self._stored(customer_id, account).sources.values()))

    def cash_balance_settings(self, customer_id: str, account: str | None = None) -> dict[str, Any]:
        """The customer's cash balance settings (never returned on the customer object)."""
        with self._lock:
            return dict(self._stored(customer_id, account).cash_balance_settings)

    def _stored(self, customer_id: str, account: str | None) -> _Customer:
        customer = self._accounts.account(account).store.customers.get(customer_id)
        if customer is None:
            raise KeyError(customer_id)
        return customer

    # accounts

    def add_platform(self, account_id: str, keys: Iterable[str], *, connected: Iterable[str] = ()) -> None:
        """Register a platform ``acct_...`` whose API keys are ``keys`` (any of them authenticates),
        with its ``connected`` accounts.

        From the first platform on, only platforms' keys authenticate; the
        server's ``api_key`` no longer does (for the control API either).
        """
        with self._lock:
            self._accounts.add_platform(account_id, keys, connected)

    def forget_platforms(self) -> None:
        """Unregister every platform (and its retired keys): back to legacy mode, as a shared
        server must be after a test that registered some; customers stay until ``reset()``."""
        with self._lock:
            self._accounts.forget_platforms()

    def add_connected_account(self, platform: str, account_id: str) -> None:
        """Connect ``account_id`` to ``platform``: its keys reach it with a ``Stripe-Context`` header."""
        with self._lock:
            self._accounts.add_connected(platform, account_id)

    def set_platform_keys(self, account_id: str, keys: Iterable[str]) -> None:
        """Rotate a platform's keys: from now on only ``keys`` authenticate for it.

        A key it had before answers 401 "Expired API Key provided.", also to a
        request already in flight (keys are checked after latency and delays).
        """
        with self._lock:
            self._accounts.set_keys(account_id, keys)

    def set_rate_limit(self, account: str | None, per_second: int | None) -> None:
        """Answer 429 (``rate_limit``) to a request for ``account`` that arrives when
        ``per_second`` requests for it already arrived in the last second.

        Every arrival counts, the refused ones too, so a client that keeps
        sending stays refused until it pauses. ``None`` for ``per_second``
        lifts the limit; ``account=None`` limits legacy mode's default account.
        ``reset()`` lifts every limit.
        """
        with self._lock:
            self._accounts.set_rate_limit(account, per_second)

    def customers_of(self, account: str | None) -> dict[str, dict[str, Any]]:
        """Like ``customers``, for one account's store (None: the legacy default store)."""
        with self._lock:
            store = self._accounts.account(account).store
            return {cid: customer.render() for cid, customer in store.customers.items()}
