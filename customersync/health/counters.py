"""Bad webhook signatures, counted in Redis: a delivery whose signature fails proves nothing about
its body (not even its event id), so it writes no database row an anonymous sender could pile up.

Each refusal increments a per-minute counter of its platform (``INCR`` and ``EXPIRE`` in one
round trip), kept ``KEEP`` seconds, in the Redis the rate budget uses; ``bad_signatures`` sums
the minutes of a window (at most ``KEEP``). Without that Redis nothing is counted and the figure
is ``None``.
"""

from __future__ import annotations

import logging
import math
import time

from ..stripe import rate_budget

logger = logging.getLogger("customersync")

KEEP = 24 * 3600  # seconds a minute's counter is kept: the longest window it serves
PREFIX = "customersync:health:bad_signature"


def _key(platform: str, minute: int) -> str:
    return f"{PREFIX}:{platform}:{minute}"


def count_bad_signature(platform: str) -> None:
    """Count one delivery refused for its signature at ``platform``'s endpoints. Never raises:
    a Redis away loses the count, not the answer."""
    client = rate_budget.shared_redis()
    if client is None:
        return
    key = _key(platform, int(time.time() // 60))
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, KEEP + 60)
            pipe.execute()
    except Exception as err:  # noqa: BLE001 - the webhook's answer never depends on the count
        logger.warning("Could not count a bad webhook signature (%s).", type(err).__name__)


def bad_signatures(platforms: list[str], window: float) -> dict[str, int] | None:
    """Deliveries refused for their signature per platform in the last ``window`` seconds (whole
    minutes, at most ``KEEP``), in one round trip; None without the Redis or when it is away."""
    client = rate_budget.shared_redis()
    if client is None or not platforms:
        return None if client is None else {}
    minutes = max(1, math.ceil(min(window, KEEP) / 60))
    last = int(time.time() // 60)
    keys = [_key(platform, minute) for platform in platforms for minute in range(last - minutes + 1, last + 1)]
    try:
        values = client.mget(keys)
    except Exception:  # noqa: BLE001 - Redis away: the figure is unknown
        return None
    found: dict[str, int] = {}
    for index, platform in enumerate(platforms):
        chunk = values[index * minutes : (index + 1) * minutes]
        found[platform] = sum(int(value) for value in chunk if value is not None)
    return found
