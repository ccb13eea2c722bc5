"""The three-way merge of Stripe's state into the local mirror. Pure: no Django.

When Stripe's object arrives (a pull, a webhook event, a push's answer), each
updatable parameter takes Stripe's value unless the local value differs both
from ``base`` (what Stripe had before, or what a push sent) and from Stripe's:
that is an edit made here and not yet pushed, and it is kept. When Stripe
changed that parameter too, it is a conflict: the local edit is kept, or
dropped when the remote side wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import ParamError
from .diff import normalize, same
from .params import TABLE, Param, Shape, get_path, set_path

__all__ = ["Merge", "merge", "norm", "to_local"]


@dataclass
class Merge:
    """The merged state (Stripe's shape, as the mirror stores it), edits kept, and conflicts."""

    state: dict[str, Any] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    # (param name, local value, Stripe's value)
    conflicts: list[tuple[str, Any, Any]] = field(default_factory=list)


def merge(
    local: Mapping[str, Any],
    remote: Mapping[str, Any],
    base: Mapping[str, Any] | None,
    *,
    remote_wins: bool = False,
) -> Merge:
    """Merge Stripe's ``remote`` object into the ``local`` state, against ``base``.

    ``base`` None means nothing is known of Stripe's earlier state: local
    values that differ from Stripe's are kept, and nothing is a conflict.
    """
    result = Merge()
    for param in TABLE.state:
        mine = get_path(local, param.path)
        theirs = get_path(remote, param.path)
        earlier = get_path(base, param.path)
        if same(mine, earlier):  # not edited here: the common case, decided without normalizing
            set_path(result.state, param.path, to_local(param, theirs))
            continue
        ours = norm(param, mine)
        before = norm(param, earlier)
        # Each side normalized once, Stripe's only when the local value is not the base's.
        if ours == before or ours == (remote_value := norm(param, theirs)):
            set_path(result.state, param.path, to_local(param, theirs))
            continue
        if base is not None and remote_value != before:
            result.conflicts.append((param.name, mine, theirs))
            if remote_wins:
                set_path(result.state, param.path, to_local(param, theirs))
                continue
        result.kept.append(param.name)
        set_path(result.state, param.path, mine)
    return result


def norm(param: Param, value: Any) -> Any:
    """``value`` as the diff compares it; a value the endpoint cannot express compares unequal to any other."""
    try:
        return normalize(param, value)
    except ParamError:
        return ("invalid", repr(value))


def to_local(param: Param, value: Any) -> Any:
    """A value from Stripe as the mirror stores it."""
    if param.shape is Shape.SCALAR:
        if isinstance(value, dict):  # expanded object
            value = value.get("id")
        if value is None and param.type is str:
            return param.unset_value or ""
        return value
    if param.shape is Shape.MAP:
        return dict(value or {})
    if param.shape is Shape.LIST:
        return list(value or [])
    return value or None
