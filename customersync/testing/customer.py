"""The customer object: the fields the API returns, and the state Stripe keeps beside them."""

from __future__ import annotations

import copy
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

_ALNUM = string.ascii_letters + string.digits
_ADDRESS_KEYS = ("city", "country", "line1", "line2", "postal_code", "state")


def _random_id(prefix: str, length: int = 14) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def _new_customer(customer_id: str, created: int, invoice_prefix: str | None = None) -> dict[str, Any]:
    """A fresh customer object with the field set of the contract's fixture."""
    return {
        "id": customer_id,
        "object": "customer",
        "address": None,
        "balance": 0,
        "business_name": None,
        "created": created,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "individual_name": None,
        "invoice_prefix": invoice_prefix or secrets.token_hex(4).upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


_CUSTOMER_FIELDS = frozenset(_new_customer("cus_x", 0, "X"))


@dataclass
class _Customer:
    """A stored customer: the public object plus the write-only state Stripe keeps elsewhere."""

    obj: dict[str, Any]
    deleted: bool = False
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    tax_ip_address: str | None = None
    cash_balance_settings: dict[str, Any] = field(
        default_factory=lambda: {"reconciliation_mode": "automatic", "using_merchant_default": True}
    )

    def deleted_stub(self) -> dict[str, Any]:
        return {"id": self.obj["id"], "object": "customer", "deleted": True}

    def attach(self, source_id: str, kind: str | None = None) -> dict[str, Any]:
        if kind is None:
            kind = {"card_": "card", "ba_": "bank_account", "src_": "source"}.get(
                source_id[: source_id.find("_") + 1], "card"
            )
        source = {"id": source_id, "object": kind, "customer": self.obj["id"]}
        self.sources[source_id] = source
        return source

    def render(self, expand: Iterable[str] = ()) -> dict[str, Any]:
        """The object as the API returns it, with the supported expansions."""
        if self.deleted:
            return self.deleted_stub()
        obj = copy.deepcopy(self.obj)
        expand = set(expand)
        if "default_source" in expand and obj["default_source"] in self.sources:
            obj["default_source"] = copy.deepcopy(self.sources[obj["default_source"]])
        if "tax" in expand:
            obj["tax"] = {
                "automatic_tax": "unrecognized_location",
                "ip_address": self.tax_ip_address,
                "location": None,
                "provider": "stripe",
            }
        return obj
