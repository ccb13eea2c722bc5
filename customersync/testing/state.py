"""The state helpers of ``FakeStripeServer``: what a test reads and sets directly, not over HTTP.

Customers in the store, their sources and cash balance settings. None of it
is logged. ``FakeStripeServer`` takes these methods from ``_StateMethods``.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from ..wire import decode, encode
from .customer import _Customer
from .store import _CustomerStore


class _StateMethods:
    """``FakeStripeServer``'s methods on its state: the customers, added, read, changed directly."""

    _lock: threading.RLock
    _store: _CustomerStore

    @property
    def customers(self) -> dict[str, dict[str, Any]]:
        """Copy of the store, id -> object in insertion order (deleted ones as their stub)."""
        with self._lock:
            return {cid: customer.render() for cid, customer in self._store.customers.items()}

    def add_customer(self, **fields: Any) -> dict[str, Any]:
        """Store a customer directly (not logged). Accepts ``id=`` and any customer-object field."""
        with self._lock:
            return self._store.add(fields).render()

    def get_customer(self, customer_id: str) -> dict[str, Any] | None:
        """The stored object (a deep copy), the deleted stub, or None."""
        with self._lock:
            customer = self._store.customers.get(customer_id)
            return None if customer is None else customer.render()

    def seed(self, n: int, prefix: str = "Customer") -> list[dict[str, Any]]:
        """Store ``n`` plausible customers, deterministic given ``n`` (description ``"<prefix> <i>"``)."""
        with self._lock:
            return [customer.render() for customer in self._store.seed(int(n), prefix)]

    def attach_source(self, customer_id: str, source_id: str, kind: str | None = None) -> dict[str, Any]:
        """Attach a source (``card_...``, ``ba_...``) to a customer without making it the default."""
        with self._lock:
            return copy.deepcopy(self._stored(customer_id).attach(source_id, kind))

    def update_customer_directly(self, customer_id: str, **params: Any) -> dict[str, Any]:
        """Apply an update as if another integration sent it (not logged, no idempotency).

        ``params`` are update params as a client would pass them; they go through
        the wire encoding, so the same validation and semantics apply.
        """
        with self._lock:
            return self._store.update(customer_id, decode(encode(params)))

    def delete_customer(self, customer_id: str) -> dict[str, Any]:
        """Delete a customer as if from the dashboard (not logged)."""
        with self._lock:
            return self._store.delete(customer_id, {})

    def sources(self, customer_id: str) -> list[dict[str, Any]]:
        """The sources attached to a customer."""
        with self._lock:
            return copy.deepcopy(list(self._stored(customer_id).sources.values()))

    def cash_balance_settings(self, customer_id: str) -> dict[str, Any]:
        """The customer's cash balance settings (never returned on the customer object)."""
        with self._lock:
            return dict(self._stored(customer_id).cash_balance_settings)

    def _stored(self, customer_id: str) -> _Customer:
        customer = self._store.customers.get(customer_id)
        if customer is None:
            raise KeyError(customer_id)
        return customer
