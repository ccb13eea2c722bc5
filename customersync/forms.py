"""The admin's customer form: a proper field for every parameter, no JSON boxes.

Composite values (address, shipping, metadata rows, custom-field rows,
ordered locales, invoice settings, write-once values) are edited through their
parts and put back together in Stripe's shape. Errors from the model's
validation, keyed by Stripe param names, land on the field they concern; so
does Stripe's own error after a failed push.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms.utils import ErrorDict, ErrorList
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from .models import Customer, SyncStatus
from .params import ADDRESS_FIELDS, BY_NAME
from .validation import CUSTOM_FIELDS_MAX, LOCALES

MAX_LOCALES = 5
_ADDRESS_LABELS = {
    "line1": _("Address line 1"),
    "line2": _("Address line 2"),
    "city": _("City"),
    "state": _("State"),
    "postal_code": _("Postal code"),
    "country": _("Country (ISO code)"),
}
_ADDRESS_ORDER = ("line1", "line2", "city", "state", "postal_code", "country")


def _choices(name: str, blank: str) -> list[tuple[str, str]]:
    return [("", blank)] + [(value, value) for value in BY_NAME[name].enum or ()]


class RowsWidget(forms.Widget):
    """Rows of two text inputs (``<name>_<i>_<a>``, ``<name>_<i>_<b>``); value: list of pairs."""

    def __init__(self, columns: tuple[str, str], labels: tuple[str, str], extra: int, max_rows: int | None = None):
        super().__init__()
        self.columns, self.labels, self.extra, self.max_rows = columns, labels, extra, max_rows

    def render(self, name: str, value: Any, attrs: dict | None = None, renderer: Any = None) -> str:
        rows = list(value or [])
        total = len(rows) + self.extra
        if self.max_rows is not None:
            total = min(max(total, len(rows)), self.max_rows)
        rows += [("", "")] * (total - len(rows))
        a, b = self.columns
        body = format_html_join(
            "",
            '<tr><td><input type="text" name="{}_{}_{}" value="{}" aria-label="{} {}"></td>'
            '<td><input type="text" name="{}_{}_{}" value="{}" aria-label="{} {}" size="40"></td></tr>',
            (
                (name, i, a, ka or "", self.labels[0], i + 1, name, i, b, vb or "", self.labels[1], i + 1)
                for i, (ka, vb) in enumerate(rows)
            ),
        )
        return format_html(
            '<table class="customersync-rows" id="id_{}"><tr><th>{}</th><th>{}</th></tr>{}</table>',
            name,
            self.labels[0],
            self.labels[1],
            body,
        )

    def value_from_datadict(self, data: Any, files: Any, name: str) -> list[tuple[str, str]]:
        a, b = self.columns
        rows, i = [], 0
        while f"{name}_{i}_{a}" in data or f"{name}_{i}_{b}" in data:
            rows.append(((data.get(f"{name}_{i}_{a}") or "").strip(), data.get(f"{name}_{i}_{b}") or ""))
            i += 1
        return rows

    def value_omitted_from_data(self, data: Any, files: Any, name: str) -> bool:
        return f"{name}_0_{self.columns[0]}" not in data


class MetadataField(forms.Field):
    """Key/value rows: a row with a key and a value sets it; clearing either removes it."""

    widget = RowsWidget(("key", "value"), (_("key"), _("value")), extra=3)

    def prepare_value(self, value: Any) -> Any:
        return list(value.items()) if isinstance(value, dict) else value

    def to_python(self, value: Any) -> dict[str, str]:
        return {key: val for key, val in (value or []) if key and val != ""}


class CustomFieldsField(forms.Field):
    """Up to four name/value rows, in order; a row with neither is skipped."""

    widget = RowsWidget(("name", "value"), (_("name"), _("value")), extra=CUSTOM_FIELDS_MAX, max_rows=CUSTOM_FIELDS_MAX)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return [(item.get("name") or "", item.get("value") or "") for item in value]
        return value

    def to_python(self, value: Any) -> list[dict[str, str]]:
        return [{"name": name, "value": val} for name, val in (value or []) if name or val]


class PartsWidget(forms.MultiWidget):
    """Text inputs named ``<name>_<part>``, with the part's label as placeholder."""

    def __init__(self, parts: dict[str, str], choices: dict[str, list] | None = None):
        widgets = {
            part: forms.Select(choices=(choices or {})[part])
            if part in (choices or {})
            else forms.TextInput(attrs={"placeholder": label, "aria-label": label})
            for part, label in parts.items()
        }
        self.parts = list(parts)
        super().__init__(widgets)

    def decompress(self, value: Any) -> list[Any]:
        return [(value or {}).get(part) or "" for part in self.parts]

    def render(self, name: str, value: Any, attrs: dict | None = None, renderer: Any = None) -> str:
        return format_html('<div class="customersync-parts">{}</div>', super().render(name, value, attrs, renderer))


class AddressField(forms.MultiValueField):
    """The six address parts; all blank means no address."""

    def __init__(self, **kwargs: Any) -> None:
        fields = [forms.CharField(required=False, max_length=200) for _ in _ADDRESS_ORDER]
        kwargs.setdefault("widget", PartsWidget({p: _ADDRESS_LABELS[p] for p in _ADDRESS_ORDER}))
        super().__init__(fields, require_all_fields=False, required=False, **kwargs)

    def compress(self, values: list[str]) -> dict[str, str | None] | None:
        parts = dict(zip(_ADDRESS_ORDER, values or [""] * 6, strict=True))
        if not any(parts.values()):
            return None
        return {part: parts[part] or None for part in ADDRESS_FIELDS}


class ShippingWidget(PartsWidget):
    def decompress(self, value: Any) -> list[Any]:
        value = value or {}
        address = value.get("address") or {}
        return [value.get("name") or "", value.get("phone") or ""] + [address.get(p) or "" for p in _ADDRESS_ORDER]


class ShippingField(forms.MultiValueField):
    """Recipient name and phone, and the address they ship to; all blank means no shipping."""

    def __init__(self, **kwargs: Any) -> None:
        parts = {"name": _("Recipient name"), "phone": _("Phone"), **{p: _ADDRESS_LABELS[p] for p in _ADDRESS_ORDER}}
        fields = [forms.CharField(required=False, max_length=200) for _ in parts]
        kwargs.setdefault("widget", ShippingWidget(parts))
        super().__init__(fields, require_all_fields=False, required=False, **kwargs)

    def compress(self, values: list[str]) -> dict[str, Any] | None:
        values = values or [""] * 8
        if not any(values):
            return None
        address = dict(zip(_ADDRESS_ORDER, values[2:], strict=True))
        return {
            "name": values[0] or None,
            "phone": values[1] or None,
            "address": {part: address[part] or None for part in ADDRESS_FIELDS},
        }


class LocalesField(forms.MultiValueField):
    """Up to five locales, in order of preference."""

    def __init__(self, **kwargs: Any) -> None:
        choices = [("", "—")] + [(lo, lo) for lo in LOCALES]
        fields = [forms.ChoiceField(choices=choices, required=False) for _ in range(MAX_LOCALES)]
        widget = PartsWidget(
            {str(i): str(i) for i in range(MAX_LOCALES)}, {str(i): choices for i in range(MAX_LOCALES)}
        )
        widget.decompress = lambda value: list(value or []) + [""] * (MAX_LOCALES - len(value or []))
        super().__init__(fields, require_all_fields=False, required=False, widget=widget, **kwargs)

    def compress(self, values: list[str]) -> list[str]:
        return list(dict.fromkeys(v for v in (values or []) if v))


# Where an error about a Stripe param is shown: param (or its prefix) -> form field.
_PARAM_FIELDS = (
    ("invoice_settings[custom_fields]", "invoice_custom_fields"),
    ("invoice_settings[default_payment_method]", "invoice_default_payment_method"),
    ("invoice_settings[footer]", "invoice_footer"),
    ("invoice_settings[rendering_options][template]", "invoice_template"),
    ("invoice_settings[rendering_options]", "invoice_amount_tax_display"),
    ("tax[ip_address]", "tax_ip_address"),
    ("tax[validate_location]", "tax_validate_location"),
    ("cash_balance", "cash_balance_reconciliation_mode"),
    ("metadata", "metadata"),
    ("address", "address"),
    ("shipping", "shipping"),
    ("preferred_locales", "preferred_locales"),
)

WRITE_ONCE_FIELDS = ("source", "card", "bank_account", "default_card", "default_bank_account", "default_alipay_account")


def field_for_param(param: str | None, fields: dict[str, Any]) -> str | None:
    """The form field that shows an error about ``param``; None for the whole form."""
    if not param:
        return None
    for prefix, field in _PARAM_FIELDS:
        if param == prefix or param.startswith(prefix + "["):
            return field
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
    shipping = ShippingField(label=_("Shipping"), help_text=_("Needs a recipient name and an address line."))

    invoice_footer = forms.CharField(
        label=_("Invoice footer"), required=False, widget=forms.Textarea(attrs={"rows": 2})
    )
    invoice_default_payment_method = forms.CharField(
        label=_("Default payment method"), required=False, help_text=_("A PaymentMethod id (pm_...).")
    )
    invoice_custom_fields = CustomFieldsField(
        label=_("Invoice custom fields"), required=False, help_text=_("Up to 4; names up to 40 characters, values 140.")
    )
    invoice_amount_tax_display = forms.ChoiceField(
        label=_("Amount tax display"),
        required=False,
        choices=_choices("invoice_settings[rendering_options]", "— (Stripe's default)"),
    )
    invoice_template = forms.CharField(label=_("Invoice template"), required=False)

    tax_ip_address = forms.CharField(
        label=_("Tax IP address"),
        required=False,
        help_text=_("Sent with the next push to locate the customer for tax; Stripe does not return it."),
    )
    tax_ip_address_clear = forms.BooleanField(label=_("Clear the tax IP address"), required=False)
    tax_validate_location = forms.ChoiceField(
        label=_("Validate location"), required=False, choices=_choices("tax[validate_location]", "— (don't ask)")
    )
    cash_balance_reconciliation_mode = forms.ChoiceField(
        label=_("Cash balance reconciliation"),
        required=False,
        choices=_choices("cash_balance[settings][reconciliation_mode]", "— (leave as is)"),
    )
    source = forms.CharField(label=_("New source (token)"), required=False, help_text=_("tok_..., sent once."))
    card = forms.CharField(label=_("New card (token)"), required=False, help_text=_("Legacy; tok_..., sent once."))
    bank_account = forms.CharField(
        label=_("New bank account (token)"), required=False, help_text=_("btok_..., sent once.")
    )
    default_card = forms.CharField(label=_("Default card (legacy)"), required=False)
    default_bank_account = forms.CharField(label=_("Default bank account (legacy)"), required=False)
    default_alipay_account = forms.CharField(label=_("Default Alipay account (legacy)"), required=False)

    class Meta:
        model = Customer
        fields = (
            "name", "email", "phone", "description", "business_name", "individual_name", "preferred_locales",
            "metadata", "balance", "invoice_prefix", "next_invoice_sequence", "tax_exempt", "address", "shipping",
            "default_source",
        )  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        instance = self.instance
        settings = instance.invoice_settings or {}
        rendering = settings.get("rendering_options") or {}
        once = instance.pending_once or {}
        initial = {
            "invoice_footer": settings.get("footer") or "",
            "invoice_default_payment_method": settings.get("default_payment_method") or "",
            "invoice_custom_fields": settings.get("custom_fields") or [],
            "invoice_amount_tax_display": rendering.get("amount_tax_display") or "",
            "invoice_template": rendering.get("template") or "",
            "tax_ip_address": (once.get("tax") or {}).get("ip_address") or "",
            "tax_ip_address_clear": (once.get("tax") or {}).get("ip_address") == "",
            "tax_validate_location": (once.get("tax") or {}).get("validate_location") or "",
            "cash_balance_reconciliation_mode": ((once.get("cash_balance") or {}).get("settings") or {}).get(
                "reconciliation_mode"
            )
            or "",
            **{name: once.get(name) or "" for name in WRITE_ONCE_FIELDS},
        }
        for name, value in initial.items():
            self.initial.setdefault(name, value)
        locales = self.fields["preferred_locales"]
        extra = [(lo, lo) for lo in (instance.preferred_locales or []) if lo not in LOCALES]
        for field in locales.fields:
            field.choices = list(field.choices) + extra
        for widget in locales.widget.widgets:
            widget.choices = list(widget.choices) + extra
        for name in ("balance", "next_invoice_sequence"):
            if name in self.fields:
                self.fields[name].widget.attrs.setdefault("step", 1)
        if not self.is_bound and instance.sync_status == SyncStatus.FAILED and instance.sync_error:
            # Stripe's (or our) last refusal, on the field it concerns.
            error = instance.sync_error
            field = field_for_param(error.get("param"), self.fields)
            message = error.get("message") or ""
            if error.get("http_status"):
                message = _("Stripe refused the last push: %(message)s") % {"message": message}
            self._errors = ErrorDict({field or "__all__": ErrorList([message])})

    def _post_clean(self) -> None:
        data = self.cleaned_data
        instance = self.instance
        rendering = {
            "amount_tax_display": data.get("invoice_amount_tax_display") or None,
            "template": data.get("invoice_template") or None,
        }
        instance.invoice_settings = {
            **(instance.invoice_settings or {}),
            "custom_fields": data.get("invoice_custom_fields") or None,
            "default_payment_method": data.get("invoice_default_payment_method") or None,
            "footer": data.get("invoice_footer") or None,
            "rendering_options": rendering if any(rendering.values()) else None,
        }
        once: dict[str, Any] = {name: data[name] for name in WRITE_ONCE_FIELDS if data.get(name)}
        tax: dict[str, str] = {}
        if data.get("tax_ip_address_clear"):
            tax["ip_address"] = ""
        elif data.get("tax_ip_address"):
            tax["ip_address"] = data["tax_ip_address"].strip()
        if data.get("tax_validate_location"):
            tax["validate_location"] = data["tax_validate_location"]
        if tax:
            once["tax"] = tax
        if data.get("cash_balance_reconciliation_mode"):
            once["cash_balance"] = {"settings": {"reconciliation_mode": data["cash_balance_reconciliation_mode"]}}
        for key in ("expand", "validate"):  # request options set from code ride along untouched
            if key in (instance.pending_once or {}):
                once[key] = instance.pending_once[key]
        instance.pending_once = once
        super()._post_clean()

    def _update_errors(self, errors: ValidationError) -> None:
        """Put errors keyed by Stripe param names on the fields they concern."""
        if hasattr(errors, "error_dict"):
            mapped: dict[str, list] = {}
            for key, messages in errors.error_dict.items():
                field = key if key in self.fields else field_for_param(key, self.fields)
                mapped.setdefault(field or "__all__", []).extend(messages)
            errors = ValidationError(mapped)
        super()._update_errors(errors)
