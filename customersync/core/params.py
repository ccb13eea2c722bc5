"""Every parameter of ``POST /v1/customers/{customer}``, in one declarative table.

Pure data, no Django. Everything that needs a list of parameters reads it
from ``TABLE`` at use: the diff and the merge, the model's state, the
validation, redaction (``secret``), the admin form's fields and where its
errors go (``section``, ``form_name``, ``label``) and the admin's fieldsets.
Adding a parameter is one row here (and, for a new top-level state field, a
model field); a widget of its own is one entry in ``forms.py``.

Each parameter has a *shape* (how a change is sent) and a *role*:

- ``STATE``: mirrored on the customer object; sent only when it differs from
  the last state Stripe confirmed.
- ``WRITE_ONCE``: sent once and never mirrored (tokens, legacy default-source
  aliases, values the customer object does not return as such).
- ``OPTION``: a request option, not state: sent only alongside a real change.

Shapes:

- ``SCALAR``: a string, integer or boolean. ``clearable`` says whether it can be
  unset by sending ``''`` (the contract's "emptyable" ones and plain strings).
- ``MAP``: free-form string map (``metadata``): changed keys are sent, removed
  keys are sent as ``metadata[k]=``, untouched keys are not sent.
- ``OBJECT``: sent whole when any part changed; a sub-field that was removed is
  sent as ``''`` so the result is the same whether Stripe merges or replaces.
- ``LIST``: sent whole when it changed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Shape",
    "Role",
    "Param",
    "PARAMS",
    "BY_NAME",
    "STATE_PARAMS",
    "SECRET_ROOTS",
    "SECTIONS",
    "TABLE",
    "Table",
    "ADDRESS_FIELDS",
    "get_path",
    "set_path",
]


class Shape(enum.Enum):
    SCALAR = "scalar"
    MAP = "map"
    OBJECT = "object"
    LIST = "list"


class Role(enum.Enum):
    STATE = "state"
    WRITE_ONCE = "write_once"
    OPTION = "option"


ADDRESS_FIELDS: tuple[str, ...] = ("city", "country", "line1", "line2", "postal_code", "state")


@dataclass(frozen=True)
class Param:
    """One parameter of the update endpoint."""

    path: tuple[str, ...]
    shape: Shape = Shape.SCALAR
    role: Role = Role.STATE
    type: type = str
    clearable: bool = True
    enum: tuple[str, ...] | None = None
    # OBJECT: the sub-fields that are parameters, nested as {name: None | {...}}.
    children: Mapping[str, Any] | None = None
    # LIST of objects: the keys of each item.
    item_keys: tuple[str, ...] | None = None
    # What Stripe reports when the value is unset (tax_exempt reads "none").
    unset_value: Any = None
    # A secret value (a card or bank token): redacted in logs and the sync log.
    secret: bool = False
    # The admin form's section for it (one of SECTIONS); None: set from code only.
    section: str | None = None
    # The form field's name when it is not the path joined by "_" (names in use stay).
    form_name: str | None = None
    # The form field's label ("" : Django's default from the model field or the name).
    label: str = field(default="", compare=False)
    help: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        """The bracket name Stripe uses in errors and bodies: ``invoice_settings[footer]``."""
        head, *rest = self.path
        return head + "".join(f"[{part}]" for part in rest)

    @property
    def field(self) -> str:
        """The top-level key (and model field) this parameter lives under."""
        return self.path[0]

    @property
    def form_field(self) -> str | None:
        """The admin form field that edits it, None when there is none."""
        if self.section is None:
            return None
        return self.form_name or "_".join(self.path)


# The admin form's sections, in order.
SECTIONS: tuple[str, ...] = ("contact", "billing", "tax", "address", "shipping", "payment", "advanced")


_ADDRESS = {name: None for name in ADDRESS_FIELDS}

PARAMS: tuple[Param, ...] = (
    # Contact
    Param(("email",), help="Up to 512 characters.", section="contact"),
    Param(("name",), section="contact"),
    Param(("business_name",), section="contact"),
    Param(("individual_name",), section="contact"),
    Param(("phone",), section="contact"),
    Param(("description",), section="contact"),
    Param(
        ("preferred_locales",),
        Shape.LIST,
        clearable=False,
        help="Ordered by preference. Cannot be emptied: the form encoding has no empty list.",
        section="contact",
    ),
    Param(("metadata",), Shape.MAP, section="contact"),
    # Billing and invoices
    Param(("balance",), type=int, clearable=False, section="billing"),
    Param(("invoice_prefix",), clearable=False, help="1-12 uppercase letters or digits.", section="billing"),
    Param(("next_invoice_sequence",), type=int, clearable=False, section="billing"),
    Param(
        ("invoice_settings", "custom_fields"),
        Shape.LIST,
        item_keys=("name", "value"),
        section="billing",
        form_name="invoice_custom_fields",
        label="Invoice custom fields",
    ),
    Param(
        ("invoice_settings", "default_payment_method"),
        clearable=False,
        section="billing",
        form_name="invoice_default_payment_method",
        label="Default payment method",
        help="A PaymentMethod id (pm_...).",
    ),
    Param(("invoice_settings", "footer"), section="billing", form_name="invoice_footer", label="Invoice footer"),
    Param(
        ("invoice_settings", "rendering_options"),
        Shape.OBJECT,
        children={"amount_tax_display": None, "template": None},
        enum=("exclude_tax", "include_inclusive_tax"),
        help="enum applies to amount_tax_display, which may also be ''.",
        section="billing",
        form_name="invoice_amount_tax_display",
    ),
    # Tax
    Param(("tax_exempt",), enum=("none", "exempt", "reverse"), unset_value="none", section="tax"),
    Param(("tax", "ip_address"), role=Role.WRITE_ONCE, section="tax", label="Tax IP address"),
    Param(
        ("tax", "validate_location"),
        role=Role.OPTION,
        enum=("auto", "deferred", "immediately"),
        section="tax",
        label="Validate location",
    ),
    # Address and shipping
    Param(("address",), Shape.OBJECT, children=_ADDRESS, section="address"),
    Param(
        ("shipping",),
        Shape.OBJECT,
        children={"address": _ADDRESS, "name": None, "phone": None},
        section="shipping",
        help="Needs a recipient name and an address.",
    ),
    # Payment source
    Param(("default_source",), clearable=False, section="payment"),
    Param(
        ("source",),
        role=Role.WRITE_ONCE,
        clearable=False,
        secret=True,
        section="payment",
        label="New source (token)",
        help="tok_..., sent once.",
    ),
    Param(
        ("card",),
        role=Role.WRITE_ONCE,
        clearable=False,
        secret=True,
        section="payment",
        label="New card (token)",
        help="Legacy; tok_..., sent once.",
    ),
    Param(
        ("bank_account",),
        role=Role.WRITE_ONCE,
        clearable=False,
        secret=True,
        section="payment",
        label="New bank account (token)",
        help="btok_..., sent once.",
    ),
    Param(("default_card",), role=Role.WRITE_ONCE, clearable=False, section="payment", label="Default card (legacy)"),
    Param(
        ("default_bank_account",),
        role=Role.WRITE_ONCE,
        clearable=False,
        section="payment",
        label="Default bank account (legacy)",
    ),
    Param(
        ("default_alipay_account",),
        role=Role.WRITE_ONCE,
        clearable=False,
        section="payment",
        label="Default Alipay account (legacy)",
    ),
    # Advanced
    Param(
        ("cash_balance", "settings", "reconciliation_mode"),
        role=Role.WRITE_ONCE,
        clearable=False,
        enum=("automatic", "manual", "merchant_default"),
        section="advanced",
        form_name="cash_balance_reconciliation_mode",
        label="Cash balance reconciliation",
    ),
    Param(("expand",), Shape.LIST, role=Role.OPTION),
    Param(("validate",), role=Role.OPTION, type=bool),
)


class Table:
    """The table and the views every consumer reads at use (so a row added in a test counts everywhere)."""

    def __init__(self, rows: tuple[Param, ...]) -> None:
        self._load(rows)

    def _load(self, rows: tuple[Param, ...]) -> None:
        self.params = rows
        self.by_name: dict[str, Param] = {p.name: p for p in rows}
        self.state: tuple[Param, ...] = tuple(p for p in rows if p.role is Role.STATE)
        # Top-level keys of the updatable state: the model fields that hold it.
        self.state_fields: tuple[str, ...] = tuple(dict.fromkeys(p.field for p in self.state))
        # Top-level names whose values are never logged as they are.
        self.secret_roots: frozenset[str] = frozenset(p.field for p in rows if p.secret)
        # Error-key prefixes of nested write-once values and options: always new, so always judged.
        self.once_roots: tuple[str, ...] = tuple(
            dict.fromkeys(f"{p.field}[" for p in rows if p.role is not Role.STATE and len(p.path) > 1)
        )

    @contextmanager
    def extended(self, *rows: Param) -> Iterator[Table]:
        """The table with ``rows`` added, for the length of a ``with`` (tests)."""
        saved = self.params
        self._load(saved + rows)
        try:
            yield self
        finally:
            self._load(saved)


TABLE = Table(PARAMS)
# Views of the table as shipped, for code that reads it once.
BY_NAME: dict[str, Param] = TABLE.by_name
STATE_PARAMS: tuple[Param, ...] = TABLE.state
SECRET_ROOTS: frozenset[str] = TABLE.secret_roots


def get_path(data: Mapping[str, Any] | None, path: tuple[str, ...]) -> Any:
    """``data[a][b]...`` or ``None`` when any level is missing or not a mapping."""
    node: Any = data
    for part in path:
        if type(node) is not dict and not isinstance(node, Mapping):  # a dict first: the ABC check is slow
            return None
        node = node.get(part)
    return node


def set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set ``data[a][b]... = value``, creating intermediate dicts in order."""
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
