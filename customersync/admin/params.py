"""Parameters as an operator reads them: names and values, never a form body or JSON.

The pending-changes panel (``change_rows``) and the sync history
(``sent_lines``) describe params the same way, by the parameter table:

- a scalar or a ``metadata`` key is one row (``metadata[plan]``);
- an object (``address``, ``shipping``, ``invoice_settings[rendering_options]``)
  is sent whole whenever any part changes: the rows are the sub-fields that
  change, and a note says the object goes whole and which parts ride along
  unchanged, so no row reads like ``FR → FR``;
- a list (``preferred_locales``, custom fields) is one row, old list and new.

Pure functions of dicts; the admin renders what they return.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.diff import describe
from ..core.encoding import flatten
from ..core.params import TABLE, Param, Role, Shape, get_path

__all__ = ["Row", "change_rows", "readable", "sent_lines", "owner_of"]

# A sub-field sent as ``''`` inside an object: Stripe unsets it.
UNSET = "(unset)"


@dataclass
class Row:
    """One row of the panel: ``param`` goes from ``old`` (Stripe's) to ``new`` (``''``: unset).

    ``whole``: set on the note row of an object sent whole; it lists the parts
    sent unchanged (``old`` and ``new`` are then unused).
    """

    param: str
    old: Any
    new: Any
    role: Role = Role.STATE
    whole: list[str] | None = field(default=None)


def _parts(key: str) -> list[str]:
    head, _, rest = key.partition("[")
    return [head, *rest.rstrip("]").split("][")] if rest else [head]


def _name(parts: list[str]) -> str:
    return parts[0] + "".join(f"[{part}]" for part in parts[1:])


def owner_of(key: str) -> Param | None:
    """The table's parameter a flattened key (``address[city]``, ``preferred_locales[0]``) belongs to."""
    parts = _parts(key)
    for size in range(len(parts), 0, -1):
        param = TABLE.by_name.get(_name(parts[:size]))
        if param is not None:
            return param
    return None


def _grouped(keys: list[tuple[str, Any, Any]]) -> dict[str, tuple[Param | None, list[tuple[str, Any, Any]]]]:
    """Flattened rows grouped by the object or list they belong to (other rows stand alone), in order."""
    groups: dict[str, tuple[Param | None, list[tuple[str, Any, Any]]]] = {}
    for key, old, new in keys:
        param = owner_of(key)
        whole = param is not None and param.shape in (Shape.OBJECT, Shape.LIST)
        name = param.name if whole and param is not None else key
        groups.setdefault(name, (param, []))[1].append((key, old, new))
    return groups


def _relative(key: str, name: str) -> str:
    """``shipping[address][city]`` within ``shipping``: ``address[city]``."""
    return _name(_parts(key)[len(_parts(name)) :])


def _same(old: Any, new: Any) -> bool:
    return old is not None and old != "" and str(old) == str(new)


def change_rows(confirmed: Mapping[str, Any] | None, params: Mapping[str, Any]) -> list[Row]:
    """``params`` (a push's) as the panel's rows, old values from ``confirmed`` (Stripe's last state)."""
    rows: list[Row] = []
    for name, (param, items) in _grouped(describe(confirmed, params)).items():
        role = param.role if param is not None else Role.STATE
        if param is None or param.shape in (Shape.SCALAR, Shape.MAP):
            rows.extend(Row(key, old, new, role) for key, old, new in items)
            continue
        old_whole = get_path(confirmed, param.path)
        new_whole = get_path(params, param.path)
        if param.shape is Shape.LIST or new_whole == "":
            rows.append(Row(name, old_whole, new_whole, role))
            continue
        rows.extend(Row(key, old, new, role) for key, old, new in items if not _same(old, new))
        rows.append(
            Row(name, None, None, role, whole=[_relative(key, name) for key, old, new in items if _same(old, new)])
        )
    return rows


def readable(value: Any, empty: Any) -> Any:
    """A value as text: lists joined with commas, objects as ``key: value`` parts; ``empty`` for nothing."""
    if value is None or value == "" or value == [] or value == {}:
        return empty
    if isinstance(value, Mapping):
        return ", ".join(
            f"{key}: ({readable(item, UNSET)})" if isinstance(item, Mapping) else f"{key}: {readable(item, UNSET)}"
            for key, item in value.items()
            if item is not None
        )
    if isinstance(value, (list, tuple)):
        return ", ".join(
            f"{item.get('name', '')}: {item.get('value', '')}"
            if isinstance(item, Mapping) and set(item) <= {"name", "value"}
            else str(readable(item, "-"))
            for item in value
        )
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _ordered(value: Any, children: Mapping[str, Any]) -> Any:
    """An object's parts in the table's order (a JSON column may keep them in another)."""
    if not isinstance(value, Mapping):
        return value
    order = [key for key in children if key in value] + [key for key in value if key not in children]
    return {key: _ordered(value[key], children.get(key) or {}) for key in order}


def sent_lines(params: Mapping[str, Any]) -> list[tuple[str, Any, bool]]:
    """What a push sent, one ``(param, value, whole)`` per row: a scalar or metadata key alone, an object or a
    list in one row (``whole``: an object, sent whole). ``value`` ``''`` means unset."""
    lines: list[tuple[str, Any, bool]] = []
    keys = [(key, None, value) for key, value in flatten(params)]
    for name, (param, items) in _grouped(keys).items():
        if param is not None and param.shape in (Shape.OBJECT, Shape.LIST):
            value = get_path(params, param.path)
            whole = param.shape is Shape.OBJECT and value != ""
            lines.append((name, _ordered(value, param.children or {}) if whole else value, whole))
        else:
            lines.extend((key, value, False) for key, _, value in items)
    return lines
