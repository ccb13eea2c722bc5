"""Stripe's form encoding (``application/x-www-form-urlencoded`` with brackets).

Pure functions, no Django: ``encode`` turns a params dict into the exact body
stripe-python sends; ``decode`` turns such a body back into nested params (the
fake server and the tests use it).

The dialect, as captured from the ``stripe`` package (see the contract's
``form_encoding_examples.json``):

- nested dicts become ``parent[child]``; lists are indexed ``key[0]``;
- ``None``, ``{}`` and ``[]`` send nothing at all (so an empty list cannot be
  sent, and ``metadata={}`` is *not* an unset: ``metadata=''`` is);
- top-level booleans become ``true``/``false``; scalars inside lists are sent
  with ``str()`` (so ``[True]`` becomes ``True``), as the SDK does;
- brackets in keys are sent literally; everything else is percent-encoded with
  ``+`` for spaces.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote_plus

__all__ = ["encode", "decode", "flatten"]


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def flatten(params: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Yield ``(bracket_key, string_value)`` pairs in Stripe's order."""
    for key, value in params.items():
        full = f"{prefix}[{key}]" if prefix else str(key)
        yield from _flatten_value(full, value, in_list=False)


def _flatten_value(key: str, value: Any, in_list: bool) -> Iterator[tuple[str, str]]:
    if value is None:
        return
    if isinstance(value, Mapping):
        yield from flatten(value, key)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _flatten_value(f"{key}[{index}]", item, in_list=True)
    elif in_list:
        yield key, str(value)
    else:
        yield key, _scalar(value)


def encode(params: Mapping[str, Any]) -> str:
    """Return the request body for ``params``, byte for byte as stripe-python."""
    return "&".join(f"{quote_plus(key, safe='[]')}={quote_plus(value, safe='')}" for key, value in flatten(params))


# Free-form maps whose keys may look like list indexes ("0", "1"): never
# turned into lists when decoding.
_MAP_KEYS = frozenset({"metadata"})


def decode(body: str | bytes) -> dict[str, Any]:
    """Parse a form body in Stripe's bracket dialect back into nested params.

    Dicts whose keys are exactly ``0..n-1`` become lists, except free-form maps
    (``metadata``). Empty values stay ``''`` (Stripe's "unset").
    """
    if isinstance(body, bytes):
        body = body.decode("utf-8")
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True, strict_parsing=False):
        parts = _split_key(key)
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    listed = _listify(root, parent=None)
    assert isinstance(listed, dict)  # the root is keyed by names, never turned into a list
    return listed


def _split_key(key: str) -> list[str]:
    head, sep, rest = key.partition("[")
    parts = [head]
    if sep:
        # "a[b][c]" -> rest "b][c]"
        parts.extend(rest.rstrip("]").split("]["))
    return parts


def _listify(node: Any, parent: str | None) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v, k) for k, v in node.items()}
    if (
        parent not in _MAP_KEYS
        and converted
        and all(k.isdigit() for k in converted)
        and sorted(int(k) for k in converted) == list(range(len(converted)))
    ):
        return [converted[str(i)] for i in range(len(converted))]
    return converted
