"""The soak's hazards beyond random faults and kills, each switchable (``SoakConfig``):

(a) long requests: the workers run with a short ``LEASE_SECONDS`` and some
    requests are held at the server past it, while their worker still waits
    (its ``TIMEOUT`` is longer than the lease): the lease runs out under a
    request in flight, and the fence must keep anyone else from sending;
(b) clock skew: the first workers' clocks are off (+200 s, -30 s);
(c) rate-budget waits: a fleet budget low enough that grants queue;
(d) database restarts: the bench's own PostgreSQL is stopped (cleanly or as a
    crash) while a request is held at the server, so Stripe's answer arrives
    with the database gone, and started again 0.5 to 4 s later: on either side
    of the in-process window in which a worker keeps the answer (half the lease).

The bench process itself lives through (d) too: ``tolerant`` runs its
database work again once the database is back.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any


def worker_env(config: Any, index: int, api_base: str) -> dict[str, str]:
    """The environment of worker number ``index`` (the same for its replacement after a kill)."""
    env = {"CUSTOMERSYNC_TEST_MAX_RETRIES": "1000", "CUSTOMERSYNC_TEST_API_BASE": api_base}
    if config.lease_seconds:
        env["CUSTOMERSYNC_TEST_LEASE_SECONDS"] = str(config.lease_seconds)
        env["CUSTOMERSYNC_TEST_TIMEOUT"] = str(worker_timeout(config))
    if config.rate_limit:
        env["CUSTOMERSYNC_TEST_RATE_LIMIT"] = str(config.rate_limit)
        env["CUSTOMERSYNC_TEST_LOG_LEVEL"] = "DEBUG"  # each push that waited for its grant says so
    if index < len(config.clock_skews):
        env["CUSTOMERSYNC_TEST_CLOCK_SKEW"] = str(config.clock_skews[index])
    return env


def worker_timeout(config: Any) -> float:
    """The workers' request timeout: past the lease under (a), so a held request outlives it."""
    from django.conf import settings

    return float(config.lease_seconds + 2) if config.lease_seconds else float(settings.CUSTOMERSYNC["TIMEOUT"])


def faults(config: Any, rng: random.Random) -> dict[str, Any]:
    """One random fault to inject: the usual kinds, and under (a) a request held past the lease."""
    if config.lease_seconds and rng.random() < config.long_request_share:
        return dict(delay=config.lease_seconds + rng.uniform(0.5, 1.5))
    timeout = worker_timeout(config)
    kinds = [
        dict(status=500),
        dict(status=503, headers={"Stripe-Should-Retry": "true"}),
        dict(status=502, body="<html><h1>502 Bad Gateway</h1></html>"),
        dict(status=429, error={"type": "invalid_request_error", "code": "lock_timeout", "message": "busy"}),
        dict(status=429, error={"type": "invalid_request_error", "code": "rate_limit", "message": "slow down"}),
        dict(action="drop"),
        dict(action="drop_after"),
        dict(action="reset"),
        dict(delay=timeout + 0.5),  # the worker times out; the server applies it later
    ]
    return rng.choice(kinds)


def is_long(fault: dict[str, Any], config: Any) -> bool:
    return bool(config.lease_seconds) and fault.get("delay", 0) > config.lease_seconds and "status" not in fault


def tolerant(work: Callable[[], Any], stop: threading.Event | None = None, pause: float = 0.2) -> Any:
    """``work()``, run again while the database is away (this process's connection is replaced)."""
    from django.db import InterfaceError, OperationalError, connection

    while True:
        try:
            return work()
        except (OperationalError, InterfaceError):
            connection.close()
            if stop is not None and stop.is_set():
                return None
            time.sleep(pause)


def restarter(
    config: Any,
    restart_db: Callable[[float, str], None],
    reached: Callable[[int], bool],
    counts: Any,
    rng: random.Random,
    server: Any,
    prefix: str = "/v1/customers/",
) -> Callable[[], None]:
    """The thread body of (d): restart the database at evenly spread points of the edits' progress,
    each time while a request is held at the server, so its answer arrives with the database gone."""

    def run() -> None:
        for k in range(1, config.db_restarts + 1):
            if not reached(k * config.edits // (config.db_restarts + 1)):
                return
            before = len(server.wait_for_arrivals(0, method="POST", path_prefix=prefix))
            server.inject(delay=0.8, path_prefix=prefix)  # the next request waits at the server
            try:
                server.wait_for_arrivals(before + 1, timeout=10, method="POST", path_prefix=prefix)
            except TimeoutError:
                pass  # no request meanwhile: restart anyway
            mode = "immediate" if k % 2 == 0 else "fast"  # every other one a crash
            restart_db(rng.uniform(*config.db_down), mode)
            counts["database restarts"] += 1

    return run


# What the workers' logs show the hazards did (Celery's copy of each line only).
_SEEN = {
    "leases lost under a request": "] Lost the lease of customer",
    "leases taken from dead workers": "] Took over the lease of customer",
    "confirms retried, database away": "] Stripe confirmed ",
    "fleet pauses after a 429": "] Stripe rate-limited us",
    "pushes that waited for a grant": "] Waited ",
}


def seen_in_logs(workers: list[Any]) -> dict[str, int]:
    lines = [line for worker in workers for line in worker.lines if "/MainProcess]" in line]
    return {name: sum(marker in line for line in lines) for name, marker in _SEEN.items()}
