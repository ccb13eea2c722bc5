"""Secrets out of text that is stored or shown: error messages, the sync log, logs. Pure: no Django.

``scrub`` replaces, in any text, whatever is shaped like a Stripe secret (a
secret or restricted key, live or test: ``sk_live_``, ``sk_test_``,
``rk_live_``, ``rk_test_``; a webhook signing secret, ``whsec_``; the prefix
and at least four characters of the secret) and each
secret it is given (the keys and webhook secrets configured, whatever their
shape), with ``[redacted]``. A configured secret's tail after its prefix
is replaced too when it is long enough to be unmistakable, so an echo that
dropped the prefix shows nothing of it either.

It also makes the text storable everywhere: a lone surrogate (which no
database column can hold and JSON cannot carry to PostgreSQL) becomes
``\\ufffd``, and NUL is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["REDACTED", "SECRET_SHAPE", "scrub", "storable"]

REDACTED = "[redacted]"
# Stripe's secrets: letters and digits after the prefix (a webhook secret's may hold + / =). Stripe's
# own masked echo of a key (``sk_test_****ests``) shows none of it and is kept: it says which key.
SECRET_SHAPE = re.compile(r"(?:[sr]k_(?:live|test)_|whsec_)[A-Za-z0-9+/=_-]{4,}")
_PREFIX = re.compile(r"^(?:[sr]k_(?:live|test)_|whsec_)")
_SURROGATE = re.compile("[\ud800-\udfff]")
# A configured secret's tail shorter than this is not replaced on its own (it could be any word).
_TAIL_MIN = 12


def storable(text: str) -> str:
    """``text`` without NUL, lone surrogates replaced: what every column and JSON value can hold."""
    text = text.replace("\x00", "")
    return _SURROGATE.sub("\ufffd", text)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret in it replaced by ``[redacted]`` (see the module's docstring)."""
    text = storable(text)
    # Longest first: a secret that holds another is replaced whole.
    for secret in sorted({s for s in secrets if isinstance(s, str) and s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
        tail = _PREFIX.sub("", secret)
        if tail != secret and len(tail) >= _TAIL_MIN:
            text = text.replace(tail, REDACTED)
    return SECRET_SHAPE.sub(REDACTED, text)
