"""The request log: API requests as they arrive and as their outcomes are decided, and waits on them.

A request is logged once its outcome is decided, just before the response is
written or the connection dropped, so a client never outruns the log. Arrivals
are counted earlier, before any latency or delay.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .messages import RecordedRequest


class _RequestLog:
    """Logged requests (``entries``) and ``arrivals``, guarded by the server's lock."""

    def __init__(self, lock: threading.RLock) -> None:
        self.changed = threading.Condition(lock)
        self.entries: list[RecordedRequest] = []
        self.arrivals: list[RecordedRequest] = []

    def arrived(self, record: RecordedRequest) -> None:
        with self.changed:
            self.arrivals.append(record)
            self.changed.notify_all()

    def decided(self, record: RecordedRequest) -> None:
        with self.changed:
            record.finished = time.monotonic()
            self.entries.append(record)
            self.changed.notify_all()

    def clear(self) -> None:
        with self.changed:
            self.entries.clear()
            self.arrivals.clear()

    def wait_for(
        self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float, what: str
    ) -> list[RecordedRequest]:
        with self.changed:
            if self.changed.wait_for(lambda: predicate(list(self.entries)), timeout):
                return list(self.entries)
            received = self._received()
        raise TimeoutError(f"waited {timeout:g}s for {what}; all requests received:\n{received}")

    def wait_for_requests(
        self, count: int, timeout: float, method: str | None, path_prefix: str | None, *, arrivals: bool
    ) -> list[RecordedRequest]:
        """Wait for ``count`` matching entries (or ``arrivals``); TimeoutError lists what was received."""
        wanted_method = method.upper() if method else None

        def matching() -> list[RecordedRequest]:
            return [
                r
                for r in (self.arrivals if arrivals else self.entries)
                if (wanted_method is None or r.method == wanted_method)
                and (path_prefix is None or r.path.startswith(path_prefix))
            ]

        with self.changed:
            if self.changed.wait_for(lambda: len(matching()) >= count, timeout):
                return matching()
            found = len(matching())
            received = self._received()
        wanted = f"{wanted_method or 'any method'} {path_prefix or ''}*"
        raise TimeoutError(
            f"waited {timeout:g}s for {count} request(s) matching {wanted}, "
            f"got {found}; all requests received:\n{received}"
        )

    def _received(self) -> str:
        return "\n".join(f"  {r.summary()}" for r in self.entries) or "  (none)"
