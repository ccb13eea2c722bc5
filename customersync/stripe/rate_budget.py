"""A rate budget shared by every worker, kept in Redis.

Stripe allows about 25 customer updates a second per account, shared with
everything else the account does; Celery's ``rate_limit`` is per worker, which
is not a budget. ``acquire()`` blocks until a request may be sent.

Three algorithms, each one Lua script on Redis's own clock (so workers on many
machines agree):

- ``paced`` (default): reserved times, one every ``1 / rate`` seconds.
  ``acquire()`` reserves the next free time (at most ``HORIZON`` ahead;
  beyond it, it asks again later) and sleeps until just before it;
  ``sending()``, called right before the request once the push has frozen
  and logged it, sleeps until the reserved time itself, so the database's
  work between the two does not move the request. Times nobody reserved
  because every worker was busy are still handed out, up to ``CATCH_UP``
  back, so they are not lost to the budget. What holds the rate, whatever is
  late, is a log of when requests were really written: ``sending()`` admits
  a request only while those written in the last ``SENT_WINDOW``, and those
  admitted but not yet written, are fewer than ``rate``; the client reports
  the write (what ``sending()`` returns, called once the bytes are out) and
  the request moves from "going" to the log at that time. A thread the
  machine runs late, or a write the interpreter lock delays, only holds the
  next requests back. Requests are let go at least ``GAP`` intervals apart,
  so those held back, or times caught up, spread out instead of bursting.
- ``window``: a sliding-window log of grants. A request is granted only if
  fewer than ``rate`` were granted in the last window, a little longer than a
  second (``WINDOW_SLACK``) for the jitter between a grant here and the
  request's arrival at Stripe.
- ``bucket``: a token bucket of capacity 1, one token every window/``rate``
  seconds (``bench`` compares the three).

A 429 from Stripe pauses the whole fleet (``penalize``). Each Stripe account
has its own budget and its own pause (``budget(name)``): a 429 on one account
does not slow another. A pause is never slept through: ``acquire()`` and
``sending()`` raise ``Paused`` with the time it has left, and the push task is
retried with that countdown, so a paused account holds no worker while
another account's pushes wait for one. (The scripts answer a pause as a
negative wait.)
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery import current_app

from ..exceptions import ConfigurationError, Paused

logger = logging.getLogger("customersync")

WINDOW_SLACK = 0.1  # seconds added to the one-second window
HORIZON = 0.5  # seconds: how far ahead a paced reservation may be
GAP = 0.5  # intervals (1 / rate): the least time between two requests let go
CATCH_UP = 0.25  # seconds: how far back unreserved times are still handed out (the log caps the rate)
GOING_TTL = 2.0  # seconds: an admitted request that never reports its write stops counting then
LEAD = 0.05  # seconds: acquire() returns this long before the reserved time
SENT_WINDOW = 1.005  # seconds: no window this long holds more than ``rate`` requests as they were written

_WINDOW = """
local key, penalty = KEYS[1], KEYS[2]
local rate, window_us, member = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local pause = redis.call('PTTL', penalty)
if pause > 0 then return -pause end
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

# The paced budget's last word, right before a request is written: admitted only if the requests
# written in the last SENT_WINDOW, and those admitted but not yet written, are fewer than the rate,
# and not sooner than GAP intervals after the last one (requests the log held back, or times
# caught up, go spread out, not in a burst that the log would echo a second later).
# An admitted request counts as "going" (whatever its age: its write may be late) until _SENT
# moves it to the log at the time it was written; one that never reports goes after GOING_TTL.
_ADMIT = """
local sent, going, penalty = KEYS[1], KEYS[2], KEYS[3]
local rate, window_us, member = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local ttl_us, gap_us = tonumber(ARGV[4]), tonumber(ARGV[5])
local pause = redis.call('PTTL', penalty)
if pause > 0 then return -pause * 1000 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', sent, '-inf', now - window_us)
redis.call('ZREMRANGEBYSCORE', going, '-inf', now - ttl_us)
local last = 0
for _, set in ipairs({going, sent}) do
  local newest = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')
  if newest[2] then last = math.max(last, tonumber(newest[2])) end
end
if now < last + gap_us then return last + gap_us - now end
if redis.call('ZCARD', sent) + redis.call('ZCARD', going) < rate then
  redis.call('ZADD', going, now, member)
  redis.call('PEXPIRE', going, math.ceil(ttl_us / 1000))
  return 0
end
local oldest = redis.call('ZRANGE', sent, 0, 0, 'WITHSCORES')
if oldest[2] == nil then return 2000 end
return math.max(100, tonumber(oldest[2]) + window_us - now)
"""

_SENT = """
local sent, going = KEYS[1], KEYS[2]
local member, window_us = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREM', going, member)
redis.call('ZADD', sent, now, member)
redis.call('PEXPIRE', sent, math.ceil(window_us / 1000) + 1000)
return 0
"""

_BUCKET = """
local key, penalty = KEYS[1], KEYS[2]
local rate, window_us = tonumber(ARGV[1]), tonumber(ARGV[2])
local pause = redis.call('PTTL', penalty)
if pause > 0 then return -pause end
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


_PACED = """
local key, penalty = KEYS[1], KEYS[2]
local interval_us, horizon_us, catch_up_us = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause = redis.call('PTTL', penalty)
if pause > 0 then
  redis.call('SET', key, now + pause * 1000, 'PX', 60000)  -- no catching up on the pause
  return {-pause * 1000, 0}
end
local slot = math.max(tonumber(redis.call('GET', key) or '0'), now - catch_up_us)
if slot - now > horizon_us then return {slot - now - horizon_us, 0} end
redis.call('SET', key, slot + interval_us, 'PX', 60000)
return {0, slot - now}
"""


# How many requests the budget counted in the last window: what ``used()`` reads (nothing written).
_USED = """
local log, going = KEYS[1], KEYS[2]
local window_us = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = redis.call('ZCOUNT', log, now - window_us, '+inf')
if going ~= '' then n = n + redis.call('ZCOUNT', going, now - window_us, '+inf') end
return n
"""


class _Budget:
    """``acquire`` over ``ask``: the one waiting loop of the budgets."""

    name = "local"

    def ask(self) -> float:
        """0 if a request may go now (paced: a time is reserved for it), else the seconds to wait
        before asking again: negative when the wait is a pause after a 429."""
        raise NotImplementedError

    def try_acquire(self) -> float:
        """0 if a request may go now, else the seconds to wait before asking again (a pause's too)."""
        return abs(self.ask())

    def sending(self) -> Callable[[], None] | None:
        """Right before the request goes (after ``acquire``): the paced budget waits for its time
        here, and returns what to call once the request is written (None: nothing)."""
        return None

    def acquire(self, timeout: float | None = None) -> None:
        """Block until a request may go (raises TimeoutError after ``timeout`` seconds). A pause
        after a 429 is not waited out here: ``Paused`` says how long it has left."""
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        while (wait := self.ask()) != 0:
            if wait < 0:
                raise Paused(-wait, self.name)
            if deadline is not None and time.monotonic() + wait > deadline:
                raise TimeoutError("the rate budget did not free up in time")
            time.sleep(min(wait, 1.0))
        if (waited := time.monotonic() - started) > 0.01:
            logger.debug("Waited %.2fs for the rate budget.", waited)


class RateBudget(_Budget):
    """``rate`` requests per second for everyone sharing ``name`` on this Redis."""

    def __init__(self, redis_client: Any, rate: float, *, name: str = "stripe", algorithm: str = "paced") -> None:
        if rate <= 0:
            raise ConfigurationError(f"CUSTOMERSYNC['RATE_LIMIT'] must be positive (or 0 for no budget), not {rate!r}.")
        if algorithm not in _SCRIPTS:
            raise ConfigurationError(
                f"CUSTOMERSYNC['RATE_LIMIT_ALGORITHM'] is 'paced', 'window' or 'bucket', not {algorithm!r}."
            )
        self.redis, self.rate, self.algorithm, self.name = redis_client, rate, algorithm, name
        self.key = f"customersync:budget:{name}:{algorithm}"
        self.penalty_key = f"customersync:budget:{name}:pause"
        self._script = redis_client.register_script(_SCRIPTS[algorithm])
        self.sent_key = f"customersync:budget:{name}:sent"
        self.going_key = f"customersync:budget:{name}:going"
        self._admit = redis_client.register_script(_ADMIT)
        self._sent = redis_client.register_script(_SENT)
        self._window_us = int(SENT_WINDOW * 1_000_000)
        self._slots = threading.local()  # this thread's reserved time (paced), on time.monotonic()
        self._used = redis_client.register_script(_USED)

    def ask(self) -> float:
        if self.algorithm == "paced":
            interval_us = int(1_000_000 / self.rate)  # the log of writes holds the rate: no margin here
            wait_us, ahead_us = self._script(
                keys=[self.key, self.penalty_key],
                args=[interval_us, int(HORIZON * 1_000_000), int(CATCH_UP * 1_000_000)],
            )
            if int(wait_us) != 0:
                return int(wait_us) / 1_000_000
            self._slots.at = time.monotonic() + int(ahead_us) / 1_000_000
            return 0.0
        window_us = int((1.0 + WINDOW_SLACK) * 1_000_000)
        args = [self.rate, window_us, uuid.uuid4().hex] if self.algorithm == "window" else [self.rate, window_us]
        wait_ms = int(self._script(keys=[self.key, self.penalty_key], args=args))
        return wait_ms / 1000.0

    def acquire(self, timeout: float | None = None) -> None:
        super().acquire(timeout)
        if self.algorithm == "paced" and (early := self._slots.at - LEAD - time.monotonic()) > 0:
            time.sleep(early)  # the rest of the wait is in sending(), after the push's own statements

    def sending(self) -> Callable[[], None] | None:
        at, self._slots.at = getattr(self._slots, "at", None), None
        if at is None:
            return None
        if (wait := at - time.monotonic()) > 0:
            time.sleep(wait)
        member = uuid.uuid4().hex
        keys = [self.sent_key, self.going_key, self.penalty_key]
        args = [self.rate, self._window_us, member, int(GOING_TTL * 1_000_000), int(GAP * 1_000_000 / self.rate)]
        while (wait_us := int(self._admit(keys=keys, args=args))) != 0:
            if wait_us < 0:  # a 429 paused the account since acquire(): nothing is sent
                raise Paused(-wait_us / 1_000_000, self.name)
            time.sleep(wait_us / 1_000_000)

        def written() -> None:  # the request is written: log it at this time, no longer as going
            self._sent(keys=keys[:2], args=[member, self._window_us])

        return written

    def used(self) -> float | None:
        """The share of the rate used in the last second, read only (None for ``bucket``, which
        keeps no log): requests written and admitted (``paced``), or granted (``window``)."""
        if self.algorithm == "bucket":
            return None
        if self.algorithm == "paced":
            keys, window_us = [self.sent_key, self.going_key], self._window_us
        else:
            keys, window_us = [self.key, ""], int((1.0 + WINDOW_SLACK) * 1_000_000)
        return int(self._used(keys=keys, args=[window_us])) / self.rate

    def penalize(self, seconds: float) -> None:
        """Pause every worker sharing this budget (Stripe answered 429)."""
        self.redis.set(self.penalty_key, "1", px=max(1, int(seconds * 1000)), nx=True)
        logger.warning("Stripe rate-limited %s: every worker pauses its requests there %.1fs.", self.name, seconds)


_SCRIPTS = {"paced": _PACED, "window": _WINDOW, "bucket": _BUCKET}


class LocalBudget(_Budget):
    """The same interface within one process, for sites without Redis (not shared),
    and the pacer of a pull (which is sequential)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_at = 0.0
        self.paused_until = 0.0
        self.lock = threading.Lock()

    def ask(self) -> float:
        with self.lock:
            now = time.monotonic()
            if now < self.paused_until:
                return now - self.paused_until
            if now >= self.next_at:
                self.next_at = max(self.next_at, now - self.interval) + self.interval
                return 0.0
            return self.next_at - now

    def penalize(self, seconds: float) -> None:
        with self.lock:
            self.paused_until = max(self.paused_until, time.monotonic() + seconds)
            self.next_at = max(self.next_at, self.paused_until)


_budgets: dict[tuple, Any] = {}
_redis_clients: dict[str, Any] = {}
_budget_lock = threading.Lock()


def budget(name: str = "stripe", rate: float | None = None) -> Any | None:
    """The budget named ``name`` (one per Stripe account: Stripe limits each on its own), shared
    through Redis when there is one, or None when off. ``rate``: the account's platform's
    RATE_LIMIT (default: ``CUSTOMERSYNC['RATE_LIMIT']``)."""
    from ..conf import app_settings

    rate = app_settings.RATE_LIMIT if rate is None else rate
    if not rate:
        return None
    url = _redis_url()
    config = (name, rate, url, app_settings.RATE_LIMIT_ALGORITHM)
    with _budget_lock:
        if config not in _budgets:
            if len(_budgets) > 10_000:
                _budgets.clear()  # settings changed many times (tests): keep memory bounded
            if url:
                _budgets[config] = RateBudget(_client(url), float(rate), name=name, algorithm=config[3])
            else:
                _budgets[config] = LocalBudget(float(rate))
        return _budgets[config]


def shared_redis() -> Any | None:
    """The Redis the budgets share (``RATE_LIMIT_REDIS_URL``, or the broker's when it is Redis),
    budget on or off; None without one."""
    url = _redis_url()
    if not url:
        return None
    with _budget_lock:
        return _client(url)


def _redis_url() -> str | None:
    from ..conf import app_settings

    return app_settings.RATE_LIMIT_REDIS_URL or _broker_redis_url()


def _client(url: str) -> Any:
    """One connection pool per URL, for every account's budget (called under ``_budget_lock``)."""
    import redis

    if url not in _redis_clients:
        _redis_clients[url] = redis.Redis.from_url(url)
    return _redis_clients[url]


def _broker_redis_url() -> str | None:
    url = current_app.conf.broker_url or ""
    return url if url.startswith(("redis://", "rediss://")) else None
