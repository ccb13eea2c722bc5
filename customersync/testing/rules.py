"""Stripe's rules for customers: the customer object, parameter validation, update semantics, errors.

Stripe's update semantics live here: ``''`` unsets a field (or is refused for
one that cannot be unset), ``metadata[key]=`` deletes that one key, an address
is replaced as a whole object, ``invoice_settings`` sub-fields are updated
independently, and a token attaches a new default source. A ``Customer`` is
the public object plus the state Stripe keeps beside it (sources, the tax IP
address, cash balance settings).

Errors are Stripe-shaped (``FakeStripeAPIError``) and name the bad ``param``
as Stripe does, in bracket syntax for nested params (``shipping[name]``,
``metadata[key]``).

Deliberately separate from the app's ``customersync.core.params``: the fake is the
independent check on the app's own validation, so it must not share it.

Public names: ``FakeStripeAPIError``, ``invalid``, ``no_such_customer``,
``Customer``, ``new_customer``, ``random_id``, ``CUSTOMER_FIELDS``,
``apply_params``, ``normalize_field``, ``expansions``, ``reject_unknown_params``,
``string_param``, ``INTEGER``.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import secrets
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class FakeStripeAPIError(Exception):
    """An API error, answered as ``{"error": {type, code, message, param}}``.

    Not the app's ``customersync.exceptions.StripeError``: that is what a client
    raises on reading such an answer; this is what the fake raises to give one.
    """

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


def invalid(message: str, param: str | None, code: str | None = None) -> FakeStripeAPIError:
    return FakeStripeAPIError(400, message, code=code, param=param)


def _unknown_param(param: str) -> FakeStripeAPIError:
    return invalid(f"Received unknown parameter: {param}", param, "parameter_unknown")


def _missing_param(param: str, reported_as: str | None = None) -> FakeStripeAPIError:
    return invalid(f"Missing required param: {param}.", reported_as or param, "parameter_missing")


def _cannot_unset(param: str) -> FakeStripeAPIError:
    # Stripe's answer to '' on a parameter that is not emptyable.
    return invalid(
        f"You passed an empty string for '{param}'. We assume empty values are an "
        f"attempt to unset a parameter; however '{param}' cannot be unset. You should "
        f"remove '{param}' from your request or supply a non-empty value.",
        param,
        "parameter_invalid_empty",
    )


def no_such_customer(customer_id: str, param: str = "id") -> FakeStripeAPIError:
    # 404 for the customer in the path; 400 when a parameter (a list cursor) names it.
    return FakeStripeAPIError(
        404 if param == "id" else 400,
        f"No such customer: '{customer_id}'",
        code="resource_missing",
        param=param,
    )


_ALNUM = string.ascii_letters + string.digits


_ADDRESS_KEYS = ("city", "country", "line1", "line2", "postal_code", "state")


def random_id(prefix: str, length: int = 14) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def new_customer(customer_id: str, created: int, invoice_prefix: str | None = None) -> dict[str, Any]:
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


CUSTOMER_FIELDS = frozenset(new_customer("cus_x", 0, "X"))


@dataclass
class Customer:
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


_INVOICE_PREFIX = re.compile(r"[A-Z0-9]{1,12}")


INTEGER = re.compile(r"[+-]?\d+")


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


def string_param(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise invalid(f"Invalid string: {json.dumps(value)}", param)
    return value


def _optional_string(value: Any, param: str) -> str | None:
    """A string sub-field: absent or ``''`` is null."""
    if value is None:
        return None
    return string_param(value, param) or None


def _hash(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid("Invalid hash", param)
    return value


def _array(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise invalid("Invalid array", param)
    return value


def _reject_unknown(value: Mapping[str, Any], allowed: Iterable[str], param: str) -> None:
    for key in value:
        if key not in allowed:
            raise _unknown_param(f"{param}[{key}]")


def _enum(value: Any, allowed: tuple[str, ...], param: str, *, emptyable: bool = False) -> str | None:
    text = string_param(value, param)
    if text == "":
        if emptyable:
            return None
        raise _cannot_unset(param)
    if text not in allowed:
        raise invalid(f"Invalid {param}: must be one of {', '.join(allowed)}", param)
    return text


def _address(value: Any, param: str) -> dict[str, str | None]:
    """A whole address: keys not sent become null."""
    fields = _hash(value, param)
    _reject_unknown(fields, _ADDRESS_KEYS, param)
    return {key: _optional_string(fields.get(key), f"{param}[{key}]") for key in _ADDRESS_KEYS}


def expansions(params: Mapping[str, Any]) -> list[str]:
    if "expand" not in params:
        return []
    items = _array(params["expand"], "expand")
    return [string_param(item, f"expand[{index}]") for index, item in enumerate(items)]


def reject_unknown_params(params: Mapping[str, Any], allowed: Iterable[str]) -> None:
    for name in params:
        if name not in allowed:
            raise _unknown_param(name)


# Setters for create/update params: (customer, param name, value) -> None.
# They run on a scratch copy, so raising half-way leaves the stored customer intact.
_Setter = Callable[[Customer, str, Any], None]


def _set_plain_string(customer: Customer, name: str, value: Any) -> None:
    text = string_param(value, name)
    if name == "email" and len(text) > 512:
        raise invalid("Invalid email: must be at most 512 characters", name)
    if name == "invoice_prefix" and text and not _INVOICE_PREFIX.fullmatch(text):
        raise invalid("Invalid invoice_prefix: must be 1 to 12 uppercase letters or digits", name)
    if name in ("business_name", "individual_name") and len(text) > 150:
        raise invalid(f"Invalid {name}: must be at most 150 characters", name)
    customer.obj[name] = text or None


def _set_integer(customer: Customer, name: str, value: Any) -> None:
    if value == "":
        raise _cannot_unset(name)
    if not isinstance(value, str) or not INTEGER.fullmatch(value):
        shown = value if isinstance(value, str) else json.dumps(value)
        raise invalid(f"Invalid integer: {shown}", name, "parameter_invalid_integer")
    number = int(value)
    if name == "next_invoice_sequence" and number < 1:
        raise invalid("Invalid next_invoice_sequence: must be at least 1", name)
    customer.obj[name] = number


def _set_metadata(customer: Customer, name: str, value: Any) -> None:
    if value == "":
        customer.obj["metadata"] = {}
        return
    metadata = customer.obj["metadata"]
    for key, item in _hash(value, name).items():
        param = f"metadata[{key}]"
        if not key:
            raise invalid("Metadata keys must not be empty", "metadata")
        if len(key) > 40:
            raise invalid(f"Metadata keys can be at most 40 characters long ({key!r})", param)
        if "[" in key or "]" in key:
            raise invalid(f"Metadata keys may not contain '[' or ']' ({key!r})", param)
        item = string_param(item, param)
        if len(item) > 500:
            raise invalid("Metadata values can be at most 500 characters long", param)
        if item:
            metadata[key] = item
        else:
            metadata.pop(key, None)  # metadata[k]= deletes the key
    if len(metadata) > 50:
        raise invalid("Metadata can have at most 50 keys", "metadata")


def _set_address(customer: Customer, name: str, value: Any) -> None:
    customer.obj["address"] = None if value == "" else _address(value, name)


def _set_shipping(customer: Customer, name: str, value: Any) -> None:
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
        "name": string_param(fields["name"], "shipping[name]"),
        "phone": _optional_string(fields.get("phone"), "shipping[phone]"),
        "tracking_number": None,
    }


def _custom_fields(value: Any, param: str) -> list[dict[str, str]] | None:
    if value == "":
        return None
    entries = _array(value, param)
    if len(entries) > 4:
        raise invalid("You can specify at most 4 invoice custom fields", param)
    result = []
    for index, entry in enumerate(entries):
        entry_param = f"{param}[{index}]"
        entry = _hash(entry, entry_param)
        _reject_unknown(entry, ("name", "value"), entry_param)
        for key, limit in (("name", 40), ("value", 140)):
            text = entry.get(key)
            if not text:
                raise _missing_param(f"{entry_param}[{key}]", reported_as=param)
            if len(string_param(text, param)) > limit:
                raise invalid(f"Invalid {entry_param}[{key}]: must be at most {limit} characters", param)
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


def _set_invoice_settings(customer: Customer, name: str, value: Any) -> None:
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


def _set_preferred_locales(customer: Customer, name: str, value: Any) -> None:
    if value == "":
        raise _cannot_unset(name)
    items = _array(value, name)
    customer.obj[name] = [string_param(item, f"{name}[{index}]") for index, item in enumerate(items)]


def _set_tax_exempt(customer: Customer, name: str, value: Any) -> None:
    # Stripe reports an unset tax_exempt as "none".
    customer.obj[name] = _enum(value, _TAX_EXEMPT, name, emptyable=True) or "none"


def _set_tax(customer: Customer, name: str, value: Any) -> None:
    if value == "":
        raise _cannot_unset(name)
    fields = _hash(value, name)
    _reject_unknown(fields, ("ip_address", "validate_location"), name)
    if "validate_location" in fields:  # a request option: validated, never stored
        _enum(fields["validate_location"], _VALIDATE_LOCATION, "tax[validate_location]")
    if "ip_address" in fields:
        address = string_param(fields["ip_address"], "tax[ip_address]")
        if address:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise invalid(f"Invalid IP address: {address}", "tax[ip_address]") from None
        customer.tax_ip_address = address or None


def _set_cash_balance(customer: Customer, name: str, value: Any) -> None:
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


def _attach_token(customer: Customer, name: str, value: Any) -> None:
    token = string_param(value, name)
    if token == "":
        raise _cannot_unset(name)
    prefix = next((p for p in _TOKEN_KINDS if token.startswith(p) and len(token) > len(p)), None)
    if prefix is None:
        raise invalid(f"No such token: '{token}'", name, "resource_missing")
    id_prefix, kind = _TOKEN_KINDS[prefix]
    source_id = token if kind == "source" else random_id(id_prefix)
    # Stripe: the new source becomes the default and the old default is deleted.
    old_default = customer.obj["default_source"]
    if old_default is not None:
        customer.sources.pop(old_default, None)
    customer.attach(source_id, kind)
    customer.obj["default_source"] = source_id


def _set_default_source(customer: Customer, name: str, value: Any) -> None:
    source_id = string_param(value, name)
    if source_id == "":
        raise _cannot_unset(name)
    if source_id not in customer.sources:
        raise invalid(f"No such source: '{source_id}'", name, "resource_missing")
    customer.obj["default_source"] = source_id


def _check_expand(customer: Customer, name: str, value: Any) -> None:
    expansions({name: value})  # applied when rendering the response


def _check_validate(customer: Customer, name: str, value: Any) -> None:
    if value not in ("true", "false"):
        shown = value if isinstance(value, str) else json.dumps(value)
        raise invalid(f"Invalid boolean: {shown}", name)


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


def apply_params(customer: Customer, params: Mapping[str, Any]) -> None:
    """Apply create/update params to ``customer`` (a scratch copy)."""
    for name in params:
        if name not in _SETTERS:
            raise _unknown_param(name)
    # Tokens first, so a default_source in the same request may name the source they create.
    for name, value in sorted(params.items(), key=lambda item: item[0] not in _TOKEN_PARAMS):
        _SETTERS[name](customer, name, value)


def normalize_field(name: str, value: Any) -> Any:
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
        settings = new_customer("cus_x", 0, "X")["invoice_settings"]
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
