"""The status figures of two accounts as a site's tools read them: through the Prometheus collector
(its exposition parsed back), and through django-health-check's own view and command.

Two accounts of the fake server's first platform (``tests/accounts``): its own account
(``default``) and its connected account ``acct_C1`` (``default/acct_C1``), each driven to
different figures through the real paths (pushes to the fake server, webhooks through the
endpoints, the lease taken over from a dead holder), so a figure read for the wrong account fails.
The second platform's accounts stay at zero.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections import defaultdict

import pytest
from django.core.management import call_command
from django.db import OperationalError
from django.test import override_settings
from django.urls import path
from django.utils import timezone
from health_check.views import HealthCheckView
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from customersync import sync
from customersync.accounts import budget_name
from customersync.exceptions import RetryLater
from customersync.health import counters
from customersync.health.prometheus import METRICS, CustomersyncCollector, register
from customersync.models import Customer, EventCursor, PendingPush, PushLease, WebhookEvent
from customersync.stripe import rate_budget
from tests.accounts.test_accounts import fleet as fleet  # the fixture, for these tests
from tests.support import REPO
from tests.webhooks.test_account_webhooks import event, post

# django-health-check runs each check in a thread of its own: the data must be committed to be seen there.
pytestmark = pytest.mark.django_db(transaction=True)

CONNECT_SECRET = "whsec_default_connect"
REFUSED = {"type": "invalid_request_error", "message": "Refused.", "param": "name"}
CHECKS = [
    "customersync.health.checks.Backlog",
    "customersync.health.checks.FailedCustomers",
    ("customersync.health.checks.WebhookFreshness", {"max_age": 600}),
    ("customersync.health.checks.CatchUp", {"max_age": 3600}),
]
CRITICAL_CHECKS = [("customersync.health.checks.FailedCustomers", {"critical": True, "max_failed": 1})]

# The health view as a site lists it, in a URLconf of the test's own.
urlpatterns = [
    path("health/", HealthCheckView.as_view(checks=CHECKS), name="health"),
    path("health/critical/", HealthCheckView.as_view(checks=CRITICAL_CHECKS), name="health-critical"),
    path(
        "health/webhooks/",
        HealthCheckView.as_view(checks=[("customersync.health.checks.WebhookFreshness", {"max_age": 7200})]),
    ),
    path(
        "health/default/",
        HealthCheckView.as_view(checks=[("customersync.health.checks.FailedCustomers", {"account": "default"})]),
    ),
]


def pulled(stripe, account, server_account: str, name: str) -> Customer:
    return sync.pull_one(stripe.add_customer(account=server_account, name=name)["id"], account=account)


def edited(customer: Customer, name: str) -> Customer:
    customer.name = name
    customer.save()
    return customer


@pytest.fixture
def driven(stripe, fleet, settings, client):
    """default: one push answered 200, one refused (failed), one change waiting 400 s, a webhook
    and a forged one (a bad signature), a catch-up 120 s ago. default/acct_C1: a 429 pause (its
    change waits, backing off), two refused (failed), a lease taken over from a dead worker, a
    webhook and a conflict, the catch-up behind."""
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "PUSH_ON_SAVE": False, "CONNECT_WEBHOOK_SECRET": CONNECT_SECRET}
    c1 = fleet["C1"]

    ok = edited(pulled(stripe, None, "acct_P1", "Ok"), "Ok 2")
    assert sync.push(ok.pk).outcome is sync.Outcome.PUSHED
    refused = edited(pulled(stripe, None, "acct_P1", "Refused"), "Refused 2")
    stripe.inject(status=400, error=REFUSED, account="acct_P1")
    sync.push(refused.pk)
    waiting = edited(pulled(stripe, None, "acct_P1", "Waiting"), "Waiting 2")
    PendingPush.objects.filter(customer=waiting).update(created_at=timezone.now() - dt.timedelta(seconds=400))
    assert post(client, "default", False, event("Webhook", event_id="evt_default_1")).status_code == 200
    redis = rate_budget.shared_redis()
    if counted := list(redis.scan_iter(f"{counters.PREFIX}:*")):
        redis.delete(*counted)  # other tests' refusals, kept a day in the same Redis
    forged = post(client, "default", False, event("Forged", event_id="evt_forged"), secret="whsec_not_ours")
    assert forged.status_code == 400
    EventCursor.objects.create(key="default", caught_up_at=timezone.now() - dt.timedelta(seconds=120))

    paused = edited(pulled(stripe, c1, "acct_C1", "Paused"), "Paused 2")
    for i in range(2):
        customer = edited(pulled(stripe, c1, "acct_C1", f"Refused {i}"), f"Refused {i} 2")
        stripe.inject(status=400, error=REFUSED, account="acct_C1")
        sync.push(customer.pk)
    orphan = edited(pulled(stripe, c1, "acct_C1", "Orphan"), "Orphan 2")
    past = timezone.now() - dt.timedelta(seconds=60)
    PushLease.objects.update_or_create(customer=orphan, defaults={"owner": "gone:1:x", "expires_at": past})
    assert sync.push(orphan.pk).outcome is sync.Outcome.PUSHED
    stripe.inject(status=429, account="acct_C1")  # last: it pauses the account's requests
    with pytest.raises(RetryLater):
        sync.push(paused.pk)
    # Stripe's value of the paused customer's name, while its own edit waits: a conflict.
    remote = {**event("Paused in Stripe", account="acct_C1", event_id="evt_c1_1")}
    remote["data"]["object"]["id"] = paused.stripe_id
    assert post(client, "default", True, remote).status_code == 200
    EventCursor.objects.create(key=str(c1.pk), account=c1, behind="evt_gone is past Stripe's 30 days")
    yield fleet
    # The pause is Redis's, not the test database's: the next test's requests must not wait it out.
    rate_budget.shared_redis().delete(rate_budget.budget(budget_name(c1)).penalty_key)


def scrape(collector: CustomersyncCollector) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The exposition of a registry holding only ``collector``, parsed back: metric -> labels -> value."""
    registry = CollectorRegistry()
    registry.register(collector)
    found: dict[str, dict] = defaultdict(dict)
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return found


def of(found: dict, metric: str, account: str, **labels: str) -> float | None:
    return found[metric].get(tuple(sorted({"account": account, **labels}.items())))


def by_label(found: dict, metric: str, account: str, label: str) -> dict[str, float]:
    return {
        dict(key)[label]: value for key, value in found[metric].items() if dict(key)["account"] == account and value
    }


def test_each_accounts_figures_read_through_the_collector(driven):
    found = scrape(CustomersyncCollector(window=3600))
    assert found["customersync_up"] == {(): 1.0}
    assert found["customersync_status_window_seconds"] == {(): 3600.0}
    default, c1 = "default", "default/acct_C1"
    assert {m: of(found, m, default) for m in ("customersync_outbox_waiting", "customersync_outbox_ready")} == {
        "customersync_outbox_waiting": 1,
        "customersync_outbox_ready": 1,
    }
    assert 399 < of(found, "customersync_outbox_oldest_ready_age_seconds", default) < 460
    # The paused customer's change waits, backing off: waiting, not ready, no ready age.
    assert (of(found, "customersync_outbox_waiting", c1), of(found, "customersync_outbox_ready", c1)) == (1, 0)
    assert of(found, "customersync_outbox_oldest_ready_age_seconds", c1) is None
    assert (of(found, "customersync_customers_failed", default), of(found, "customersync_customers_failed", c1)) == (
        1,
        2,
    )
    assert by_label(found, "customersync_pushes", default, "outcome") == {"succeeded": 1, "failed": 1}
    assert by_label(found, "customersync_answers", default, "status") == {"200": 1, "400": 1}
    assert by_label(found, "customersync_pushes", c1, "outcome") == {"succeeded": 1, "failed": 2, "retry": 1}
    assert by_label(found, "customersync_answers", c1, "status") == {"200": 1, "400": 2, "429": 1}
    assert (of(found, "customersync_rate_limit_pauses", default), of(found, "customersync_rate_limit_pauses", c1)) == (
        0,
        1,
    )
    assert (of(found, "customersync_lease_takeovers", default), of(found, "customersync_lease_takeovers", c1)) == (0, 1)
    assert (of(found, "customersync_conflicts", default), of(found, "customersync_conflicts", c1)) == (0, 1)
    assert sum(by_label(found, "customersync_webhooks", default, "outcome").values()) == 1
    assert sum(by_label(found, "customersync_webhooks", c1, "outcome").values()) == 1
    # A bad signature counts for the platform's own account.
    assert (
        of(found, "customersync_webhook_bad_signatures", default),
        of(found, "customersync_webhook_bad_signatures", c1),
    ) == (1, 0)
    assert of(found, "customersync_last_webhook_age_seconds", default) < 60
    assert of(found, "customersync_last_webhook_age_seconds", c1) < 60
    assert 119 < of(found, "customersync_last_catch_up_age_seconds", default) < 180
    assert of(found, "customersync_last_catch_up_age_seconds", c1) is None
    assert (of(found, "customersync_catch_up_behind", default), of(found, "customersync_catch_up_behind", c1)) == (0, 1)
    # Levels: default's backlog (400 s) is past STATUS_MAX_READY_AGE (300 s): critical; acct_C1's
    # failures (2, not above STATUS_MAX_FAILED), its pause and its catch-up: warnings.
    assert (of(found, "customersync_level", default), of(found, "customersync_level", c1)) == (2, 1)
    # The second platform's accounts: counted apart, at zero.
    for other in ("second", "second/acct_C2"):
        assert of(found, "customersync_outbox_waiting", other) == 0
        assert of(found, "customersync_customers_failed", other) == 0
        assert by_label(found, "customersync_pushes", other, "outcome") == {}


def test_the_collector_says_what_status_says_for_every_account(driven):
    found = scrape(CustomersyncCollector(window=3600))
    read = sync.status(window=3600)
    for figures in read.accounts:
        assert of(found, "customersync_outbox_waiting", figures.account) == figures.waiting
        assert of(found, "customersync_customers_failed", figures.account) == figures.failed
        assert by_label(found, "customersync_webhooks", figures.account, "outcome") == {
            k: v for k, v in figures.webhooks.items() if v
        }
        # The budget's use is of the last second: each read has its own, and both have one or neither.
        used = of(found, "customersync_budget_used_ratio", figures.account)
        assert (used is None) is (figures.budget_used is None)
        assert used is None or 0 <= used <= 1


def test_a_window_that_ends_before_the_events_counts_none_of_them(driven):
    # A millisecond: the pushes of the fixture are outside it.
    found = scrape(CustomersyncCollector(window=0.001))
    assert found["customersync_status_window_seconds"] == {(): 0.001}
    assert by_label(found, "customersync_pushes", "default/acct_C1", "outcome") == {}
    assert of(found, "customersync_customers_failed", "default/acct_C1") == 2  # state, not an event


def test_the_collector_describes_without_reading_and_registers_once(django_assert_num_queries):
    registry = CollectorRegistry()
    with django_assert_num_queries(0):
        collector = register(registry, window=60)
    assert {m.name for m in collector.describe()} == set(METRICS)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        register(registry)


def test_a_failed_read_answers_up_0_and_logs_it_without_secrets(caplog, monkeypatch, settings):
    from customersync.health import prometheus

    def broken(**kwargs):
        raise RuntimeError(f"database away (key {settings.CUSTOMERSYNC['API_KEY']})")

    monkeypatch.setattr(prometheus, "status", broken)
    found = scrape(CustomersyncCollector())
    assert found == {"customersync_up": {(): 0.0}}
    assert "RuntimeError: database away (key [redacted])" in caplog.text
    assert settings.CUSTOMERSYNC["API_KEY"] not in caplog.text


def test_the_app_imports_without_prometheus_client_and_the_module_names_the_extra():
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import django; django.setup()\n"
        "import customersync, customersync.health, customersync.sync\n"
        "try:\n    import customersync.health.prometheus\n"
        "except ImportError as err:\n    print(err)\n"
    )
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "install django-customersync[prometheus]" in done.stdout


# -- django-health-check --------------------------------------------------------------------------


def results(client, url: str = "/health/") -> tuple[int, dict[str, str]]:
    with override_settings(ROOT_URLCONF=__name__):
        response = client.get(url, {"format": "json"})
    return response.status_code, {key.partition("(")[0]: value for key, value in response.json().items()}


def test_nothing_wrong_is_every_check_ok(client, settings):
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "PUSH_ON_SAVE": False}
    Customer.objects.create(stripe_id="cus_Fresh", name="Ann")  # a change recorded at this moment: ready, not old
    assert post(client, "default", False, event("Webhook", event_id="evt_fresh")).status_code == 200
    assert results(client) == (
        200,
        {"Backlog": "OK", "FailedCustomers": "OK", "WebhookFreshness": "OK", "CatchUp": "OK"},
    )


def test_each_check_reports_its_accounts_through_the_view(driven, client):
    status, found = results(client)
    assert status == 500  # django-health-check 4 answers 500 for warnings too
    assert found["Backlog"].startswith("Warning: default: the oldest ready push waited 4")
    assert found["Backlog"].endswith("s (1 ready)") and "acct_C1" not in found["Backlog"]
    assert found["FailedCustomers"] == "Warning: default: 1 customer failed; default/acct_C1: 2 customers failed"
    # Both webhooks are recent; the second platform's accounts never had one.
    assert found["WebhookFreshness"] == (
        "Warning: second: no webhook event in the last 1200 s; second/acct_C2: no webhook event in the last 1200 s"
    )
    assert found["CatchUp"] == (
        "Warning: default/acct_C1: the events log cannot reach the catch-up's cursor: a reconcile is due"
    )


def test_a_critical_check_past_its_threshold_is_unavailable(driven, client):
    status, found = results(client, "/health/critical/")
    assert (status, found["FailedCustomers"]) == (
        500,
        "Unavailable: default: 1 customer failed; default/acct_C1: 2 customers failed",
    )


def test_one_accounts_check_reads_that_account_only(driven, client):
    assert results(client, "/health/default/") == (500, {"FailedCustomers": "Warning: default: 1 customer failed"})


def test_the_openmetrics_format_and_the_command_see_the_same(driven, client, capsys, settings):
    # The command is the app's: a site that runs it has health_check in INSTALLED_APPS.
    with override_settings(ROOT_URLCONF=__name__, INSTALLED_APPS=[*settings.INSTALLED_APPS, "health_check"]):
        metrics = client.get("/health/", {"format": "openmetrics"}).content.decode()
        with pytest.raises(SystemExit) as exit_status:
            call_command("health_check", "health", "--no-http")
    assert 'django_health_check_status{check="FailedCustomers",critical="False"} 0' in metrics
    assert exit_status.value.code == 1
    assert (
        "FailedCustomers(account=None, critical=False, max_failed=None): Warning: default: 1" in capsys.readouterr().out
    )


def test_a_database_error_is_unavailable_naming_its_kind(client, monkeypatch):
    from customersync.health import checks

    def broken(account=None, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(checks, "status", broken)
    status, found = results(client)
    assert status == 500
    assert set(found.values()) == {"Unavailable: the sync's status could not be read (OperationalError)"}


def test_webhook_freshness_reads_back_past_twice_its_limit(client):
    """A limit of 2 h: an event 3 h old is a warning (not "none"), one 5 h old is past twice it."""
    assert post(client, "default", False, event("Webhook", event_id="evt_old")).status_code == 200
    found = {}
    for hours in (1, 3, 5):
        WebhookEvent.objects.update(received_at=timezone.now() - dt.timedelta(hours=hours))
        found[hours] = results(client, "/health/webhooks/")[1]["WebhookFreshness"]
    assert found == {
        1: "OK",
        3: "Warning: default: the last webhook event was 10800 s ago",
        5: "Warning: default: no webhook event in the last 14400 s",
    }
