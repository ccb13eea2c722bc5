"""What an instance's fields held when they were last checked, to check again only what changed.

Pure: no Django. A snapshot keeps immutable values (text, numbers, dates, None) as they are and
anything else (JSON objects and lists) as its pickle, so a change made in place
(``customer.metadata["plan"] = "pro"``) is seen, without a deep copy. Two snapshots are the same
only when their types are: ``1`` and ``True``, a list and a tuple, are different values to the
checks. A value that cannot be pickled never matches, so it is always checked again.
"""

from __future__ import annotations

import datetime as dt
import pickle
from typing import Any

__all__ = ["take", "of", "changed"]

_IMMUTABLE = frozenset({str, int, bool, float, type(None), dt.datetime, dt.date})


class _Unmatched:
    """The snapshot of a value that cannot be pickled: equal to nothing, itself included."""

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]


def of(value: Any) -> Any:
    """The snapshot of one value."""
    if type(value) in _IMMUTABLE:
        return value
    try:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - any value pickle refuses is simply checked again
        return _Unmatched()


def take(instance: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The snapshot of ``instance``'s attributes ``names``."""
    values = instance.__dict__
    return {name: of(values.get(name)) for name in names}


def changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The names whose snapshots differ (in value or in type)."""
    out = []
    for name, now in after.items():
        then = before.get(name, _Unmatched())
        if type(then) is not type(now) or then != now:
            out.append(name)
    return out
