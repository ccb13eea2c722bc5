"""The admin's customer form: a proper field for every parameter, built from the table.

Each parameter with a ``section`` in ``params.TABLE`` gets a form field: the
model's own for a top-level state field, otherwise one made from the row (a
choice for an enum, a number for an integer, text for the rest) and stored
where the parameter lives (``invoice_settings`` for its sub-parameters,
``pending_once`` for write-once values and options). The few that need a
widget of their own are in ``SPECIAL``. Errors from the model's validation,
keyed by Stripe param names, land on the field they concern; so does
Stripe's own error after a failed push.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms.utils import ErrorDict, ErrorList
from django.utils.translation import gettext_lazy as _

from ..core.params import TABLE, Param, Role, get_path, set_path
from ..models import Customer, SyncStatus
from .fields import AddressField, CustomFieldsField, LocalesField, MetadataField, ShippingField, enum_choices

ABSENT = object()  # a write-once value or option the form does not send


@dataclass
class Spec:
    """How a parameter is edited: its form fields, the value shown in them, and the value they give."""

    make: Callable[[], dict[str, forms.Field]]
    # The stored value -> initial values of the fields; spec() fills in the default (one field shows it).
    shown: Callable[[Any], dict[str, Any]] | None = None
    # The cleaned data -> the value to store; spec() fills in the default (the field's value, None if empty).
    given: Callable[[dict[str, Any]], Any] | None = None
    # Sub-parameter -> the form field that shows errors about it.
    parts: dict[str, str] = field(default_factory=dict)


def _rendering() -> Spec:
    def given(data: dict[str, Any]) -> Any:
        options = {
            "amount_tax_display": data.get("invoice_amount_tax_display") or None,
            "template": data.get("invoice_template") or None,
        }
        return options if any(options.values()) else None

    return Spec(
        make=lambda: {
            "invoice_amount_tax_display": forms.ChoiceField(
                label=_("Amount tax display"),
                required=False,
                choices=enum_choices("invoice_settings[rendering_options]", "— (Stripe's default)"),
            ),
            "invoice_template": forms.CharField(label=_("Invoice template"), required=False),
        },
        shown=lambda value: {
            "invoice_amount_tax_display": (value or {}).get("amount_tax_display") or "",
            "invoice_template": (value or {}).get("template") or "",
        },
        given=given,
        parts={"template": "invoice_template"},
    )


def _tax_ip_address() -> Spec:
    def given(data: dict[str, Any]) -> Any:
        if data.get("tax_ip_address_clear"):
            return ""
        return data["tax_ip_address"].strip() if data.get("tax_ip_address") else ABSENT

    return Spec(
        make=lambda: {
            "tax_ip_address": forms.CharField(
                label=_("Tax IP address"),
                required=False,
                help_text=_("Sent with the next push to locate the customer for tax; Stripe does not return it."),
            ),
            "tax_ip_address_clear": forms.BooleanField(label=_("Clear the tax IP address"), required=False),
        },
        shown=lambda value: {"tax_ip_address": value or "", "tax_ip_address_clear": value == ""},
        given=given,
    )


# Parameters whose editing needs more than one plain field. Top-level state
# fields with a widget of their own are declared on the form class below.
SPECIAL: dict[str, Callable[[], Spec]] = {
    "invoice_settings[rendering_options]": _rendering,
    "tax[ip_address]": _tax_ip_address,
    "invoice_settings[custom_fields]": lambda: Spec(
        make=lambda: {
            "invoice_custom_fields": CustomFieldsField(
                label=_("Invoice custom fields"),
                required=False,
                help_text=_("Up to 4; names up to 40 characters, values 140."),
            )
        },
        shown=lambda value: {"invoice_custom_fields": value or []},
    ),
    "invoice_settings[footer]": lambda: Spec(
        make=lambda: {
            "invoice_footer": forms.CharField(
                label=_("Invoice footer"), required=False, widget=forms.Textarea(attrs={"rows": 2})
            )
        }
    ),
}


# What an enum's empty choice means, by role.
_BLANK_CHOICE = {Role.STATE: "—", Role.WRITE_ONCE: "— (leave as is)", Role.OPTION: "— (don't ask)"}


def _plain(param: Param) -> Spec:
    """One field made from the row: a choice for an enum, a number for an integer, else text."""
    name = param.form_field or param.name
    label = param.label or name.replace("_", " ").capitalize()
    options: dict[str, Any] = {"label": label, "required": False, "help_text": param.help}
    if param.enum:
        blank = _BLANK_CHOICE[param.role]
        return Spec(make=lambda: {name: forms.ChoiceField(choices=enum_choices(param.name, blank), **options)})
    if param.type is int:
        return Spec(make=lambda: {name: forms.IntegerField(**options)})
    if param.type is bool:
        return Spec(make=lambda: {name: forms.BooleanField(**options)})
    return Spec(make=lambda: {name: forms.CharField(**options)})


def spec(param: Param) -> Spec:
    """How the form edits ``param`` (a parameter with a section)."""
    made = SPECIAL[param.name]() if param.name in SPECIAL else _plain(param)
    name = param.form_field or param.name
    if made.shown is None:
        made.shown = lambda value: {name: "" if value is None else value}
    if made.given is None:
        made.given = lambda data: data.get(name) if data.get(name) not in ("", None, []) else None
    return made


def model_params() -> list[Param]:
    """Parameters edited through a model field of their own (top-level state)."""
    return [p for p in TABLE.params if p.section and p.role is Role.STATE and len(p.path) == 1]


def extra_params() -> list[Param]:
    """Parameters edited through form fields the form makes: sub-parameters and write-once values."""
    return [p for p in TABLE.params if p.section and not (p.role is Role.STATE and len(p.path) == 1)]


def form_fields(param: Param) -> list[str]:
    """The names of the form fields that edit ``param``, in order."""
    if param in model_params():
        return [param.name]
    return list(spec(param).make())


def field_for_param(param: str | None, fields: dict[str, Any]) -> str | None:
    """The form field that shows an error about ``param``; None for the whole form."""
    if not param:
        return None
    for row in sorted(TABLE.params, key=lambda p: -len(p.name)):
        if row.section and (param == row.name or param.startswith(row.name + "[")):
            rest = param.removeprefix(row.name).strip("[]").split("][")[0]
            return spec(row).parts.get(rest) or form_fields(row)[0]
    for row in TABLE.params:  # a parent of a parameter: cash_balance for its reconciliation mode
        if row.section and row.name.startswith(param + "["):
            return form_fields(row)[0]
    head = param.split("[", 1)[0]
    return head if head in fields else None


class CustomerForm(forms.ModelForm):
    preferred_locales = LocalesField(label=_("Preferred locales"), help_text=_("In order of preference."))
    metadata = MetadataField(
        label=_("Metadata"),
        required=False,
        help_text=_("Up to 50 keys. Clear a key or its value to remove it; fill a blank row to add one."),
    )
    address = AddressField(label=_("Address"))
    shipping = ShippingField(label=_("Shipping"), help_text=_("Needs a recipient name and an address."))

    class Meta:
        model = Customer
        fields = tuple(p.name for p in model_params())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        instance = self.instance
        for param in extra_params():
            made = spec(param)
            self.fields.update(made.make())
            home = instance.pending_once if param.role is not Role.STATE else getattr(instance, param.field)
            path = param.path if param.role is not Role.STATE else param.path[1:]
            for name, value in made.shown(get_path(home or {}, path)).items():
                self.initial.setdefault(name, value)
        locales = self.fields["preferred_locales"]
        extra = [(lo, lo) for lo in (instance.preferred_locales or []) if lo not in dict(locales.fields[0].choices)]
        for locale_field in locales.fields:
            locale_field.choices = list(locale_field.choices) + extra
        for widget in locales.widget.widgets:
            widget.choices = list(widget.choices) + extra
        for param in model_params():
            if param.type is int and param.name in self.fields:
                self.fields[param.name].widget.attrs.setdefault("step", 1)
        if not self.is_bound and instance.sync_status == SyncStatus.FAILED and instance.sync_error:
            # Stripe's (or our) last refusal, on the field it concerns.
            error = instance.sync_error
            target = field_for_param(error.get("param"), self.fields)
            message = error.get("message") or ""
            if error.get("http_status"):
                message = _("Stripe refused the last push: %(message)s") % {"message": message}
            self._errors = ErrorDict({target or "__all__": ErrorList([message])})

    def _post_clean(self) -> None:
        data = self.cleaned_data
        instance = self.instance
        roots: dict[str, dict[str, Any]] = {}
        once: dict[str, Any] = {}
        for param in extra_params():
            value = spec(param).given(data)
            if param.role is Role.STATE:
                root = roots.setdefault(param.field, dict(getattr(instance, param.field) or {}))
                set_path(root, param.path[1:], value)
            elif value is not ABSENT and value is not None:
                set_path(once, param.path, value)
        for name, root in roots.items():
            setattr(instance, name, root)
        for param in TABLE.params:  # request options set from code ride along untouched
            kept = get_path(instance.pending_once, param.path)
            if param.role is not Role.STATE and not param.section and kept is not None:
                set_path(once, param.path, kept)
        instance.pending_once = once
        super()._post_clean()

    def _update_errors(self, errors: ValidationError) -> None:
        """Put errors keyed by Stripe param names on the fields they concern."""
        if hasattr(errors, "error_dict"):
            mapped: dict[str, list] = {}
            for key, messages in errors.error_dict.items():
                target = key if key in self.fields else field_for_param(key, self.fields)
                mapped.setdefault(target or "__all__", []).extend(messages)
            errors = ValidationError(mapped)
        super()._update_errors(errors)
