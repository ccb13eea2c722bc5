"""The diff: last confirmed state + desired state -> the minimal update params.

Pure, no Django. States are dicts in the customer object's own shape
(``{"email": ..., "invoice_settings": {"footer": ...}}``). A key missing from
``desired`` means "not managed here" and is never sent; ``None`` or ``''``
means "unset".

``diff`` returns ``{}`` when nothing needs sending; values set back to what
Stripe already has send nothing. A change the endpoint cannot express (say,
clearing ``invoice_prefix``), a desired value of the wrong type or a key that
is no parameter (``shapes.check``) raises ``ParamError`` naming the parameter:
nothing is ever sent as a Python repr, turned into an unset, or dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..exceptions import ParamError
from . import shapes
from .params import TABLE, Param, Role, Shape, set_path

__all__ = ["diff", "normalize", "same", "MISSING"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def _lookup(data: Mapping[str, Any] | None, path: tuple[str, ...]) -> Any:
    node: Any = data
    for part in path:
        # A dict first: the ABC check costs more than the rest of the lookup.
        if not (type(node) is dict or isinstance(node, Mapping)) or part not in node:
            return MISSING
        node = node[part]
    return node


def _blank(value: Any) -> bool:
    return value is None or value == ""


def _clean_object(value: Any, children: Mapping[str, Any]) -> dict[str, Any] | None:
    """Keep the sub-fields that are parameters, dropping unset ones; ``{}`` -> None."""
    if not isinstance(value, Mapping):
        return None
    out: dict[str, Any] = {}
    for key, sub in children.items():
        item = value.get(key)
        if sub is not None:
            item = _clean_object(item, sub)
        elif _blank(item):
            item = None
        else:
            item = str(item)
        if item is not None:
            out[key] = item
    return out or None


def same(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are equal with the same types all the way down, so that they surely
    normalize alike (``1 == True`` does not). Cheaper than normalizing both; ``False`` says nothing."""
    if a is b:
        return True
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is str or kind is int or kind is bool:
        return bool(a == b)
    if kind is dict:
        return a.keys() == b.keys() and all(same(value, b[key]) for key, value in a.items())
    if kind is list:
        return len(a) == len(b) and all(map(same, a, b))
    return False


def normalize(param: Param, value: Any) -> Any:
    """Bring a value of ``param`` to one canonical form, so equal means equal."""
    if param.shape is Shape.SCALAR:
        if type(value) is not str and isinstance(value, Mapping):  # an expanded object: compare by id
            value = value.get("id")
        if _blank(value):
            return param.unset_value
        if param.type is int:
            try:
                return int(value)
            except (TypeError, ValueError):
                raise ParamError(param.name, f"must be an integer, not {value!r}.") from None
        if param.type is bool:
            return bool(value)
        return str(value)
    if param.shape is Shape.MAP:
        if not isinstance(value, Mapping):
            return {}
        return {str(k): str(v) for k, v in value.items() if not _blank(v)}
    if param.shape is Shape.OBJECT:
        return _clean_object(value, param.children or {})
    # LIST
    if not isinstance(value, (list, tuple)):
        return []
    if param.item_keys:
        return [
            {key: "" if _blank(item.get(key)) else str(item.get(key)) for key in param.item_keys}
            for item in value
            if isinstance(item, Mapping)
        ]
    return [str(item) for item in value if not _blank(item)]


def _whole(new: Mapping[str, Any], old: Mapping[str, Any] | None, children: Mapping[str, Any]) -> dict[str, Any]:
    """The whole new object, with ``''`` for each sub-field that was removed."""
    old = old or {}
    out: dict[str, Any] = {}
    for key, sub in children.items():
        new_value, old_value = new.get(key), old.get(key)
        if new_value is None:
            if old_value is not None:
                out[key] = ""
        elif sub is not None:
            out[key] = _whole(new_value, old_value, sub)
        else:
            out[key] = new_value
    return out


def _change(param: Param, old: Any, new: Any) -> Any:
    if param.shape is Shape.SCALAR:
        if new is None:
            if not param.clearable:
                raise ParamError(param.name, "Stripe does not allow unsetting this parameter; give it a value.")
            return ""
        return new
    if param.shape is Shape.MAP:
        sent = {key: value for key, value in new.items() if old.get(key) != value}
        sent.update({key: "" for key in old if key not in new})
        return sent
    if param.shape is Shape.OBJECT:
        if new is None:
            return ""
        return _whole(new, old, param.children or {})
    # LIST: sent whole
    if not new:
        if not param.clearable:
            raise ParamError(
                param.name,
                "cannot be emptied: Stripe's form encoding has no empty list and the "
                "endpoint does not accept '' here; keep at least one entry.",
            )
        return ""
    return list(new)


def diff(
    confirmed: Mapping[str, Any] | None,
    desired: Mapping[str, Any],
    once: Mapping[str, Any] | None = None,
    *,
    checked: bool = False,
) -> dict[str, Any]:
    """Return the params that take Stripe from ``confirmed`` to ``desired``.

    ``once`` holds write-once values and request options (``source``,
    ``tax[ip_address]``, ``expand``...). Write-once values are always sent when
    given; request options only ride along with a change. ``checked``: the caller
    found no problem with the types and keys already (``shapes.check``).
    """
    problems = None if checked else shapes.check(desired, once, confirmed)
    if problems:
        name, messages = next(iter(problems.items()))
        raise ParamError(name, messages[0])
    params: dict[str, Any] = {}
    for param in TABLE.state:
        wanted = _lookup(desired, param.path)
        if wanted is MISSING:
            continue
        current = _lookup(confirmed, param.path)
        if same(wanted, current):
            continue
        old = normalize(param, None if current is MISSING else current)
        new = normalize(param, wanted)
        if old != new:
            set_path(params, param.path, _change(param, old, new))
    if not once:
        return params
    options: list[tuple[Param, Any]] = []
    for param in TABLE.params:
        if param.role is Role.STATE:
            continue
        value = _lookup(once, param.path)
        if value is MISSING or value is None or value == [] or (value == "" and not param.clearable):
            continue
        if param.role is Role.WRITE_ONCE:
            set_path(params, param.path, value)
        else:
            options.append((param, value))
    if params:
        for param, value in options:
            set_path(params, param.path, value)
    return params


def describe(confirmed: Mapping[str, Any] | None, params: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """``params`` as readable rows ``(param, old value, new value)``, old from ``confirmed``.

    A new value of ``''`` means the parameter is unset.
    """
    from .encoding import flatten

    rows = []
    for key, value in flatten(params):
        head, _, rest = key.partition("[")
        parts = [head, *rest.rstrip("]").split("][")] if rest else [head]
        node: Any = confirmed
        for part in parts:
            if isinstance(node, Mapping):
                node = node.get(part)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = None
        if isinstance(node, Mapping) and "id" in node:
            node = node["id"]
        rows.append((key, None if isinstance(node, (Mapping, list)) else node, value))
    return rows
