"""Stripe's rules for customer values, checked before anything is queued.

``validate(state, once)`` returns ``{param: [message, ...]}`` keyed by Stripe's
bracket names (``email``, ``shipping[name]``, ``metadata[plan]``...), so the
model can refuse a save and the admin form can put each message on the
field it concerns. Messages are written for operators.

The rules are never stricter than Stripe: where this app's own limits are
tighter (a column's length or range), ``values.column_errors`` says so.
``check_edit`` (``Customer.validate_for_stripe``) runs, in order: the types
and keys (``shapes.check``), Stripe's rules on what the edit changes, the
columns, then the diff.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator

from ..core import shapes, snapshot
from ..core.diff import diff
from ..core.merge import norm
from ..core.params import TABLE, get_path, set_path
from ..exceptions import ParamError
from .columns import JUDGED, column_errors

INVOICE_PREFIX = re.compile(r"[A-Z0-9]{1,12}")  # used with fullmatch: "$" would let a trailing newline in
METADATA_MAX_KEYS, METADATA_KEY_MAX, METADATA_VALUE_MAX = 50, 40, 500
CUSTOM_FIELDS_MAX, CUSTOM_FIELD_NAME_MAX, CUSTOM_FIELD_VALUE_MAX = 4, 40, 140
EMAIL_MAX = 512
# Stripe's limits on text the model's columns would hold longer.
TEXT_MAX = {"business_name": 150, "individual_name": 150}
MAX_LOCALES = 5

# The locales Stripe accepts in preferred_locales (its invoice and email languages).
LOCALES: tuple[str, ...] = (
    "ar",
    "bg",
    "cs",
    "da",
    "de",
    "el",
    "en",
    "en-GB",
    "es",
    "es-419",
    "et",
    "fi",
    "fil",
    "fr",
    "fr-CA",
    "he",
    "hr",
    "hu",
    "id",
    "it",
    "ja",
    "ko",
    "lt",
    "lv",
    "ms",
    "mt",
    "nb",
    "nl",
    "pl",
    "pt",
    "pt-BR",
    "ro",
    "ru",
    "sk",
    "sl",
    "sv",
    "th",
    "tr",
    "vi",
    "zh",
    "zh-HK",
    "zh-TW",
)

# A regional variant of one of those languages (en-US, de-CH): Stripe keeps what browsers send.
_REGIONAL = re.compile(r"([a-z]{2,3})-(?:[A-Z]{2}|[0-9]{3})")


def locale_ok(value: str) -> bool:
    """A locale Stripe takes in ``preferred_locales``."""
    regional = _REGIONAL.fullmatch(value)
    return value in LOCALES or bool(regional and regional.group(1) in LOCALES)


_email = EmailValidator()


def _valid_email(value: str) -> bool:
    """Django's syntax rules for each part, without its 320-character cap (Stripe allows 512)."""
    user, at, domain = value.rpartition("@")
    return bool(at and user and _email.user_regex.match(user) and _email.validate_domain_part(domain))


def _blank(value: Any) -> bool:
    return value is None or value == ""


def validate(state: Mapping[str, Any], once: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """Every rule Stripe applies to these values; ``{}`` when all is well."""
    errors: dict[str, list[str]] = defaultdict(list)

    email = state.get("email")
    if not _blank(email):
        if len(email) > EMAIL_MAX:
            errors["email"].append(f"Use at most {EMAIL_MAX} characters (this has {len(email)}).")
        elif not _valid_email(email):
            errors["email"].append("Enter a valid email address, like ann@example.com.")

    for name, limit in TEXT_MAX.items():
        text = state.get(name)
        if isinstance(text, str) and len(text) > limit:
            errors[name].append(f"Use at most {limit} characters (this has {len(text)}).")

    prefix = state.get("invoice_prefix")
    if not _blank(prefix) and not INVOICE_PREFIX.fullmatch(str(prefix)):
        errors["invoice_prefix"].append("Use 1 to 12 uppercase letters or digits, like ACME01.")

    locales = state.get("preferred_locales")
    if isinstance(locales, list):
        if len(locales) > MAX_LOCALES:
            errors["preferred_locales"].append(f"Use at most {MAX_LOCALES} locales (this has {len(locales)}).")
        for locale in locales:
            if isinstance(locale, str) and not locale_ok(locale):
                errors["preferred_locales"].append(
                    f"{locale!r} is not a locale Stripe takes: use one of {', '.join(LOCALES)},"
                    " or a regional variant such as en-US."
                )

    for name in ("balance", "next_invoice_sequence"):
        value = state.get(name)
        if _blank(value):
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            errors[name].append("Enter a whole number.")
        elif name == "next_invoice_sequence" and value < 1:
            errors[name].append("Invoice numbers start at 1.")

    _enum(errors, "tax_exempt", state.get("tax_exempt"))
    tax_display = get_path(state, ("invoice_settings", "rendering_options", "amount_tax_display"))
    _enum(errors, "invoice_settings[rendering_options][amount_tax_display]", tax_display)

    metadata = state.get("metadata")
    if isinstance(metadata, Mapping):
        if len(metadata) > METADATA_MAX_KEYS:
            errors["metadata"].append(f"Use at most {METADATA_MAX_KEYS} keys (this has {len(metadata)}).")
        for key, value in metadata.items():
            param = f"metadata[{key}]"
            if not str(key).strip():
                errors["metadata"].append("A key cannot be empty.")
            elif len(str(key)) > METADATA_KEY_MAX:
                errors[param].append(f"Key {key!r}: use at most {METADATA_KEY_MAX} characters.")
            elif "[" in str(key) or "]" in str(key):
                errors[param].append(f"Key {key!r}: square brackets are not allowed in keys.")
            if not isinstance(value, str):
                errors[param].append(f"Key {key!r}: the value must be text.")
            elif len(value) > METADATA_VALUE_MAX:
                errors[param].append(f"Key {key!r}: use at most {METADATA_VALUE_MAX} characters in the value.")

    custom_fields = get_path(state, ("invoice_settings", "custom_fields"))
    if isinstance(custom_fields, list):
        param = "invoice_settings[custom_fields]"
        if len(custom_fields) > CUSTOM_FIELDS_MAX:
            errors[param].append(f"Use at most {CUSTOM_FIELDS_MAX} custom fields (this has {len(custom_fields)}).")
        for index, item in enumerate(custom_fields, 1):
            name, value = get_path(item, ("name",)), get_path(item, ("value",))
            if _blank(name) or _blank(value):
                errors[param].append(f"Custom field {index} needs both a name and a value.")
                continue
            if len(str(name)) > CUSTOM_FIELD_NAME_MAX:
                errors[param].append(
                    f"Custom field {index}: use at most {CUSTOM_FIELD_NAME_MAX} characters in the name."
                )
            if len(str(value)) > CUSTOM_FIELD_VALUE_MAX:
                errors[param].append(
                    f"Custom field {index}: use at most {CUSTOM_FIELD_VALUE_MAX} characters in the value."
                )

    shipping = state.get("shipping")
    if isinstance(shipping, Mapping) and any(not _blank(v) for v in _leaves(shipping)):
        if _blank(shipping.get("name")):
            errors["shipping[name]"].append("Shipping needs the recipient's name.")
        address = shipping.get("address")
        if not (isinstance(address, Mapping) and any(not _blank(v) for v in _leaves(address))):
            errors["shipping[address]"].append("Shipping needs an address.")  # any part: Stripe requires none

    once = once or {}
    ip = get_path(once, ("tax", "ip_address"))
    if not _blank(ip):
        try:
            ipaddress.ip_address(str(ip))
        except ValueError:
            errors["tax[ip_address]"].append("Enter a valid IPv4 or IPv6 address, like 203.0.113.7.")
    _enum(errors, "tax[validate_location]", get_path(once, ("tax", "validate_location")))
    reconciliation = get_path(once, ("cash_balance", "settings", "reconciliation_mode"))
    _enum(errors, "cash_balance[settings][reconciliation_mode]", reconciliation)
    return dict(errors)


def _enum(errors: dict[str, list[str]], name: str, value: Any) -> None:
    if _blank(value):
        return
    allowed = TABLE.by_name[name].enum if name in TABLE.by_name else None
    if allowed is None and name.startswith("invoice_settings[rendering_options]"):
        allowed = TABLE.by_name["invoice_settings[rendering_options]"].enum
    if allowed and value not in allowed:
        errors[name].append(f"Choose one of: {', '.join(allowed)}.")


def _leaves(data: Mapping[str, Any]) -> list[Any]:
    out: list[Any] = []
    for value in data.values():
        out.extend(_leaves(value) if isinstance(value, Mapping) else [value])
    return out


def check_edit(customer: Any) -> dict[str, Any] | None:
    """``Customer.validate_for_stripe``: raise ``ValidationError`` keyed by Stripe param names,
    or return the pending params computed on the way (None without a Stripe id).

    What passed is remembered on the instance (``snapshot``): when it is checked again, the
    fields it still holds as they were are not (each field's checks and diff depend on that
    field, the confirmed state and ``pending_once`` alone), so saving an instance again, or
    saving what a form's ``clean()`` or an owner's pre_save checked, costs only what changed.
    """
    names = _inputs(type(customer))
    now = snapshot.take(customer, names)
    before = customer.__dict__.pop(_CHECKED, None)
    params = _recheck(customer, before, now) if before is not None else _UNKNOWN
    if params is _UNKNOWN:
        params = _check_all(customer)
    if not customer.pending_once:  # write-once values and options: always checked whole
        customer.__dict__[_CHECKED] = (TABLE.params, now, params)
    return params


# Where ``check_edit`` remembers what passed: (the table, the fields' snapshot, the params).
_CHECKED = "_customersync_checked"
_UNKNOWN: Any = object()
# Changed, these make every other value's verdict change too.
_WHOLE = frozenset({"stripe_data", "stripe_id", "pending_once"})
_input_names: dict[type, tuple[tuple, tuple[str, ...]]] = {}


def _inputs(model: type) -> tuple[str, ...]:
    """The attributes the checks read: the state's fields and those whose column can refuse a value."""
    found = _input_names.get(model)
    if found is None or found[0] is not TABLE.params:
        fields = model._meta.concrete_fields  # type: ignore[attr-defined]
        found = _input_names[model] = (
            TABLE.params,
            tuple(
                f.attname
                for f in fields
                if not f.primary_key and not f.is_relation and (isinstance(f, JUDGED) or f.name in TABLE.state_fields)
            ),
        )
    return found[1]


def _recheck(customer: Any, before: tuple, now: dict[str, Any]) -> Any:
    """The params, checking only the fields changed since ``before`` passed; ``_UNKNOWN`` when
    that cannot say (a whole-state input changed, or a changed field has a problem: the full
    check then reports every problem as it always does)."""
    table, then, params = before
    if table is not TABLE.params or customer.pending_once:
        return _UNKNOWN
    changed = snapshot.changed(then, now)
    if not changed:
        return params
    if _WHOLE.intersection(changed):
        return _UNKNOWN
    state = [name for name in TABLE.state_fields if name in changed]
    if column_errors(customer, changed):
        return _UNKNOWN
    if not state:
        return params
    fields = {name: getattr(customer, name) for name in state}
    if shapes.check(fields, None, customer.stripe_data):
        return _UNKNOWN
    desired: dict[str, Any] = {}
    for param in TABLE.state:
        if param.field in fields:
            set_path(desired, param.path, get_path(fields, param.path))
    if _judged(validate(desired), desired, customer.stripe_data):
        return _UNKNOWN
    if params is None:
        return params
    try:
        fresh = diff(customer.stripe_data or {}, desired, checked=True)
    except ParamError:
        return _UNKNOWN
    # Top-level keys in the table's order, as the full diff has them.
    return {
        name: fresh[name] if name in fields else params[name]
        for name in TABLE.state_fields
        if name in (fresh if name in fields else params)
    }


def _judged(errors: dict[str, list[str]], desired: dict[str, Any], confirmed: Any) -> dict[str, list[str]]:
    """``errors`` about what this edit changes: a value Stripe already holds must never block
    saving another field (write-once values and options are always new, so always judged)."""
    if not errors or not confirmed:
        return errors
    changed = {
        p.field
        for p in TABLE.state
        if p.field in desired and norm(p, get_path(desired, p.path)) != norm(p, get_path(confirmed, p.path))
    }
    return {k: v for k, v in errors.items() if k.split("[", 1)[0] in changed or k.startswith(TABLE.once_roots)}


def _check_all(customer: Any) -> dict[str, Any] | None:
    wrong = refused_values(customer)
    if wrong:
        raise ValidationError(wrong)
    desired = customer.desired_state()
    errors = _judged(validate(desired, customer.pending_once), desired, customer.stripe_data)
    # Whatever Stripe thinks, a value its column cannot hold is never written.
    errors = _joined(errors, column_errors(customer))
    params = None
    if not errors and customer.stripe_id:
        try:
            # The types and keys were checked above (refused_values), on the fields themselves.
            params = diff(customer.stripe_data or {}, desired, customer.pending_once, checked=True)
        except ParamError as err:
            errors = {err.param: [err.message]}
    if errors:
        raise ValidationError(errors)
    return params


def field_errors(customer: Any, names: Any) -> dict[str, list[str]]:
    """What ``check_edit`` reports about the fields ``names`` of a customer without a Stripe id (so
    without a diff, and every error judged), checking those fields alone: an owner save checks the
    values it changes on a scratch customer this way."""
    names = set(names)
    fields = {name: getattr(customer, name) for name in TABLE.state_fields if name in names}
    columns = column_errors(customer, names)
    wrong = shapes.check(fields)
    if wrong:
        return _joined(wrong, columns)
    desired: dict[str, Any] = {}
    for param in TABLE.state:
        if param.field in fields:
            set_path(desired, param.path, get_path(fields, param.path))
    return _joined(validate(desired), columns)


def refused_values(customer: Any) -> dict[str, list[str]]:
    """Values of the wrong type and keys that are no parameter, with the columns' own refusals."""
    wrong = _wrong_types(customer)
    return _joined(wrong, column_errors(customer)) if wrong else {}


def refused_fields(customer: Any) -> set[str]:
    """The model fields holding a value of the wrong type, or one its column cannot hold."""
    names = {f.name for f in customer._meta.concrete_fields}
    heads = {key.split("[", 1)[0] for key in (*_wrong_types(customer), *column_errors(customer))}
    return {head if head in names else "pending_once" for head in heads}


def _wrong_types(customer: Any) -> dict[str, list[str]]:
    fields = {name: getattr(customer, name) for name in TABLE.state_fields}
    return shapes.check(fields, customer.pending_once, customer.stripe_data)


def _joined(first: dict[str, list[str]], more: dict[str, list[str]]) -> dict[str, list[str]]:
    """``first``, and the errors of ``more`` about values it says nothing of (itself or a parent)."""
    out = dict(first)
    for key, messages in more.items():
        if not any(key == named or key.startswith(named + "[") for named in first):
            out[key] = messages
    return out
