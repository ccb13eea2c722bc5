"""A fake Stripe server speaking the customer endpoints, for tests and demos.

Stdlib only: this module ships inside the app wheel, so projects using the app
can test their Stripe traffic without network access or extra dependencies.

It keeps customers in memory with Stripe's update semantics (``''`` unsets,
metadata per-key unsets, whole-object replacement of addresses, ...), answers
Stripe-shaped errors naming the bad ``param``, honours ``Idempotency-Key``,
records every request byte for byte, and can inject faults (error statuses,
garbage bodies, delays, dropped or reset connections). A small control API
under ``/_fake/`` lets another process drive it over HTTP.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import ipaddress
import json
import random
import re
import secrets
import socket
import socketserver
import string
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from ..wire import decode, encode

__all__ = [
    "DEFAULT_API_VERSION",
    "FakeStripeServer",
    "Headers",
    "RecordedRequest",
    "StripeError",
    "is_loopback_host",
]

DEFAULT_API_VERSION = "2026-10-28.endive"

_ALNUM = string.ascii_letters + string.digits
_ADDRESS_KEYS = ("city", "country", "line1", "line2", "postal_code", "state")
_INVOICE_PREFIX = re.compile(r"[A-Z0-9]{3,12}")
_INTEGER = re.compile(r"[+-]?\d+")
_CUSTOMER_PATH = re.compile(r"/v1/customers/([^/]+)")

_TAX_EXEMPT = ("none", "exempt", "reverse")
_VALIDATE_LOCATION = ("auto", "deferred", "immediately")
_RECONCILIATION_MODES = ("automatic", "manual", "merchant_default")
_AMOUNT_TAX_DISPLAY = ("exclude_tax", "include_inclusive_tax")

# Token prefix -> (prefix of the source id it becomes, source object type).
# A "src_" source is attached as itself (its id kept), like Stripe does.
_TOKEN_KINDS = {
    "tok_": ("card_", "card"),
    "btok_": ("ba_", "bank_account"),
    "src_": ("", "source"),
}
_TOKEN_PARAMS = ("source", "card", "bank_account")
_DEFAULT_SOURCE_PARAMS = (
    "default_source",
    "default_card",
    "default_bank_account",
    "default_alipay_account",
)
_FAULT_ACTIONS = (None, "drop", "drop_after", "reset")
# How often the serve loop checks for shutdown: stop() waits up to this long.
_POLL_INTERVAL = 0.02


def _random_id(prefix: str, length: int = 14) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``: the only hosts a test server should bind."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------
# Errors


class StripeError(Exception):
    """An API error, answered as ``{"error": {type, code, message, param}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type}
        if self.code is not None:
            error["code"] = self.code
        error["message"] = self.message
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


def _invalid(message: str, param: str | None, code: str | None = None) -> StripeError:
    return StripeError(400, message, code=code, param=param)


def _unknown_param(param: str) -> StripeError:
    return _invalid(f"Received unknown parameter: {param}", param, "parameter_unknown")


def _missing_param(param: str, reported_as: str | None = None) -> StripeError:
    return _invalid(f"Missing required param: {param}.", reported_as or param, "parameter_missing")


def _cannot_unset(param: str) -> StripeError:
    # Stripe's answer to '' on a parameter that is not emptyable.
    return _invalid(
        f"You passed an empty string for '{param}'. We assume empty values are an "
        f"attempt to unset a parameter; however '{param}' cannot be unset. You should "
        f"remove '{param}' from your request or supply a non-empty value.",
        param,
        "parameter_invalid_empty",
    )


def _no_such_customer(customer_id: str, param: str = "id") -> StripeError:
    # 404 for the customer in the path; 400 when a parameter (a list cursor) names it.
    return StripeError(
        404 if param == "id" else 400,
        f"No such customer: '{customer_id}'",
        code="resource_missing",
        param=param,
    )


# --------------------------------------------------------------------------
# Parameter parsing helpers (each raises StripeError naming the bracket param)


def _string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"Invalid string: {json.dumps(value)}", param)
    return value


def _optional_string(value: Any, param: str) -> str | None:
    """A string sub-field: absent or ``''`` is null."""
    if value is None:
        return None
    return _string(value, param) or None


def _hash(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid("Invalid hash", param)
    return value


def _array(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise _invalid("Invalid array", param)
    return value


def _reject_unknown(value: Mapping[str, Any], allowed: Iterable[str], param: str) -> None:
    for key in value:
        if key not in allowed:
            raise _unknown_param(f"{param}[{key}]")


def _enum(value: Any, allowed: tuple[str, ...], param: str, *, emptyable: bool = False) -> str | None:
    text = _string(value, param)
    if text == "":
        if emptyable:
            return None
        raise _cannot_unset(param)
    if text not in allowed:
        raise _invalid(f"Invalid {param}: must be one of {', '.join(allowed)}", param)
    return text


def _address(value: Any, param: str) -> dict[str, str | None]:
    """A whole address: keys not sent become null."""
    fields = _hash(value, param)
    _reject_unknown(fields, _ADDRESS_KEYS, param)
    return {key: _optional_string(fields.get(key), f"{param}[{key}]") for key in _ADDRESS_KEYS}


def _expand(params: Mapping[str, Any]) -> list[str]:
    if "expand" not in params:
        return []
    items = _array(params["expand"], "expand")
    return [_string(item, f"expand[{index}]") for index, item in enumerate(items)]


# --------------------------------------------------------------------------
# Customers


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


# Setters for create/update params: (customer, param name, value) -> None.
# They run on a scratch copy, so raising half-way leaves the stored customer intact.
_Setter = Callable[[_Customer, str, Any], None]


def _set_plain_string(customer: _Customer, name: str, value: Any) -> None:
    text = _string(value, name)
    if name == "email" and len(text) > 512:
        raise _invalid("Invalid email: must be at most 512 characters", name)
    if name == "invoice_prefix" and text and not _INVOICE_PREFIX.fullmatch(text):
        raise _invalid("Invalid invoice_prefix: must be 3 to 12 uppercase letters or digits", name)
    customer.obj[name] = text or None


def _set_integer(customer: _Customer, name: str, value: Any) -> None:
    if value == "":
        raise _cannot_unset(name)
    if not isinstance(value, str) or not _INTEGER.fullmatch(value):
        shown = value if isinstance(value, str) else json.dumps(value)
        raise _invalid(f"Invalid integer: {shown}", name, "parameter_invalid_integer")
    number = int(value)
    if name == "next_invoice_sequence" and number < 1:
        raise _invalid("Invalid next_invoice_sequence: must be at least 1", name)
    customer.obj[name] = number


def _set_metadata(customer: _Customer, name: str, value: Any) -> None:
    if value == "":
        customer.obj["metadata"] = {}
        return
    metadata = customer.obj["metadata"]
    for key, item in _hash(value, name).items():
        param = f"metadata[{key}]"
        if not key:
            raise _invalid("Metadata keys must not be empty", "metadata")
        if len(key) > 40:
            raise _invalid(f"Metadata keys can be at most 40 characters long ({key!r})", param)
        if "[" in key or "]" in key:
            raise _invalid(f"Metadata keys may not contain '[' or ']' ({key!r})", param)
        item = _string(item, param)
        if len(item) > 500:
            raise _invalid("Metadata values can be at most 500 characters long", param)
        if item:
            metadata[key] = item
        else:
            metadata.pop(key, None)  # metadata[k]= deletes the key
    if len(metadata) > 50:
        raise _invalid("Metadata can have at most 50 keys", "metadata")


def _set_address(customer: _Customer, name: str, value: Any) -> None:
    customer.obj["address"] = None if value == "" else _address(value, name)


def _set_shipping(customer: _Customer, name: str, value: Any) -> None:
    if value == "":
        customer.obj["shipping"] = None
        return
    fields = _hash(value, name)
    _reject_unknown(fields, ("address", "name", "phone"), name)
    for required in ("name", "address"):
        if required not in fields:
            raise _missing_param(f"shipping[{required}]")
        if fields[required] == "":
            raise _cannot_unset(f"shipping[{required}]")
    customer.obj["shipping"] = {
        "address": _address(fields["address"], "shipping[address]"),
        "carrier": None,
        "name": _string(fields["name"], "shipping[name]"),
        "phone": _optional_string(fields.get("phone"), "shipping[phone]"),
        "tracking_number": None,
    }


def _custom_fields(value: Any, param: str) -> list[dict[str, str]] | None:
    if value == "":
        return None
    entries = _array(value, param)
    if len(entries) > 4:
        raise _invalid("You can specify at most 4 invoice custom fields", param)
    result = []
    for index, entry in enumerate(entries):
        entry_param = f"{param}[{index}]"
        entry = _hash(entry, entry_param)
        _reject_unknown(entry, ("name", "value"), entry_param)
        for key, limit in (("name", 40), ("value", 140)):
            text = entry.get(key)
            if not text:
                raise _missing_param(f"{entry_param}[{key}]", reported_as=param)
            if len(_string(text, param)) > limit:
                raise _invalid(f"Invalid {entry_param}[{key}]: must be at most {limit} characters", param)
        result.append({"name": entry["name"], "value": entry["value"]})
    return result


def _rendering_options(value: Any, param: str) -> dict[str, str | None] | None:
    if value == "":
        return None
    options = _hash(value, param)
    _reject_unknown(options, ("amount_tax_display", "template"), param)
    display = options.get("amount_tax_display")
    return {
        "amount_tax_display": None
        if display is None
        else _enum(display, _AMOUNT_TAX_DISPLAY, f"{param}[amount_tax_display]", emptyable=True),
        "template": _optional_string(options.get("template"), f"{param}[template]"),
    }


def _set_invoice_settings(customer: _Customer, name: str, value: Any) -> None:
    if value == "":
        raise _cannot_unset(name)
    fields = _hash(value, name)
    _reject_unknown(fields, ("custom_fields", "default_payment_method", "footer", "rendering_options"), name)
    # Each sub-parameter is independent: the ones not sent stay as they are.
    settings = customer.obj["invoice_settings"]
    for key, item in fields.items():
        param = f"{name}[{key}]"
        if key == "custom_fields":
            settings[key] = _custom_fields(item, param)
        elif key == "rendering_options":
            settings[key] = _rendering_options(item, param)
        else:
            settings[key] = _optional_string(item, param)


def _set_preferred_locales(customer: _Customer, name: str, value: Any) -> None:
    if value == "":
        raise _cannot_unset(name)
    items = _array(value, name)
    customer.obj[name] = [_string(item, f"{name}[{index}]") for index, item in enumerate(items)]


def _set_tax_exempt(customer: _Customer, name: str, value: Any) -> None:
    # Stripe reports an unset tax_exempt as "none".
    customer.obj[name] = _enum(value, _TAX_EXEMPT, name, emptyable=True) or "none"


def _set_tax(customer: _Customer, name: str, value: Any) -> None:
    if value == "":
        raise _cannot_unset(name)
    fields = _hash(value, name)
    _reject_unknown(fields, ("ip_address", "validate_location"), name)
    if "validate_location" in fields:  # a request option: validated, never stored
        _enum(fields["validate_location"], _VALIDATE_LOCATION, "tax[validate_location]")
    if "ip_address" in fields:
        address = _string(fields["ip_address"], "tax[ip_address]")
        if address:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise _invalid(f"Invalid IP address: {address}", "tax[ip_address]") from None
        customer.tax_ip_address = address or None


def _set_cash_balance(customer: _Customer, name: str, value: Any) -> None:
    fields = _hash(value, name)
    _reject_unknown(fields, ("settings",), name)
    if "settings" not in fields:
        return
    settings = _hash(fields["settings"], "cash_balance[settings]")
    _reject_unknown(settings, ("reconciliation_mode",), "cash_balance[settings]")
    if "reconciliation_mode" in settings:
        param = "cash_balance[settings][reconciliation_mode]"
        mode = _enum(settings["reconciliation_mode"], _RECONCILIATION_MODES, param)
        customer.cash_balance_settings = {
            "reconciliation_mode": mode,
            "using_merchant_default": mode == "merchant_default",
        }


def _attach_token(customer: _Customer, name: str, value: Any) -> None:
    token = _string(value, name)
    if token == "":
        raise _cannot_unset(name)
    prefix = next((p for p in _TOKEN_KINDS if token.startswith(p) and len(token) > len(p)), None)
    if prefix is None:
        raise _invalid(f"No such token: '{token}'", name, "resource_missing")
    id_prefix, kind = _TOKEN_KINDS[prefix]
    source_id = token if kind == "source" else _random_id(id_prefix)
    # Stripe: the new source becomes the default and the old default is deleted.
    old_default = customer.obj["default_source"]
    if old_default is not None:
        customer.sources.pop(old_default, None)
    customer.attach(source_id, kind)
    customer.obj["default_source"] = source_id


def _set_default_source(customer: _Customer, name: str, value: Any) -> None:
    source_id = _string(value, name)
    if source_id == "":
        raise _cannot_unset(name)
    if source_id not in customer.sources:
        raise _invalid(f"No such source: '{source_id}'", name, "resource_missing")
    customer.obj["default_source"] = source_id


def _check_expand(customer: _Customer, name: str, value: Any) -> None:
    _expand({name: value})  # applied when rendering the response


def _check_validate(customer: _Customer, name: str, value: Any) -> None:
    if value not in ("true", "false"):
        shown = value if isinstance(value, str) else json.dumps(value)
        raise _invalid(f"Invalid boolean: {shown}", name)


_SETTERS: dict[str, _Setter] = {
    **{
        key: _set_plain_string
        for key in (
            "email",
            "name",
            "phone",
            "description",
            "invoice_prefix",
            "business_name",
            "individual_name",
        )
    },
    "balance": _set_integer,
    "next_invoice_sequence": _set_integer,
    "metadata": _set_metadata,
    "address": _set_address,
    "shipping": _set_shipping,
    "invoice_settings": _set_invoice_settings,
    "preferred_locales": _set_preferred_locales,
    "tax_exempt": _set_tax_exempt,
    "tax": _set_tax,
    "cash_balance": _set_cash_balance,
    **{key: _attach_token for key in _TOKEN_PARAMS},
    **{key: _set_default_source for key in _DEFAULT_SOURCE_PARAMS},
    "expand": _check_expand,
    "validate": _check_validate,
}


def _apply(customer: _Customer, params: Mapping[str, Any]) -> None:
    """Apply create/update params to ``customer`` (a scratch copy)."""
    for name in params:
        if name not in _SETTERS:
            raise _unknown_param(name)
    # Tokens first, so a default_source in the same request may name the source they create.
    for name, value in sorted(params.items(), key=lambda item: item[0] not in _TOKEN_PARAMS):
        _SETTERS[name](customer, name, value)


def _normalize_field(name: str, value: Any) -> Any:
    """Shape a field given to ``add_customer`` like the API would store it."""
    value = copy.deepcopy(value)
    if name == "address" and value is not None:
        return {key: value.get(key) for key in _ADDRESS_KEYS}
    if name == "shipping" and value is not None:
        address = value.get("address") or {}
        return {
            "address": {key: address.get(key) for key in _ADDRESS_KEYS},
            "carrier": value.get("carrier"),
            "name": value.get("name"),
            "phone": value.get("phone"),
            "tracking_number": value.get("tracking_number"),
        }
    if name == "invoice_settings":
        settings = _new_customer("cus_x", 0, "X")["invoice_settings"]
        settings.update(value or {})
        options = settings["rendering_options"]
        if options is not None:
            settings["rendering_options"] = {
                "amount_tax_display": options.get("amount_tax_display"),
                "template": options.get("template"),
            }
        return settings
    if name == "metadata":
        return {str(key): str(item) for key, item in (value or {}).items()}
    return value


# Plausible, deterministic data for seed().
_FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Frances", "Tim")
_LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson", "Allen", "Lee")
_PLACES = (
    ("London", "GB", "10 Downing Street", "SW1A 2AA", None),
    ("Paris", "FR", "5 Avenue Anatole France", "75007", None),
    ("Berlin", "DE", "Platz der Republik 1", "11011", None),
    ("New York", "US", "350 Fifth Avenue", "10118", "NY"),
    ("Tokyo", "JP", "1-1 Chiyoda", "100-8111", "Tokyo"),
)
_LOCALES = (["en"], ["fr", "en"], ["de"], ["en-US"], ["ja", "en"])
_SEGMENTS = ("smb", "enterprise", "startup")


class _CustomerStore:
    """Customers in insertion order and the API operations on them. Not thread-safe: the server locks."""

    def __init__(self) -> None:
        self.customers: dict[str, _Customer] = {}

    def _get_live(self, customer_id: str) -> _Customer:
        customer = self.customers.get(customer_id)
        if customer is None or customer.deleted:
            raise _no_such_customer(customer_id)
        return customer

    def list_page(self, params: Mapping[str, Any]) -> dict[str, Any]:
        _reject_unknown_top(params, ("limit", "starting_after", "ending_before", "email", "expand", "created"))
        created = params.get("created")
        bounds: dict[str, int] = {}
        if created is not None:
            if not isinstance(created, Mapping) or set(created) - {"gt", "gte", "lt", "lte"}:
                raise _invalid("Invalid created: use created[gt], [gte], [lt] or [lte]", "created")
            for op, text in created.items():
                if not _INTEGER.fullmatch(str(text)):
                    raise _invalid(f"Invalid integer: {text}", f"created[{op}]", "parameter_invalid_integer")
                bounds[op] = int(text)

        def in_range(stamp: int) -> bool:
            return (
                stamp > bounds.get("gt", stamp - 1)
                and stamp >= bounds.get("gte", stamp)
                and stamp < bounds.get("lt", stamp + 1)
                and stamp <= bounds.get("lte", stamp)
            )

        limit = 10
        if "limit" in params:
            text = _string(params["limit"], "limit")
            if not _INTEGER.fullmatch(text):
                raise _invalid(f"Invalid integer: {text}", "limit", "parameter_invalid_integer")
            limit = int(text)
            if not 1 <= limit <= 100:
                raise _invalid("Invalid limit: must be between 1 and 100", "limit")
        if "starting_after" in params and "ending_before" in params:
            raise _invalid(
                "You may only specify one of these parameters: ending_before, starting_after.",
                "ending_before",
            )
        order = list(self.customers)  # insertion order; the API lists newest first
        position = {customer_id: index for index, customer_id in enumerate(order)}

        def listed(indexes: Iterable[int]) -> list[_Customer]:
            email = params.get("email")
            customers = (self.customers[order[index]] for index in indexes)
            return [
                c
                for c in customers
                if not c.deleted and (email is None or c.obj["email"] == email) and in_range(c.obj["created"])
            ]

        if "starting_after" in params:
            cursor = _string(params["starting_after"], "starting_after")
            if cursor not in position:
                raise _no_such_customer(cursor, param="starting_after")
            candidates = listed(range(position[cursor] - 1, -1, -1))
            page = candidates[:limit]
        elif "ending_before" in params:
            cursor = _string(params["ending_before"], "ending_before")
            if cursor not in position:
                raise _no_such_customer(cursor, param="ending_before")
            candidates = listed(range(len(order) - 1, position[cursor], -1))
            page = candidates[-limit:]  # the page just before the cursor, still newest first
        else:
            candidates = listed(range(len(order) - 1, -1, -1))
            page = candidates[:limit]
        return {
            "object": "list",
            "data": [customer.render() for customer in page],
            "has_more": len(candidates) > limit,
            "url": "/v1/customers",
        }

    def retrieve(self, customer_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        _reject_unknown_top(params, ("expand",))
        customer = self.customers.get(customer_id)
        if customer is None:
            raise _no_such_customer(customer_id)
        return customer.render(_expand(params))

    def create(self, params: Mapping[str, Any]) -> dict[str, Any]:
        customer = _Customer(_new_customer(_random_id("cus_"), int(time.time())))
        _apply(customer, params)
        self.customers[customer.obj["id"]] = customer
        return customer.render(_expand(params))

    def update(self, customer_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        scratch = copy.deepcopy(self._get_live(customer_id))
        _apply(scratch, params)  # raises before anything is stored
        self.customers[customer_id] = scratch
        return scratch.render(_expand(params))

    def delete(self, customer_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        _reject_unknown_top(params, ())
        customer = self._get_live(customer_id)
        customer.deleted = True
        return customer.deleted_stub()

    def add(self, fields: Mapping[str, Any], *, created: int | None = None) -> _Customer:
        unknown = sorted(set(fields) - _CUSTOMER_FIELDS)
        if unknown:
            raise ValueError(f"not customer object fields: {', '.join(unknown)}")
        customer_id = fields.get("id") or _random_id("cus_")
        if customer_id in self.customers:
            raise ValueError(f"customer {customer_id!r} already exists")
        obj = _new_customer(customer_id, int(time.time()) if created is None else created)
        for name, value in fields.items():
            if name not in ("id", "object"):
                obj[name] = _normalize_field(name, value)
        customer = _Customer(obj)
        if obj["default_source"] is not None:  # keep default_source pointing at a real source
            customer.attach(obj["default_source"])
        self.customers[customer_id] = customer
        return customer

    def seed(self, n: int, prefix: str) -> list[_Customer]:
        created = []
        for index in range(n):
            first = _FIRST_NAMES[index % len(_FIRST_NAMES)]
            last = _LAST_NAMES[(index * 3 + index // len(_FIRST_NAMES)) % len(_LAST_NAMES)]
            city, country, line1, postal_code, state = _PLACES[index % len(_PLACES)]
            digest = ""
            for salt in range(1000):  # deterministic ids, skipping ones already taken
                digest = hashlib.sha256(f"{prefix}:{index}:{salt}".encode()).hexdigest()
                if f"cus_{digest[:14]}" not in self.customers:
                    break
            fields = {
                "id": f"cus_{digest[:14]}",
                "name": f"{first} {last}",
                "email": f"{first}.{last}.{index + 1}@example.com".lower(),
                "phone": f"+1555{index + 1:07d}",
                "description": f"{prefix} {index + 1}",
                "invoice_prefix": digest[14:22].upper(),
                "metadata": {"seed_index": str(index + 1), "segment": _SEGMENTS[index % len(_SEGMENTS)]},
                "address": {
                    "city": city,
                    "country": country,
                    "line1": line1,
                    "line2": None,
                    "postal_code": postal_code,
                    "state": state,
                },
                "preferred_locales": list(_LOCALES[index % len(_LOCALES)]),
            }
            created.append(self.add(fields, created=1_700_000_000 + index * 3600))
        return created


def _reject_unknown_top(params: Mapping[str, Any], allowed: Iterable[str]) -> None:
    for name in params:
        if name not in allowed:
            raise _unknown_param(name)


# --------------------------------------------------------------------------
# Requests, responses and faults


class Headers(dict[str, str]):
    """Header name -> value, keeping names as sent but looked up case-insensitively."""

    def _find(self, name: object) -> str | None:
        if not isinstance(name, str):
            return None
        if dict.__contains__(self, name):
            return name
        lowered = name.lower()
        return next((key for key in self if key.lower() == lowered), None)

    def __getitem__(self, name: str) -> str:
        key = self._find(name)
        if key is None:
            raise KeyError(name)
        return dict.__getitem__(self, key)

    def __contains__(self, name: object) -> bool:
        return self._find(name) is not None

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        key = self._find(name)
        return default if key is None else dict.__getitem__(self, key)


@dataclass
class RecordedRequest:
    """One API request as the server received it, and the status it answered.

    A request is logged once its outcome is decided (just before the response
    is written or the connection dropped); ``time`` is when it was received.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: bytes
    params: dict[str, Any]
    status: int | None
    time: float
    idempotency_key: str | None
    # When the outcome was decided (monotonic), and whether it was a replay
    # of an earlier answer under the same Idempotency-Key.
    finished: float | None = None
    replayed: bool = False

    def summary(self) -> str:
        query = "?" + urlencode(self.query) if self.query else ""
        return f"{self.method} {self.path}{query} {self.status if self.status is not None else 'dropped'}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, as served by ``GET /_fake/requests``."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": dict(self.headers),
            "body": self.body.decode("utf-8", "replace"),
            "params": self.params,
            "status": self.status,
            "time": self.time,
            "finished": self.finished,
            "idempotency_key": self.idempotency_key,
            "replayed": self.replayed,
        }


@dataclass
class _Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, indent=2).encode()


def _error_response(error: StripeError, headers: Mapping[str, str] | None = None) -> _Response:
    return _Response(error.status, _json_bytes(error.body()), dict(headers or {}))


def _default_fault_error(status: int) -> dict[str, Any]:
    if status == 429:
        return {
            "type": "invalid_request_error",
            "code": "rate_limit",
            "message": "Too many requests hit the API too quickly. (injected fault)",
        }
    if status >= 500:
        return {"type": "api_error", "message": "An unknown error occurred. (injected fault)"}
    return {"type": "invalid_request_error", "message": f"Injected fault ({status})."}


@dataclass
class _Fault:
    status: int | None
    body: bytes | None
    headers: dict[str, str]
    error: dict[str, Any] | None
    delay: float
    action: str | None
    remaining: int
    method: str | None
    path_prefix: str

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and path.startswith(self.path_prefix)

    def response(self) -> _Response:
        assert self.status is not None
        body = self.body
        if body is None:
            body = _json_bytes({"error": self.error or _default_fault_error(self.status)})
        return _Response(self.status, body)


@dataclass
class _CachedResult:
    """What an Idempotency-Key was first used for, and the answer to replay."""

    method: str
    path: str
    body: bytes
    status: int
    payload: bytes
    request_id: str


def _merge_headers(base: dict[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """``base`` updated with ``extra``, header names compared case-insensitively."""
    merged = {key: value for key, value in base.items() if key.lower() not in {k.lower() for k in extra}}
    merged.update(extra)
    return merged


def _request_params(raw: bytes | str) -> dict[str, Any]:
    """Decode a form body or query with wire.decode, also accepting ``key[]=`` list items."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    if "[]" not in text and "%5b%5d" not in text.lower():
        return decode(text)
    # wire.decode only knows indexed lists (what stripe-python sends); number the "[]" items.
    counters: dict[str, int] = {}
    pairs = []
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key.endswith("[]"):
            base = key[:-2]
            counters[base] = counters.get(base, -1) + 1
            key = f"{base}[{counters[base]}]"
        pairs.append((key, value))
    return decode(urlencode(pairs))


def _bearer_key(headers: Headers) -> str | None:
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


# --------------------------------------------------------------------------
# HTTP


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeStripeServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.fake = fake
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a DNS lookup that can stall offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the SDKs' connection pools
    server_version = "FakeStripe/1.0"
    timeout = 60  # idle keep-alive connections end eventually
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle and delayed ACKs add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the command prints its own line per request."""

    def do_GET(self) -> None:
        received = time.monotonic()
        body = self._read_body()
        url = urlsplit(self.path)
        if url.path.startswith("/_fake/"):
            status, payload = self.server.fake._control(self.command, url.path, body)
            self._write(_Response(status, _json_bytes(payload)))
        else:
            self._serve_api(url.path, url.query, body, received)

    do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve_api(self, path: str, query: str, body: bytes, received: float) -> None:
        fake = self.server.fake
        headers = Headers()
        for name, value in self.headers.items():
            seen = headers._find(name)  # a repeated header: join its values, as HTTP allows
            headers[seen or name] = f"{headers[seen]}, {value}" if seen else value
        raw_params = body if self.command == "POST" else query.encode()
        try:
            params, params_ok = _request_params(raw_params), True
        except UnicodeDecodeError:
            params, params_ok = {}, False
        record = RecordedRequest(
            method=self.command,
            path=path,
            query=dict(parse_qsl(query, keep_blank_values=True)),
            headers=headers,
            body=body,
            params=params,
            status=None,
            time=received,
            idempotency_key=headers.get("Idempotency-Key"),
        )
        fake._arrived(record)
        key = record.idempotency_key if self.command == "POST" else None
        if key is not None and not fake._begin_key(key):
            # Like Stripe: a second request while one with the same key is in flight.
            error = StripeError(
                409,
                "There is currently another in-progress request using this Stripe API key and "
                "idempotency key. Please try again later.",
                type="idempotency_error",
            )
            self._respond(record, _error_response(error, {"Idempotency-Key": key}))
            fake._report(record)
            return
        fault = fake._take_fault(self.command, path)
        latency = fake._draw_latency()
        try:
            if latency and fake._stopping.wait(latency):
                self._abort(record, reset=False)
            elif fault is not None and fault.delay > 0 and fake._stopping.wait(fault.delay):
                self._abort(record, reset=False)  # stop() interrupted the delay
            elif fault is not None and fault.action in ("drop", "reset"):
                self._abort(record, reset=fault.action == "reset")
            elif fault is not None and fault.status is not None:
                response = fault.response()
                response.headers = _merge_headers(response.headers, fault.headers)
                self._respond(record, response)
            else:
                response = fake._execute(record, params_ok)
                if fault is not None and fault.action == "drop_after":
                    self._abort(record, reset=False)  # applied (and cached), never answered
                else:
                    if fault is not None:
                        response.headers = _merge_headers(response.headers, fault.headers)
                    self._respond(record, response)
        finally:
            if key is not None:
                fake._end_key(key)
            fake._report(record)

    def _respond(self, record: RecordedRequest, response: _Response) -> None:
        record.status = response.status
        self.server.fake._log(record)  # before writing, so a client never outruns the log
        version = record.headers.get("Stripe-Version") or DEFAULT_API_VERSION
        headers = _merge_headers(
            {
                "Content-Type": "application/json",
                "Request-Id": _random_id("req_"),
                "Stripe-Version": version,
            },
            response.headers,
        )
        self._write(response, headers)

    def _write(self, response: _Response, headers: Mapping[str, str] | None = None) -> None:
        headers = headers or {"Content-Type": "application/json"}
        try:
            self.send_response(response.status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
        except OSError:  # the client gave up (e.g. its timeout fired during a delay)
            self.close_connection = True

    def _abort(self, record: RecordedRequest, *, reset: bool) -> None:
        """Close the connection without a response: FIN, or RST when ``reset``."""
        self.server.fake._log(record)
        self.close_connection = True
        if reset:
            # Linger 0 makes close() send RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


# --------------------------------------------------------------------------
# The server


_RELATED_PATH = re.compile(r"/v1/customers/([^/]+)/(sources|tax_ids|cash_balance_transactions|balance_transactions)")

_ACCOUNT: dict[str, Any] = {
    "id": "acct_fakestripe000000",
    "object": "account",
    "type": "standard",
    "country": "US",
    "default_currency": "usd",
    "email": "account@example.com",
    "charges_enabled": True,
    "payouts_enabled": True,
    "details_submitted": True,
    "created": 1_600_000_000,
    "business_profile": {"name": "Fake Stripe account", "url": None, "support_email": None},
    "settings": {"branding": {"icon": None, "logo": None}, "dashboard": {"display_name": "Fake"}},
    "metadata": {},
}


class FakeStripeServer:
    """An in-memory Stripe customers API on a local port.

    Use it as a context manager (``with FakeStripeServer() as server:``) or
    call ``start()``/``stop()``; ``url`` is valid from construction, since the
    port is bound there. ``api_key=None`` accepts any ``sk_test_`` key.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        *,
        on_request: Callable[[RecordedRequest], None] | None = None,
    ) -> None:
        self._api_key = api_key
        self._on_request = on_request
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._store = _CustomerStore()
        self._log_entries: list[RecordedRequest] = []
        self._arrivals: list[RecordedRequest] = []
        self._keys_in_flight: set[str] = set()
        self._latency: tuple[float, float] = (0.0, 0.0)
        self._faults: list[_Fault] = []
        self._idempotency: dict[str, _CachedResult] = {}
        self._connections: set[socket.socket] = set()
        self._serving = False
        self._thread: threading.Thread | None = None
        self._httpd = _HTTPServer((host, port), self)

    def __repr__(self) -> str:
        return f"<FakeStripeServer {self.url}>"

    # lifecycle

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def start(self) -> FakeStripeServer:
        """Serve in a daemon thread; returns self."""
        if self._thread is None:
            self._serving = True
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                args=(_POLL_INTERVAL,),
                name=f"fake-stripe {self.url}",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``stop()`` (or an exception such as KeyboardInterrupt)."""
        self._serving = True
        self._httpd.serve_forever(_POLL_INTERVAL)

    def stop(self) -> None:
        """Stop serving, interrupt pending delays and close open connections."""
        self._stopping.set()
        if self._serving:
            self._serving = False
            self._httpd.shutdown()  # only safe once serve_forever has been entered
        self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeStripeServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # state

    def reset(self) -> None:
        """Forget customers, logged requests, pending faults and idempotency keys."""
        with self._lock:
            self._store = _CustomerStore()
            self._log_entries.clear()
            self._arrivals.clear()
            self._faults.clear()
            self._idempotency.clear()
            self._latency = (0.0, 0.0)

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

    # request log

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the request log, in the order outcomes were decided."""
        with self._lock:
            return list(self._log_entries)

    def clear_requests(self) -> None:
        with self._lock:
            self._log_entries.clear()
            self._arrivals.clear()

    def wait_for(
        self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float = 10.0, what: str = "a condition"
    ) -> list[RecordedRequest]:
        """Block until ``predicate(requests)`` holds, re-checked as each request is logged."""
        with self._changed:
            if self._changed.wait_for(lambda: predicate(list(self._log_entries)), timeout):
                return list(self._log_entries)
            received = "\n".join(f"  {r.summary()}" for r in self._log_entries) or "  (none)"
        raise TimeoutError(f"waited {timeout:g}s for {what}; all requests received:\n{received}")

    def wait_for_arrivals(
        self,
        count: int,
        timeout: float = 10.0,
        method: str | None = None,
        path_prefix: str | None = None,
    ) -> list[RecordedRequest]:
        """Like ``wait_for_requests``, but counts requests as soon as they arrive,
        before any latency or delay and before they are answered."""
        return self.wait_for_requests(count, timeout, method, path_prefix, _source="_arrivals")

    def wait_for_requests(
        self,
        count: int,
        timeout: float = 10.0,
        method: str | None = None,
        path_prefix: str | None = None,
        *,
        _source: str = "_log_entries",
    ) -> list[RecordedRequest]:
        """Block until at least ``count`` matching requests are logged; return the matching ones.

        Raises TimeoutError listing what was received instead.
        """
        wanted_method = method.upper() if method else None

        def matching() -> list[RecordedRequest]:
            return [
                r
                for r in getattr(self, _source)
                if (wanted_method is None or r.method == wanted_method)
                and (path_prefix is None or r.path.startswith(path_prefix))
            ]

        with self._changed:
            if self._changed.wait_for(lambda: len(matching()) >= count, timeout):
                return matching()
            found = len(matching())
            received = "\n".join(f"  {r.summary()}" for r in self._log_entries) or "  (none)"
        wanted = f"{wanted_method or 'any method'} {path_prefix or ''}*"
        raise TimeoutError(
            f"waited {timeout:g}s for {count} request(s) matching {wanted}, "
            f"got {found}; all requests received:\n{received}"
        )

    # faults

    def inject(
        self,
        *,
        status: int | None = None,
        body: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        error: Mapping[str, Any] | None = None,
        delay: float = 0.0,
        action: str | None = None,
        times: int = 1,
        method: str | None = "POST",
        path_prefix: str = "/v1/customers",
    ) -> None:
        """Queue a fault for the next ``times`` requests matching method and path prefix.

        ``status`` answers that status with ``body`` (raw) or an error object
        (``error`` or a default); ``headers`` are added to whatever is answered;
        ``delay`` waits first; ``action`` is ``"drop"`` (close, nothing applied),
        ``"drop_after"`` (apply, then close) or ``"reset"`` (TCP RST). Faults
        are consumed first-in first-out; ``method=None`` matches any method.
        """
        if action not in _FAULT_ACTIONS:
            raise ValueError(f"action must be one of {_FAULT_ACTIONS}, not {action!r}")
        if status is not None and action is not None:
            raise ValueError("give either status or action, not both")
        if status is None and (body is not None or error is not None):
            raise ValueError("body and error need a status")
        if status is not None and not 100 <= int(status) <= 599:
            raise ValueError(f"status must be an HTTP status code, not {status!r}")
        if int(times) < 1 or float(delay) < 0:
            raise ValueError("times must be at least 1 and delay not negative")
        if isinstance(body, str):
            body = body.encode()
        fault = _Fault(
            status=None if status is None else int(status),
            body=body,
            headers={str(k): str(v) for k, v in (headers or {}).items()},
            error=dict(error) if error is not None else None,
            delay=float(delay),
            action=action,
            remaining=int(times),
            method=method.upper() if method else None,
            path_prefix=path_prefix,
        )
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # request handling (called from handler threads)

    def _track(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _untrack(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _log(self, record: RecordedRequest) -> None:
        with self._changed:
            record.finished = time.monotonic()
            self._log_entries.append(record)
            self._changed.notify_all()

    def _arrived(self, record: RecordedRequest) -> None:
        with self._changed:
            self._arrivals.append(record)
            self._changed.notify_all()

    def _begin_key(self, key: str) -> bool:
        with self._lock:
            if key in self._keys_in_flight:
                return False
            self._keys_in_flight.add(key)
            return True

    def _end_key(self, key: str) -> None:
        with self._lock:
            self._keys_in_flight.discard(key)

    def _draw_latency(self) -> float:
        with self._lock:
            low, high = self._latency
        return random.uniform(low, high) if high > 0 else 0.0

    def set_latency(self, low: float, high: float | None = None) -> None:
        """Delay every API request by a random time in ``[low, high]`` seconds (0 turns it off)."""
        high = low if high is None else high
        if low < 0 or high < low:
            raise ValueError("need 0 <= low <= high")
        with self._lock:
            self._latency = (float(low), float(high))

    def _report(self, record: RecordedRequest) -> None:
        if self._on_request is not None:
            self._on_request(record)

    def set_api_key(self, api_key: str | None) -> None:
        """Change the key the server accepts (None: any ``sk_test_`` key)."""
        with self._lock:
            self._api_key = api_key

    def _authorized(self, key: str | None) -> bool:
        if key is None:
            return False
        if self._api_key is None:
            return key.startswith("sk_test_") and len(key) > len("sk_test_")
        return secrets.compare_digest(key.encode(), self._api_key.encode())

    def _execute(self, record: RecordedRequest, params_ok: bool) -> _Response:
        """Authenticate, then route the request, honouring Idempotency-Key on POST."""
        if not self._authorized(_bearer_key(record.headers)):
            # Never echo the key, not even masked.
            error = StripeError(401, "Invalid API Key provided.")
            return _error_response(error, {"WWW-Authenticate": 'Bearer realm="Stripe"'})
        if not params_ok:
            return _error_response(_invalid("Invalid request body: expected UTF-8 form encoding", None))
        key = record.idempotency_key if record.method == "POST" else None
        # One lock around check, execution and caching: requests sharing a key are serialized.
        with self._lock:
            if key is None:
                return self._route(record)
            cached = self._idempotency.get(key)
            if cached is not None:
                if (cached.method, cached.path, cached.body) != (record.method, record.path, record.body):
                    error = StripeError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters "
                        "they were first used with. Try using a key other than "
                        f"'{key}' if you meant to execute a different request.",
                        type="idempotency_error",
                    )
                    return _error_response(error, {"Idempotency-Key": key})
                record.replayed = True
                return _Response(
                    cached.status,
                    cached.payload,
                    {"Idempotency-Key": key, "Idempotent-Replayed": "true", "Original-Request": cached.request_id},
                )
            response = self._route(record)
            response.headers["Idempotency-Key"] = key
            # Like Stripe, save only requests that started executing: not 400 validation errors.
            if 200 <= response.status < 300 or response.status == 404:
                request_id = _random_id("req_")
                response.headers["Request-Id"] = request_id
                self._idempotency[key] = _CachedResult(
                    record.method, record.path, record.body, response.status, response.body, request_id
                )
            return response

    def _route(self, record: RecordedRequest) -> _Response:
        method, path, params = record.method, record.path, record.params
        match = _CUSTOMER_PATH.fullmatch(path)
        try:
            if path == "/v1/customers" and method == "GET":
                payload = self._store.list_page(params)
            elif path == "/v1/customers" and method == "POST":
                payload = self._store.create(params)
            elif path == "/v1/account" and method == "GET":
                # Enough of the account for clients that look it up first (dj-stripe does).
                payload = _ACCOUNT
            elif method == "GET" and (related := _RELATED_PATH.fullmatch(path)):
                # Read-only lists of a customer's related objects, for clients that walk them.
                customer = self._store._get_live(unquote(related.group(1)))
                items = list(customer.sources.values()) if related.group(2) == "sources" else []
                wanted = params.get("object")
                payload = {
                    "object": "list",
                    "data": [copy.deepcopy(i) for i in items if not wanted or i.get("object") == wanted],
                    "has_more": False,
                    "url": path,
                }
            elif method == "GET" and path in ("/v1/payment_methods", "/v1/subscriptions"):
                payload = {"object": "list", "data": [], "has_more": False, "url": path}
            elif path == "/v1/accounts" and method == "GET":
                payload = {
                    "object": "list",
                    "data": [],
                    "has_more": False,
                    "url": "/v1/accounts",
                }  # no connected accounts
            elif match and method in ("GET", "POST", "DELETE"):
                customer_id = unquote(match.group(1))
                operation = {
                    "GET": self._store.retrieve,
                    "POST": self._store.update,
                    "DELETE": self._store.delete,
                }[method]
                payload = operation(customer_id, params)
            else:
                raise StripeError(404, f"Unrecognized request URL ({method}: {path}).")
        except StripeError as error:
            return _error_response(error)
        return _Response(200, _json_bytes(payload))

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """The ``/_fake/`` control API: JSON in, JSON out, no auth, not logged."""
        route = (method, path.rstrip("/"))
        try:
            data = json.loads(body) if body.strip() else {}
            if route == ("POST", "/_fake/reset"):
                self.reset()
                return 200, {"ok": True}
            if route == ("POST", "/_fake/customers"):
                return 200, self.add_customer(**_json_object(data))
            if route == ("GET", "/_fake/customers"):
                return 200, list(self.customers.values())
            if route == ("POST", "/_fake/seed"):
                return 200, self.seed(**_json_object(data))
            if route == ("GET", "/_fake/requests"):
                return 200, [record.to_dict() for record in self.requests]
            if route == ("DELETE", "/_fake/requests"):
                self.clear_requests()
                return 200, {"ok": True}
            if route == ("POST", "/_fake/faults"):
                self.inject(**_json_object(data))
                return 200, {"ok": True}
            sources = re.fullmatch(r"/_fake/customers/([^/]+)/sources", route[1])
            if method == "POST" and sources:
                return 200, self.attach_source(unquote(sources.group(1)), **_json_object(data))
        except KeyError as exc:
            return 404, {"error": {"type": "invalid_request_error", "message": f"Not found: {exc}"}}
        except (TypeError, ValueError) as exc:
            return 400, {"error": {"type": "invalid_request_error", "message": str(exc)}}
        return 404, {"error": {"type": "invalid_request_error", "message": f"Unknown control route {method} {path}"}}


def _json_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data
