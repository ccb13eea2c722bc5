"""The figures of ``sync.status()`` as Prometheus metrics, read when Prometheus scrapes.

Optional: it needs ``prometheus_client`` (``pip install django-customersync[prometheus]``), and
nothing else in the app imports this module. A site registers the collector once, in its own
code (an ``AppConfig.ready()``, or the module its ``/metrics`` view lives in)::

    from customersync.health.prometheus import register

    register()  # the same as REGISTRY.register(CustomersyncCollector())

The collector keeps no count of its own: each scrape reads the database (and the rate budget's
Redis) through ``status()``, so every web process answers the same figures and
``prometheus_client``'s multiprocess mode, which merges in-process counters, is not needed for
them. Every figure is a gauge with an ``account`` label; the ones counted over the status window
(pushes, answers, pauses, lease takeovers, conflicts, webhooks) are the counts of the last
``window`` seconds, which fall as well as rise, and so are gauges, not counters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as err:
    raise ImportError(
        "customersync.health.prometheus needs prometheus_client: install django-customersync[prometheus]."
    ) from err

from ..accounts import configured_secrets
from ..core.redaction import scrub
from .status import AccountStatus, status

__all__ = ["METRICS", "CustomersyncCollector", "register"]

logger = logging.getLogger("customersync")

# name -> (help, the extra label of a figure by key, or None for a single value)
METRICS: dict[str, tuple[str, str | None]] = {
    "customersync_up": ("1 when the figures were read at this scrape, 0 when reading them failed (see the log).", None),
    "customersync_status_window_seconds": ("The window, in seconds, the windowed figures count.", None),
    "customersync_outbox_waiting": ("Outbox records waiting: pending, or frozen and being sent.", None),
    "customersync_outbox_ready": ("Outbox records waiting and due at the scrape.", None),
    "customersync_outbox_oldest_ready_age_seconds": ("Seconds since the oldest ready record's change.", None),
    "customersync_customers_failed": ("Customers whose sync failed.", None),
    "customersync_conflicts": ("Conflicts recorded within the window.", None),
    "customersync_pushes": ("Push requests within the window, by their outcome in the sync log.", "outcome"),
    "customersync_answers": ("Stripe's answers within the window, by HTTP status.", "status"),
    "customersync_rate_limit_pauses": ("429 rate-limit pauses within the window.", None),
    "customersync_lease_takeovers": ("Leases taken from an expired or dead holder within the window.", None),
    "customersync_webhooks": ("Webhook events received within the window, by outcome.", "outcome"),
    "customersync_webhook_bad_signatures": ("Webhook deliveries refused for their signature within the window.", None),
    "customersync_last_webhook_age_seconds": ("Seconds since the last webhook event was received.", None),
    "customersync_last_catch_up_age_seconds": (
        "Seconds since the catch-up last reached the end of the events log.",
        None,
    ),
    "customersync_catch_up_behind": (
        "1 when the events log cannot reach the catch-up's cursor: a reconcile is due.",
        None,
    ),
    "customersync_budget_used_ratio": ("Share of the account's rate budget used in the last second.", None),
    "customersync_level": ("0 healthy, 1 warning, 2 critical, by the STATUS_* settings.", None),
}

# metric -> the AccountStatus field it reads (the single-valued figures)
FIELDS = {
    "customersync_outbox_waiting": "waiting",
    "customersync_outbox_ready": "ready",
    "customersync_outbox_oldest_ready_age_seconds": "oldest_ready_age",
    "customersync_customers_failed": "failed",
    "customersync_conflicts": "conflicts",
    "customersync_rate_limit_pauses": "pauses",
    "customersync_lease_takeovers": "lease_takeovers",
    "customersync_webhook_bad_signatures": "bad_signatures",
    "customersync_last_webhook_age_seconds": "last_webhook_age",
    "customersync_last_catch_up_age_seconds": "last_catch_up_age",
    "customersync_catch_up_behind": "catch_up_behind",
    "customersync_budget_used_ratio": "budget_used",
}
# metric -> the AccountStatus field holding its figures by the extra label
BY_LABEL = {"customersync_pushes": "pushes", "customersync_answers": "answers", "customersync_webhooks": "webhooks"}


def _family(name: str) -> GaugeMetricFamily:
    help_text, extra = METRICS[name]
    if name in ("customersync_up", "customersync_status_window_seconds"):
        return GaugeMetricFamily(name, help_text, labels=[])
    return GaugeMetricFamily(name, help_text, labels=["account", extra] if extra else ["account"])


class CustomersyncCollector(Collector):
    """Reads ``status(window=window)`` at each scrape and yields it as ``customersync_*`` gauges.

    A figure with nothing to measure (no ready record, no webhook yet, no shared budget) has no
    sample for its account, rather than a made-up zero.
    """

    def __init__(self, window: float = 3600) -> None:
        self.window = float(window)

    def describe(self) -> Iterable[Metric]:
        """The metrics' names, without reading anything (a registry asks when the collector is registered)."""
        return [_family(name) for name in METRICS]

    def collect(self) -> Iterator[Metric]:
        families = {name: _family(name) for name in METRICS}
        try:
            accounts = status(window=self.window).accounts
        except Exception as err:  # noqa: BLE001 - a scrape answers, with customersync_up 0
            text = scrub(str(err), configured_secrets())
            logger.warning("customersync could not read its status for Prometheus (%s: %s).", type(err).__name__, text)
            families["customersync_up"].add_metric([], 0)
            yield families["customersync_up"]
            return
        families["customersync_up"].add_metric([], 1)
        families["customersync_status_window_seconds"].add_metric([], self.window)
        for account in accounts:
            self._add(families, account)
        yield from families.values()

    @staticmethod
    def _add(families: dict[str, GaugeMetricFamily], account: AccountStatus) -> None:
        for name, field in FIELDS.items():
            value = getattr(account, field)
            if value is not None:
                families[name].add_metric([account.account], float(value))
        for name, field in BY_LABEL.items():
            for key, count in getattr(account, field).items():
                families[name].add_metric([account.account, str(key)], count)
        families["customersync_level"].add_metric([account.account], account.level())


def register(registry: CollectorRegistry = REGISTRY, *, window: float = 3600) -> CustomersyncCollector:
    """Register a ``CustomersyncCollector`` with ``registry`` (prometheus_client's default
    registry, which django-prometheus's ``/metrics`` and ``start_http_server`` serve) and return it.
    ``window``: the seconds the windowed figures count."""
    collector = CustomersyncCollector(window=window)
    registry.register(collector)
    return collector
