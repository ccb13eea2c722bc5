"""Being a good citizen: migrations, settings, checks."""

import io

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings

from customersync.conf import app_settings


@pytest.mark.django_db
def test_models_match_migrations():
    out = io.StringIO()
    call_command("makemigrations", "customersync", "--check", "--dry-run", stdout=out)


def test_settings_are_read_lazily_and_follow_override_settings():
    with override_settings(CUSTOMERSYNC={"API_KEY": "sk_test_1", "TIMEOUT": 3}):
        assert app_settings.TIMEOUT == 3
        assert app_settings.API_VERSION == "2026-10-28.endive"
    with override_settings(CUSTOMERSYNC={"API_KEY": "sk_test_1"}):
        assert app_settings.TIMEOUT == 20.0


@pytest.mark.parametrize("conf", [{}, {"API_KEY": None}, {"API_KEY": ""}])
def test_missing_key_names_the_setting_and_the_environment_variable(conf):
    with override_settings(CUSTOMERSYNC=conf):
        with pytest.raises(ImproperlyConfigured) as raised:
            _ = app_settings.API_KEY
    assert "CUSTOMERSYNC['API_KEY']" in str(raised.value)
    assert "STRIPE_API_KEY" in str(raised.value)


def test_unknown_setting_is_refused():
    with override_settings(CUSTOMERSYNC={"API_KEY": "sk_test_1", "TIMOUT": 3}):
        with pytest.raises(ImproperlyConfigured, match="TIMOUT"):
            _ = app_settings.TIMEOUT


@pytest.mark.parametrize(
    "conf, expected",
    [
        ({"API_KEY": "sk_test_1"}, set()),
        ({}, {"customersync.W003"}),
        ({"API_KEY": ""}, {"customersync.W003"}),
        ({"API_KEY": "sk_test_1", "API_BASE": "http://api.example.com"}, {"customersync.W001"}),
        ({"API_KEY": "sk_test_1", "API_BASE": "http://127.0.0.1:12111"}, set()),
        ({"API_KEY": "sk_live_" + "x" * 8, "API_BASE": "http://127.0.0.1:12111"}, {"customersync.W002"}),
        ({"API_KEY": "sk_test_1", "BOGUS": 1}, {"customersync.E002"}),
    ],
)
def test_system_checks(conf, expected):
    with override_settings(CUSTOMERSYNC=conf):
        ids = {m.id for m in run_checks(databases=[]) if m.id and m.id.startswith("customersync.")}
    assert ids == expected


@pytest.mark.parametrize(
    "celery_conf, expected",
    [
        ({}, set()),
        ({"task_always_eager": True}, {"customersync.W010"}),
        ({"worker_prefetch_multiplier": 4}, {"customersync.W011"}),
        ({"broker_transport_options": {"visibility_timeout": 30}}, {"customersync.W013"}),
        ({"broker_transport_options": {"visibility_timeout": 7200}}, set()),
    ],
)
def test_celery_checks(celery_conf, expected):
    # Changed as a site changes them: Django settings, which the demo's app reads
    # under the CELERY namespace (before Celery 5.7 they win over app.conf.update()).
    celery_settings = {f"CELERY_{key.upper()}": value for key, value in celery_conf.items()}
    with override_settings(CUSTOMERSYNC={"API_KEY": "sk_test_1"}, **celery_settings):
        ids = {m.id for m in run_checks(databases=[]) if m.id and m.id.startswith("customersync.")}
    assert ids == expected


def test_celery_check_does_not_blame_the_site_for_the_apps_own_housekeeping_tasks():
    from project.celery import app

    # As on a site without CELERY_TASK_REJECT_ON_WORKER_LOST: a lost sweep is run again by beat.
    tasks = [app.tasks["customersync.sweep"], app.tasks["customersync.drain"]]
    saved = [task.reject_on_worker_lost for task in tasks]
    for task in tasks:
        task.reject_on_worker_lost = False
    try:
        with override_settings(CUSTOMERSYNC={"API_KEY": "sk_test_1"}):
            ids = {m.id for m in run_checks(databases=[]) if m.id and m.id.startswith("customersync.")}
    finally:
        for task, value in zip(tasks, saved, strict=True):
            task.reject_on_worker_lost = value
    assert ids == set()


def test_celery_check_sees_tasks_that_lost_late_acks():
    from project.celery import app

    task = app.tasks["customersync.push_customer"]
    task.acks_late = False
    try:
        with override_settings(CUSTOMERSYNC={"API_KEY": "sk_test_1"}):
            ids = {m.id for m in run_checks(databases=[]) if m.id and m.id.startswith("customersync.")}
    finally:
        task.acks_late = True
    assert ids == {"customersync.W012"}


@pytest.mark.parametrize(
    "engine, options, expected",
    [
        ("django.db.backends.postgresql", {}, {"customersync.W014"}),
        ("django.db.backends.postgresql", {"pool": False}, {"customersync.W014"}),
        ("django.db.backends.postgresql", {"pool": True}, set()),
        ("django.db.backends.postgresql", {"pool": {"min_size": 2, "max_size": 8}}, set()),
        ("django.db.backends.sqlite3", {}, set()),
    ],
)
@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES:UserWarning")
def test_deploy_check_warns_when_every_push_task_opens_a_database_connection(engine, options, expected):
    from django.conf import settings

    database = {**settings.DATABASES["default"], "ENGINE": engine, "OPTIONS": options}
    with override_settings(CUSTOMERSYNC={"API_KEY": "sk_test_1"}, DATABASES={"default": database}):
        ids = {m.id for m in run_checks(include_deployment_checks=True, databases=[]) if m.id == "customersync.W014"}
        # Not a warning of plain `manage.py check`: the site's tests and development run without a pool.
        assert not {m.id for m in run_checks(databases=[]) if m.id == "customersync.W014"}
    assert ids == expected
