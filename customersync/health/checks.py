"""Checks for django-health-check (4.x), built on ``sync.status()``.

Optional: it needs ``django-health-check``, and nothing else in the app imports this module. A
site lists the checks it wants in its own ``HealthCheckView``::

    from health_check.views import HealthCheckView

    path("health/customersync/", HealthCheckView.as_view(checks=[
        "customersync.health.checks.Backlog",
        "customersync.health.checks.FailedCustomers",
        ("customersync.health.checks.WebhookFreshness", {"max_age": 3600}),
        "customersync.health.checks.CatchUp",
    ]), name="health-customersync")

Each check reads every account (or the one its ``account`` names) and reports the accounts past
its threshold in one message. Thresholds default to the ``STATUS_*`` settings. What crosses the
warning threshold raises ``ServiceWarning``; what crosses the critical one raises
``ServiceUnavailable`` when the check is ``critical=True``, and ``ServiceWarning`` otherwise
(the default). django-health-check 4.x answers 500 for a warning as for an error, so list these
checks in a view of their own, not in the one a load balancer polls.
"""

from __future__ import annotations

import dataclasses

try:
    from health_check.base import HealthCheck
    from health_check.exceptions import ServiceUnavailable, ServiceWarning
except ImportError as err:
    raise ImportError(
        "customersync.health.checks needs django-health-check 4: pip install 'django-health-check>=4.8'."
    ) from err

from django.db import DatabaseError, close_old_connections

from ..conf import app_settings
from .status import CRITICAL, HEALTHY, WARNING, AccountStatus, count, status

__all__ = ["StatusCheck", "Backlog", "FailedCustomers", "WebhookFreshness", "CatchUp"]

Finding = tuple[int, str]


@dataclasses.dataclass
class StatusCheck(HealthCheck):
    """The common part: read the status, judge each account, raise for the worst."""

    account: str | None = None  # one account by its name ("default", "eu/acct_..."); None: all
    critical: bool = False  # False: past the critical threshold is a warning too

    def judge(self, figures: AccountStatus) -> Finding | None:
        raise NotImplementedError

    def window(self) -> float:
        """The seconds of events ``status()`` reads for this check."""
        return 3600

    def run(self) -> None:
        try:
            read = status(self.account, window=self.window())
        except DatabaseError as err:
            raise ServiceUnavailable(f"the sync's status could not be read ({type(err).__name__})") from err
        finally:
            # django-health-check runs a check in a thread of its executor, outside any request:
            # its connection is closed here as a request's would be (CONN_MAX_AGE is honoured).
            close_old_connections()
        findings = [
            (level, f"{figures.account}: {text}")
            for figures in read.accounts
            if (found := self.judge(figures)) is not None
            for level, text in [found]
        ]
        if not findings:
            return
        worst = max(level for level, _ in findings)
        message = "; ".join(text for _, text in findings)
        if worst >= CRITICAL and self.critical:
            raise ServiceUnavailable(message)
        raise ServiceWarning(message)


def _over(value: float | None, limit: float, half: bool = True) -> int:
    if value is None:
        return HEALTHY
    if value > limit:
        return CRITICAL
    return WARNING if half and value > limit / 2 else HEALTHY


@dataclasses.dataclass
class Backlog(StatusCheck):
    """The oldest ready push's wait: critical past ``max_ready_age`` seconds (default
    ``STATUS_MAX_READY_AGE``), a warning past half of it."""

    max_ready_age: float | None = None

    def judge(self, figures: AccountStatus) -> Finding | None:
        limit = float(app_settings.STATUS_MAX_READY_AGE if self.max_ready_age is None else self.max_ready_age)
        level = _over(figures.oldest_ready_age, limit)
        if level == HEALTHY:
            return None
        return level, f"the oldest ready push waited {figures.oldest_ready_age:.0f} s ({figures.ready} ready)"


@dataclasses.dataclass
class FailedCustomers(StatusCheck):
    """Customers whose sync failed: critical above ``max_failed`` (default ``STATUS_MAX_FAILED``),
    a warning for any."""

    max_failed: int | None = None

    def judge(self, figures: AccountStatus) -> Finding | None:
        limit = int(app_settings.STATUS_MAX_FAILED if self.max_failed is None else self.max_failed)
        if not figures.failed:
            return None
        return (
            CRITICAL if figures.failed > limit else WARNING
        ), f"{count(figures.failed, 'customer', 'customers')} failed"


@dataclasses.dataclass
class WebhookFreshness(StatusCheck):
    """No webhook event for longer than ``max_age`` seconds (default ``STATUS_MAX_WEBHOOK_AGE``; when
    both are None the check passes): a warning, critical past twice ``max_age`` or with none
    at all in that span."""

    max_age: float | None = None

    def limit(self) -> float | None:
        limit = app_settings.STATUS_MAX_WEBHOOK_AGE if self.max_age is None else self.max_age
        return float(limit) if limit else None

    def window(self) -> float:
        # The last webhook is looked for within the window: reach past twice the limit.
        return max(3600.0, 2 * (self.limit() or 0) + 60)

    def judge(self, figures: AccountStatus) -> Finding | None:
        limit = self.limit()
        if limit is None:
            return None
        age = figures.last_webhook_age
        if age is None:
            return CRITICAL, f"no webhook event in the last {2 * limit:g} s"
        if age <= limit:
            return None
        return (CRITICAL if age > 2 * limit else WARNING), f"the last webhook event was {age:.0f} s ago"


@dataclasses.dataclass
class CatchUp(StatusCheck):
    """The catch-up's cursor: a warning when the events log cannot reach it (a reconcile is due),
    or when the catch-up last reached the end of the log more than ``max_age`` seconds ago
    (None: not checked); critical past twice ``max_age``."""

    max_age: float | None = None

    def judge(self, figures: AccountStatus) -> Finding | None:
        if figures.catch_up_behind:
            return WARNING, "the events log cannot reach the catch-up's cursor: a reconcile is due"
        age = figures.last_catch_up_age
        if self.max_age is None or age is None or age <= self.max_age:
            return None
        return (CRITICAL if age > 2 * self.max_age else WARNING), f"the catch-up last ended {age:.0f} s ago"
