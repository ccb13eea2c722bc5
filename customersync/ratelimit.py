"""A rate budget shared by every worker, kept in Redis.

Stripe allows about 25 customer updates a second per account, shared with
everything else the account does; Celery's ``rate_limit`` is per worker, which
is not a budget. ``acquire()`` blocks until a request may be sent.

Two algorithms, both one Lua script on Redis's own clock (so workers on many
machines agree):

- ``window`` (default): a sliding-window log. A request is granted only if
  fewer than ``rate`` were granted in the last window, so no window of that
  length ever holds more than ``rate`` requests.
- ``bucket``: a token bucket of capacity 1, one token every window/``rate``
  seconds (smooth pacing, no bursts; ``bench`` compares the two).

The window is a little longer than a second (``WINDOW_SLACK``) so jitter
between a grant here and the request's arrival at Stripe cannot squeeze
``rate + 1`` arrivals into one second there. A 429 from Stripe pauses the
whole fleet (``penalize``). Each Stripe account has its own budget and its own
pause (``budget(name)``): a 429 on one account does not slow another.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from .exceptions import ConfigurationError

logger = logging.getLogger("customersync")

WINDOW_SLACK = 0.1  # seconds added to the one-second window

_WINDOW = """
local key, penalty = KEYS[1], KEYS[2]
local rate, window_us, member = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local pause = redis.call('PTTL', penalty)
if pause > 0 then return pause end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window_us)
if redis.call('ZCARD', key) < rate then
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, math.ceil(window_us / 1000) + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return math.max(1, math.ceil((tonumber(oldest[2]) + window_us - now) / 1000))
"""

_BUCKET = """
local key, penalty = KEYS[1], KEYS[2]
local rate, window_us = tonumber(ARGV[1]), tonumber(ARGV[2])
local pause = redis.call('PTTL', penalty)
if pause > 0 then return pause end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = window_us / rate
local next_at = tonumber(redis.call('GET', key) or '0')
if next_at <= now then
  redis.call('SET', key, math.max(next_at, now) + interval, 'PX', 60000)
  return 0
end
return math.max(1, math.ceil((next_at - now) / 1000))
"""


class _Budget:
    """``acquire`` over ``try_acquire``: the one waiting loop of both budgets."""

    def try_acquire(self) -> float:
        raise NotImplementedError

    def acquire(self, timeout: float | None = None) -> None:
        """Block until a request may go (raises TimeoutError after ``timeout`` seconds)."""
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        while (wait := self.try_acquire()) > 0:
            if deadline is not None and time.monotonic() + wait > deadline:
                raise TimeoutError("the rate budget did not free up in time")
            time.sleep(min(wait, 1.0))
        if (waited := time.monotonic() - started) > 0.01:
            logger.debug("Waited %.2fs for the rate budget.", waited)


class RateBudget(_Budget):
    """``rate`` requests per second for everyone sharing ``name`` on this Redis."""

    def __init__(self, redis_client: Any, rate: float, *, name: str = "stripe", algorithm: str = "window") -> None:
        if rate <= 0:
            raise ConfigurationError(f"CUSTOMERSYNC['RATE_LIMIT'] must be positive (or 0 for no budget), not {rate!r}.")
        if algorithm not in ("window", "bucket"):
            raise ConfigurationError(
                f"CUSTOMERSYNC['RATE_LIMIT_ALGORITHM'] is 'window' or 'bucket', not {algorithm!r}."
            )
        self.redis, self.rate, self.algorithm, self.name = redis_client, rate, algorithm, name
        self.key = f"customersync:budget:{name}:{algorithm}"
        self.penalty_key = f"customersync:budget:{name}:pause"
        self._script = redis_client.register_script(_WINDOW if algorithm == "window" else _BUCKET)

    def try_acquire(self) -> float:
        """0 if a request may go now, else the seconds to wait before asking again."""
        window_us = int((1.0 + WINDOW_SLACK) * 1_000_000)
        args = [self.rate, window_us, uuid.uuid4().hex] if self.algorithm == "window" else [self.rate, window_us]
        wait_ms = int(self._script(keys=[self.key, self.penalty_key], args=args))
        return wait_ms / 1000.0

    def penalize(self, seconds: float) -> None:
        """Pause every worker sharing this budget (Stripe answered 429)."""
        self.redis.set(self.penalty_key, "1", px=max(1, int(seconds * 1000)), nx=True)
        logger.warning("Stripe rate-limited %s: every worker pauses its requests there %.1fs.", self.name, seconds)


class LocalBudget(_Budget):
    """The same interface within one process, for sites without Redis (not shared),
    and the pacer of a pull (which is sequential)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_at = 0.0
        self.lock = threading.Lock()

    def try_acquire(self) -> float:
        with self.lock:
            now = time.monotonic()
            if now >= self.next_at:
                self.next_at = max(self.next_at, now - self.interval) + self.interval
                return 0.0
            return self.next_at - now

    def penalize(self, seconds: float) -> None:
        with self.lock:
            self.next_at = max(self.next_at, time.monotonic() + seconds)


_budgets: dict[tuple, Any] = {}
_redis_clients: dict[str, Any] = {}
_budget_lock = threading.Lock()


def budget(name: str = "stripe", rate: float | None = None) -> Any | None:
    """The budget named ``name`` (one per Stripe account: Stripe limits each on its own), shared
    through Redis when there is one, or None when off. ``rate``: the account's platform's
    RATE_LIMIT (default: ``CUSTOMERSYNC['RATE_LIMIT']``)."""
    from .conf import app_settings

    rate = app_settings.RATE_LIMIT if rate is None else rate
    if not rate:
        return None
    url = app_settings.RATE_LIMIT_REDIS_URL or _broker_redis_url()
    config = (name, rate, url, app_settings.RATE_LIMIT_ALGORITHM)
    with _budget_lock:
        if config not in _budgets:
            if len(_budgets) > 10_000:
                _budgets.clear()  # settings changed many times (tests): keep memory bounded
            if url:
                import redis

                if url not in _redis_clients:  # one connection pool for every account's budget
                    _redis_clients[url] = redis.Redis.from_url(url)
                _budgets[config] = RateBudget(_redis_clients[url], float(rate), name=name, algorithm=config[3])
            else:
                _budgets[config] = LocalBudget(float(rate))
        return _budgets[config]


def _broker_redis_url() -> str | None:
    from celery import current_app

    url = current_app.conf.broker_url or ""
    return url if url.startswith(("redis://", "rediss://")) else None
