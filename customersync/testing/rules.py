"""Parameter rules: validation helpers and the setters for create/update params.

Stripe's update semantics live here: ``''`` unsets a field (or is refused for
one that cannot be unset), ``metadata[key]=`` deletes that one key, an address
is replaced as a whole object, ``invoice_settings`` sub-fields are updated
independently, and a token attaches a new default source.

Deliberately separate from the app's ``customersync.params``: the fake is the
independent check on the app's own validation, so it must not share it.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .customer import _ADDRESS_KEYS, _Customer, _new_customer, _random_id
from .errors import _cannot_unset, _invalid, _missing_param, _unknown_param

_INVOICE_PREFIX = re.compile(r"[A-Z0-9]{1,12}")
_INTEGER = re.compile(r"[+-]?\d+")

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


# --------------------------------------------------------------------------
# Parameter parsing helpers (each raises FakeStripeAPIError naming the bracket param)


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


def _reject_unknown_top(params: Mapping[str, Any], allowed: Iterable[str]) -> None:
    for name in params:
        if name not in allowed:
            raise _unknown_param(name)


# Setters for create/update params: (customer, param name, value) -> None.
# They run on a scratch copy, so raising half-way leaves the stored customer intact.
_Setter = Callable[[_Customer, str, Any], None]


def _set_plain_string(customer: _Customer, name: str, value: Any) -> None:
    text = _string(value, name)
    if name == "email" and len(text) > 512:
        raise _invalid("Invalid email: must be at most 512 characters", name)
    if name == "invoice_prefix" and text and not _INVOICE_PREFIX.fullmatch(text):
        raise _invalid("Invalid invoice_prefix: must be 1 to 12 uppercase letters or digits", name)
    if name in ("business_name", "individual_name") and len(text) > 150:
        raise _invalid(f"Invalid {name}: must be at most 150 characters", name)
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
