"""``customersync_status``: its exit status for each state, driven by real state (a backlog of known
age, a refused push, a 429 through the fake server, a bad signature and an old webhook delivered to
the view), per account; and its text and JSON forms."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from django.core.management import call_command

from customersync import sync
from customersync.exceptions import RetryLater
from customersync.models import PendingPush, WebhookEvent
from tests.accounts.test_accounts import SAME_ID, fleet, seed_same_id  # noqa: F401  (fleet: a fixture)
from tests.health import aged, customer_event, deliver
from tests.support import REPO

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[int, str, str]:
    """The command's exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("customersync_status", *args, stdout=out, stderr=err)
    return exited.value.code, out.getvalue(), err.getvalue()


def as_json(*args: str) -> tuple[int, dict]:
    code, out, _ = run("--format", "json", *args)
    return code, json.loads(out)


def edited(stripe, name: str = "Ann"):
    customer = sync.pull_one(stripe.add_customer(name=name)["id"])
    customer.name = f"{name} edited"
    customer.save()
    return customer


def test_healthy_is_0_and_one_screen(stripe):
    sync.push(edited(stripe).pk)
    code, out, err = run()
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("customersync: HEALTHY at ")
    assert lines[2].split() == [
        "ACCOUNT",
        "LEVEL",
        "WAITING",
        "READY",
        "OLDEST",
        "FAILED",
        "PUSHES",
        "429",
        "WEBHOOKS",
        "BADSIG",
        "LASTHOOK",
        "CATCHUP",
        "BUDGET",
    ]
    assert lines[3].split()[:8] == ["default", "healthy", "0", "0", "-", "0", "succeeded:1", "0"]
    assert len(lines) == 4


def test_a_backlog_past_half_the_maximum_warns_and_past_it_is_critical(stripe):
    customer = edited(stripe)
    PendingPush.objects.filter(customer=customer).update(created_at=aged(200), enqueued_at=aged(200))
    code, out, _ = run()  # STATUS_MAX_READY_AGE: 300
    assert code == 1
    assert "  default: warning: oldest ready push waited 200 s (warning above 150 s)" in out.splitlines()
    code, found = as_json("--max-ready-age", "120")
    assert (code, found["state"], found["accounts"][0]["problems"]) == (
        2,
        "critical",
        [{"level": "critical", "text": "oldest ready push waited 200 s (critical above 120 s)"}],
    )
    assert run("--max-ready-age", "1000")[0] == 0


def test_a_failed_customer_warns_and_more_than_max_failed_is_critical(stripe):
    customer = edited(stripe)
    stripe.inject(status=400, error={"type": "invalid_request_error", "message": "No.", "param": "name"})
    assert sync.push(customer.pk).outcome is sync.Outcome.FAILED
    assert run()[0] == 1
    assert run("--max-failed", "0")[0] == 2


def test_a_429_pause_warns(stripe):
    customer = edited(stripe)
    stripe.inject(status=429, error={"type": "invalid_request_error", "code": "rate_limit", "message": "Slow"})
    with pytest.raises(RetryLater):
        sync.push(customer.pk)
    code, found = as_json()
    assert (code, found["accounts"][0]["pauses"], found["accounts"][0]["answers"]) == (1, 1, {"429": 1})


def test_a_bad_signature_warns(stripe, client):
    customer = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    payload = customer_event(customer.stripe_id, "Hook", event_id="evt_bad_sig")
    assert deliver(client, payload, secret="whsec_someone_else").status_code == 400
    code, out, _ = run()
    assert code == 1
    assert "  default: warning: 1 webhook refused for a bad signature" in out.splitlines()


def test_a_stale_webhook_warns_once_its_age_is_checked(stripe, client, settings):
    customer = sync.pull_one(stripe.add_customer(name="Ann")["id"])
    assert deliver(client, customer_event(customer.stripe_id, "Hook", event_id="evt_stale")).status_code == 200
    WebhookEvent.objects.update(received_at=aged(5400))
    assert run()[0] == 0
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "STATUS_MAX_WEBHOOK_AGE": 3600}
    code, out, _ = run()
    assert code == 1 and "  default: warning: last webhook 5400 s ago (warning above 3600 s)" in out.splitlines()


def test_each_account_is_judged_on_its_own(stripe, fleet):  # noqa: F811
    seed_same_id(stripe)
    customers = {label: sync.pull_one(SAME_ID, account=fleet[label]) for label in ("C1", "C2")}
    for customer in customers.values():
        customer.name = "Edited"
        customer.save()
    stripe.inject(status=400, account="acct_C2", error={"type": "invalid_request_error", "message": "No."})
    for customer in customers.values():
        sync.push(customer.pk)
    assert run("--account", "second/acct_C2", "--max-failed", "0")[0] == 2
    assert run("--account", "default/acct_C1", "--max-failed", "0")[0] == 0
    code, found = as_json("--max-failed", "0")
    assert code == 2
    assert [(a["account"], a["level"]) for a in found["accounts"]] == [
        ("default", 0),
        ("default/acct_C1", 0),
        ("second", 0),
        ("second/acct_C2", 2),
    ]


def test_an_unknown_account_is_3():
    code, out, err = run("--account", "nowhere")
    assert (code, out) == (3, "")
    assert err.startswith("customersync: MISCONFIGURED: No account 'nowhere' (known: default")
    code, found = as_json("--account", "nowhere")
    assert (code, found["level"], found["state"]) == (3, 3, "misconfigured")


def test_a_system_check_error_is_3(settings):
    # A lease shorter than a request's deadline allows (check customersync.E030).
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "LEASE_SECONDS": 5}
    code, out, err = run()
    assert (code, out) == (3, "")
    assert "customersync.E030" in err


def test_a_database_away_is_3():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CUSTOMERSYNC_TEST_DATABASE_URL": "postgres://postgres@127.0.0.1:9/nothing_listens_here",
    }
    done = subprocess.run(
        [sys.executable, "-m", "django", "customersync_status", "--format", "json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    found = json.loads(done.stdout)
    assert (found["state"], found["error"].startswith("The database cannot be read: OperationalError")) == (
        "misconfigured",
        True,
    )


def test_the_json_form_holds_the_verdict_the_thresholds_and_every_figure(stripe):
    code, found = as_json("--max-ready-age", "60", "--max-failed", "3")
    assert code == 0
    assert list(found) == ["level", "state", "generated_at", "window", "thresholds", "accounts"]
    assert found["thresholds"] == {"max_ready_age": 60.0, "max_failed": 3, "max_webhook_age": None}
    assert list(found["accounts"][0]) == [
        "account",
        "waiting",
        "ready",
        "oldest_ready_age",
        "failed",
        "conflicts",
        "pushes",
        "answers",
        "pauses",
        "lease_takeovers",
        "webhooks",
        "bad_signatures",
        "last_webhook_age",
        "last_catch_up_age",
        "catch_up_behind",
        "budget_used",
        "level",
        "problems",
    ]
