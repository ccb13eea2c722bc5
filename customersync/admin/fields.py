"""Form fields for Stripe's composite values, edited through their parts, no JSON boxes.

Address and shipping through their parts, metadata and invoice custom fields
as rows, preferred locales as ordered choices; each puts the value back
together in Stripe's shape.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from ..core.params import ADDRESS_FIELDS, TABLE
from ..models.validation import CUSTOM_FIELDS_MAX, LOCALES, MAX_LOCALES

_ADDRESS_LABELS = {
    "line1": _("Address line 1"),
    "line2": _("Address line 2"),
    "city": _("City"),
    "state": _("State"),
    "postal_code": _("Postal code"),
    "country": _("Country (ISO code)"),
}
_ADDRESS_ORDER = ("line1", "line2", "city", "state", "postal_code", "country")


def enum_choices(name: str, blank: str) -> list[tuple[str, str]]:
    return [("", blank)] + [(value, value) for value in TABLE.by_name[name].enum or ()]


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
