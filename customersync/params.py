"""Every parameter of ``POST /v1/customers/{customer}``, in one declarative table.

Pure data, no Django. The diff (``diff.py``), the model, the admin and the
tests all read this table; nothing else lists parameters.

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
from collections.abc import Mapping
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


_ADDRESS = {name: None for name in ADDRESS_FIELDS}

PARAMS: tuple[Param, ...] = (
    # Contact
    Param(("email",), help="Up to 512 characters."),
    Param(("name",)),
    Param(("business_name",)),
    Param(("individual_name",)),
    Param(("phone",)),
    Param(("description",)),
    Param(
        ("preferred_locales",),
        Shape.LIST,
        clearable=False,
        help="Ordered by preference. Cannot be emptied: the form encoding has no empty list.",
    ),
    Param(("metadata",), Shape.MAP),
    # Billing and invoices
    Param(("balance",), type=int, clearable=False),
    Param(("invoice_prefix",), clearable=False, help="3-12 uppercase letters or digits."),
    Param(("next_invoice_sequence",), type=int, clearable=False),
    Param(("invoice_settings", "custom_fields"), Shape.LIST, item_keys=("name", "value")),
    Param(("invoice_settings", "default_payment_method"), clearable=False),
    Param(("invoice_settings", "footer")),
    Param(
        ("invoice_settings", "rendering_options"),
        Shape.OBJECT,
        children={"amount_tax_display": None, "template": None},
        enum=("exclude_tax", "include_inclusive_tax"),
        help="enum applies to amount_tax_display, which may also be ''.",
    ),
    # Tax
    Param(("tax_exempt",), enum=("none", "exempt", "reverse"), unset_value="none"),
    Param(("tax", "ip_address"), role=Role.WRITE_ONCE),
    Param(("tax", "validate_location"), role=Role.OPTION, enum=("auto", "deferred", "immediately")),
    # Address and shipping
    Param(("address",), Shape.OBJECT, children=_ADDRESS),
    Param(("shipping",), Shape.OBJECT, children={"address": _ADDRESS, "name": None, "phone": None}),
    # Payment source
    Param(("default_source",), clearable=False),
    Param(("source",), role=Role.WRITE_ONCE, clearable=False, secret=True),
    Param(("card",), role=Role.WRITE_ONCE, clearable=False, secret=True),
    Param(("bank_account",), role=Role.WRITE_ONCE, clearable=False, secret=True),
    Param(("default_card",), role=Role.WRITE_ONCE, clearable=False),
    Param(("default_bank_account",), role=Role.WRITE_ONCE, clearable=False),
    Param(("default_alipay_account",), role=Role.WRITE_ONCE, clearable=False),
    # Advanced
    Param(
        ("cash_balance", "settings", "reconciliation_mode"),
        role=Role.WRITE_ONCE,
        clearable=False,
        enum=("automatic", "manual", "merchant_default"),
    ),
    Param(("expand",), Shape.LIST, role=Role.OPTION),
    Param(("validate",), role=Role.OPTION, type=bool),
)

BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}
STATE_PARAMS: tuple[Param, ...] = tuple(p for p in PARAMS if p.role is Role.STATE)
# Top-level names whose values are never logged as they are.
SECRET_ROOTS: frozenset[str] = frozenset(p.field for p in PARAMS if p.secret)


def get_path(data: Mapping[str, Any] | None, path: tuple[str, ...]) -> Any:
    """``data[a][b]...`` or ``None`` when any level is missing or not a mapping."""
    node: Any = data
    for part in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set ``data[a][b]... = value``, creating intermediate dicts in order."""
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
