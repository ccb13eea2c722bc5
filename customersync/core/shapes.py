"""The type each parameter's value must have, and the keys each object may hold. Pure: no Django.

Read from ``params.TABLE`` at use. ``check`` walks the updatable state (keyed
by model field, as ``Customer`` holds it) and the write-once values and
options (``pending_once``), and returns every problem keyed by Stripe's
bracket name (``address[line1]``, ``invoice_settings[footer]``); a key of
``pending_once`` that is no write-once value or option is named
``pending_once[key]``. The model refuses a save with them and the diff refuses
to send them, so a value of the wrong type is never sent as its Python repr,
turned into an unset, or dropped.

A key that is no parameter is an error, except one Stripe itself reported in
the same place with the same value (read-only parts of Stripe's objects, such
as a shipping ``carrier``, arrive with a pull and are never sent).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .params import TABLE, Param, Role, Shape

__all__ = ["check", "kind"]

# A level of parameters: a Param, or a group of them by key (invoice_settings, tax...).
_Node = Param | dict[str, Any]
_MISSING = object()


def kind(value: Any) -> str:
    """What a value is, for messages: ``an object``, ``a list``, ``a number``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return "text"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _unset(value: Any) -> bool:
    return value is None or value == ""


def _tree(params: tuple[Param, ...]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for param in params:
        node = root
        for part in param.path[:-1]:
            node = node.setdefault(part, {})
        node[param.path[-1]] = param
    return root


class _Walk:
    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def node(self, name: str, node: _Node, value: Any, stripe: Any, *, top: bool) -> None:
        if isinstance(node, Param):
            self.param(node, name, value, stripe, top=top)
        elif not isinstance(value, Mapping):
            self.add(name, f"Expected an object, not {kind(value)}.")
        else:
            self.keys(name, node, value, stripe, self.node)

    def keys(
        self, name: str, allowed: Mapping[str, Any], value: Mapping[Any, Any], stripe: Any, walk: Callable[..., None]
    ) -> None:
        """Each key of ``value``: walked with ``walk`` when allowed, else an error unless Stripe reported it."""
        for key, item in value.items():
            child = f"{name}[{key}]"
            if key not in allowed:
                theirs = stripe.get(key, _MISSING) if isinstance(stripe, Mapping) else _MISSING
                if theirs is _MISSING or theirs != item:
                    self.add(child, f"Stripe has no parameter {child}; remove the key {key!r}.")
                continue
            walk(child, allowed[key], item, stripe.get(key) if isinstance(stripe, Mapping) else None, top=False)

    def param(self, param: Param, name: str, value: Any, stripe: Any, *, top: bool) -> None:
        if param.shape is Shape.SCALAR:
            self.scalar(param, name, value)
        elif param.shape is Shape.MAP:
            if not isinstance(value, Mapping):
                self.add(name, f"Expected an object of keys and values, not {kind(value)}.")
                return
            for key, item in value.items():
                if not isinstance(key, str):
                    self.add(name, f"Keys must be text, not {kind(key)} ({key!r}).")
                elif not isinstance(item, str):
                    self.add(f"{name}[{key}]", f"Key {key!r}: the value must be text, not {kind(item)}.")
        elif param.shape is Shape.OBJECT:
            self.object(name, param.children or {}, value, stripe)
        elif _unset(value) and not top:
            return  # a list inside an object: unset
        elif not isinstance(value, list):
            self.add(name, f"Expected a list, not {kind(value)}.")
        else:
            for index, item in enumerate(value, 1):
                self.item(param, name, index, item)

    def scalar(self, param: Param, name: str, value: Any) -> None:
        if value is None:
            return
        if param.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.add(name, f"Enter a whole number, not {kind(value)}.")
        elif param.type is bool:
            if not isinstance(value, bool):
                self.add(name, f"Expected true or false, not {kind(value)}.")
        elif not isinstance(value, str):
            self.add(name, f"Expected text, not {kind(value)}.")

    def object(self, name: str, children: Mapping[str, Any], value: Any, stripe: Any) -> None:
        if _unset(value):
            return
        if not isinstance(value, Mapping):
            self.add(name, f"Expected an object or null, not {kind(value)}.")
            return

        def walk(child: str, sub: Any, item: Any, theirs: Any, top: bool) -> None:
            if sub is not None:
                self.object(child, sub, item, theirs)
            elif item is not None and not isinstance(item, str):
                self.add(child, f"Expected text, not {kind(item)}.")

        self.keys(name, children, value, stripe, walk)

    def item(self, param: Param, name: str, index: int, item: Any) -> None:
        if not param.item_keys:
            if not isinstance(item, str) or not item:
                self.add(name, f"Item {index}: expected text, not {kind(item) if item != '' else 'empty text'}.")
            return
        if not isinstance(item, Mapping):
            self.add(name, f"Item {index}: expected an object with {', '.join(param.item_keys)}, not {kind(item)}.")
            return
        for key, part in item.items():
            if key not in param.item_keys:
                self.add(name, f"Item {index}: Stripe has no key {key!r} here (only {', '.join(param.item_keys)}).")
            elif part is not None and not isinstance(part, str):
                self.add(name, f"Item {index}: {key} must be text, not {kind(part)}.")


def check(
    fields: Mapping[str, Any], once: Any = None, confirmed: Mapping[str, Any] | None = None
) -> dict[str, list[str]]:
    """Every value of the wrong type or key that is no parameter; ``{}`` when all is well.

    ``fields``: top-level state values by field (those absent are not checked);
    ``once``: the write-once values and options; ``confirmed``: what Stripe
    last reported, for the keys it may add to its objects.
    """
    walk = _Walk()
    state, once_tree = _trees()
    for field, node in state.items():
        if field in fields:
            walk.node(field, node, fields[field], _get(confirmed, field), top=True)
    if once is None:
        return walk.errors
    if not isinstance(once, Mapping):
        walk.add("pending_once", f"Expected an object, not {kind(once)}.")
        return walk.errors
    _once(walk, (), once_tree, once, state)
    return walk.errors


_built: list[Any] = [None, None, None]


def _trees() -> tuple[dict[str, Any], dict[str, Any]]:
    """The state's and the write-once values' trees, built again only when the table changed."""
    if _built[0] is not TABLE.params:
        once = tuple(p for p in TABLE.params if p.role is not Role.STATE)
        _built[:] = [TABLE.params, _tree(TABLE.state), _tree(once)]
    return _built[1], _built[2]


def _once(walk: _Walk, path: tuple[str, ...], allowed: Mapping[str, Any], once: Mapping[Any, Any], state: Any) -> None:
    for key, value in once.items():
        name = path[0] + "".join(f"[{part}]" for part in (*path[1:], key)) if path else str(key)
        node = allowed.get(key) if isinstance(key, str) else None
        if node is None:
            hint = f"set the field {key} instead" if not path and key in state else "remove it"
            walk.add(
                "pending_once" + "".join(f"[{part}]" for part in (*path, key)),
                f"{name} is not a write-once value or request option Stripe takes; {hint}.",
            )
        elif isinstance(node, Param):
            walk.param(node, name, value, None, top=False)
        elif not isinstance(value, Mapping):
            walk.add(name, f"Expected an object, not {kind(value)}.")
        else:
            _once(walk, (*path, key), node, value, state)


def _get(data: Any, key: str) -> Any:
    return data.get(key) if isinstance(data, Mapping) else None
