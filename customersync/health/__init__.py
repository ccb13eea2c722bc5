"""The sync's health at a glance: figures per account, read from what the app stores.

Public names: ``status`` (also ``customersync.sync.status``), ``Status``, ``AccountStatus``,
``UnknownAccount`` and the levels ``HEALTHY``, ``WARNING``, ``CRITICAL`` (module ``status``);
``count_bad_signature`` and ``bad_signatures`` (module ``counters``).

Optional integrations, imported by a site only (each needs its own package, and nothing in the app
imports them): ``prometheus`` (``CustomersyncCollector``, ``register``, ``METRICS``: needs
``prometheus_client``, the ``[prometheus]`` extra) and ``checks`` (``StatusCheck``, ``Backlog``,
``FailedCustomers``, ``WebhookFreshness``, ``CatchUp``: checks for django-health-check 4).
"""

from .status import CRITICAL, HEALTHY, WARNING, AccountStatus, Problem, Status, UnknownAccount, status

__all__ = ["CRITICAL", "HEALTHY", "WARNING", "AccountStatus", "Problem", "Status", "UnknownAccount", "status"]
