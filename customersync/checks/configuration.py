"""System checks: the app's settings, and Celery settings that would defeat reliable pushes."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core.checks import Error, Warning, register

from ..conf import DEFAULTS, MISSING, app_settings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# The tasks whose loss with a worker would lose a push. A sweep or a drain lost
# with its worker is harmless: beat runs the sweep again, and the sweep finds
# what a lost drain left in the outbox.
LATE_ACK_TASKS = ("customersync.push_customer",)


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list:
    messages: list = []
    try:
        key = app_settings.get("API_KEY")
        base = app_settings.get("API_BASE")
    except Exception as err:  # ImproperlyConfigured for unknown keys
        return [Error(str(err), id="customersync.E002")]
    if not key:
        # A warning, not an error: the site's own tests, migrations and
        # collectstatic run without the key; pushes and pulls refuse to.
        message, _, hint = MISSING["API_KEY"].partition(": ")
        messages.append(Warning(message + ": pushes and pulls will fail.", hint=hint, id="customersync.W003"))
    parts = urlsplit(base or "")
    if parts.scheme != "https" and parts.hostname not in LOOPBACK:
        messages.append(
            Warning(
                f"CUSTOMERSYNC['API_BASE'] is {base!r}: the API key would travel unencrypted.",
                hint=f"Use https (the default is {DEFAULTS['API_BASE']!r}), or a loopback address for a fake server.",
                id="customersync.W001",
            )
        )
    if isinstance(key, str) and key.startswith(("sk_live_", "rk_live_")) and parts.hostname in LOOPBACK:
        messages.append(
            Warning(
                "A live-mode key is configured with a loopback API_BASE.",
                hint="Use a test-mode key with fake servers.",
                id="customersync.W002",
            )
        )
    return messages + _check_deadline() + _check_status()


def _check_deadline() -> list:
    """The lease must outlast the requests made under it, with room to spare."""
    lease, deadline = app_settings.get("LEASE_SECONDS"), app_settings.get("REQUEST_DEADLINE")
    if not _is_positive_number(deadline):
        return [
            Error(
                f"CUSTOMERSYNC['REQUEST_DEADLINE'] is {deadline!r}, not a positive number of seconds.",
                hint=f"The default is {DEFAULTS['REQUEST_DEADLINE']!r}.",
                id="customersync.E031",
            )
        ]
    least = 2 * deadline + 10
    if not _is_positive_number(lease) or lease < least:
        return [
            Error(
                f"CUSTOMERSYNC['LEASE_SECONDS'] ({lease!r}) is not comfortably above the request deadline "
                f"({deadline:g} s): a customer's lease could expire while its push is still talking to Stripe, "
                "and a second worker would push the same customer at the same time.",
                hint=f"Keep CUSTOMERSYNC['LEASE_SECONDS'] >= 2 * CUSTOMERSYNC['REQUEST_DEADLINE'] + 10: with "
                f"REQUEST_DEADLINE = {deadline:g}, set LEASE_SECONDS to at least {least:g} (it is {lease!r}), "
                "or lower REQUEST_DEADLINE.",
                id="customersync.E030",
            )
        ]
    return []


def _check_status() -> list:
    """The status thresholds are numbers (the webhook age may be None: not checked), so the status,
    its command and the admin's overview can compare figures with them."""
    messages = []
    for key in ("STATUS_MAX_READY_AGE", "STATUS_MAX_FAILED", "STATUS_MAX_WEBHOOK_AGE"):
        value = app_settings.get(key)
        if key == "STATUS_MAX_WEBHOOK_AGE" and value is None:
            continue
        if not _is_number(value) or value < 0:
            messages.append(
                Error(
                    f"CUSTOMERSYNC[{key!r}] is {value!r}, not a number of "
                    f"{'customers' if key == 'STATUS_MAX_FAILED' else 'seconds'} (0 or more).",
                    hint=f"The default is {DEFAULTS[key]!r}.",
                    id="customersync.E032",
                )
            )
    return messages


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@register()
def check_celery(app_configs: Any = None, **kwargs: Any) -> list:
    """Warn about Celery settings of the site that defeat reliable pushes."""
    from celery import current_app
    from django.core.exceptions import ImproperlyConfigured

    from .. import tasks  # noqa: F401  (registers the shared tasks with the site's app)

    try:
        lease, deadline = app_settings.get("LEASE_SECONDS"), app_settings.get("REQUEST_DEADLINE")
    except ImproperlyConfigured:
        return []  # reported by check_settings
    conf = current_app.conf
    messages: list = []
    if conf.task_always_eager:
        messages.append(
            Warning(
                "Celery's task_always_eager is on: pushes run inside the request that saves, "
                "and retries and waits for a busy customer block it.",
                hint="Turn task_always_eager off outside tests.",
                id="customersync.W010",
            )
        )
    if (conf.worker_prefetch_multiplier or 0) != 1:
        messages.append(
            Warning(
                f"Celery's worker_prefetch_multiplier is {conf.worker_prefetch_multiplier}: a worker reserves "
                "pushes it cannot start while other workers idle, and holds them if it dies.",
                hint="Set CELERY_WORKER_PREFETCH_MULTIPLIER = 1 (at least for the workers of the sync queue).",
                id="customersync.W011",
            )
        )
    for name in LATE_ACK_TASKS:
        task = current_app.tasks.get(name)
        if task is not None and not (task.acks_late and task.reject_on_worker_lost):
            messages.append(
                Warning(
                    f"The task {name} does not acknowledge late or is not requeued on worker loss "
                    "(task_annotations?): a push could be lost with its worker.",
                    hint="Leave acks_late and reject_on_worker_lost as the task declares them.",
                    id="customersync.W012",
                )
            )
    visibility = (conf.broker_transport_options or {}).get("visibility_timeout")
    # Held lease, plus a last request still running when it expired.
    longest = lease + deadline + 10 if _is_positive_number(lease) and _is_positive_number(deadline) else None
    if visibility is not None and longest is not None and visibility < longest:
        messages.append(
            Warning(
                f"The broker's visibility_timeout ({visibility}s) is shorter than a push can take "
                f"(up to {longest:g}s): Redis would hand a running push to a second worker.",
                hint=f"Set broker_transport_options['visibility_timeout'] above {longest:g}s (the default is 3600).",
                id="customersync.W013",
            )
        )
    return messages


@register(deploy=True)
def check_worker_database(app_configs: Any = None, **kwargs: Any) -> list:
    """Warn when every push task would open a database connection of its own (``manage.py check --deploy``).

    Celery's Django fix-up closes a worker's connections before and after each
    task, whatever ``CONN_MAX_AGE`` says; only Django's connection pool turns
    that close into a hand-back. SQLite opens a file, not a connection: not warned.
    """
    from django.conf import settings
    from django.db import router

    from ..models import Customer

    alias = router.db_for_write(Customer)
    database = settings.DATABASES.get(alias, {})
    if database.get("ENGINE", "").endswith("sqlite3") or (database.get("OPTIONS") or {}).get("pool"):
        return []
    return [
        Warning(
            f"The database {alias!r} has no connection pool: Celery closes a worker's connection around every "
            "task (whatever CONN_MAX_AGE says), so every push opens a new database connection.",
            hint=f"Set DATABASES[{alias!r}]['OPTIONS'] = {{'pool': True}} (Django's connection pool, "
            "psycopg[pool]) and run the workers with --pool=threads; see docs/operations/celery.md.",
            id="customersync.W014",
        )
    ]


@register()
def check_owner(app_configs: Any = None, **kwargs: Any) -> list:
    """The owner link's settings: a model that exists, and a mapping that parses and can be written back."""
    from django.apps import apps

    from ..exceptions import ConfigurationError
    from ..owner.mapping import Mapping, parse_key, relation_path

    try:
        label = app_settings.get("OWNER_MODEL")
        fields = app_settings.get("OWNER_FIELDS") or {}
        both = app_settings.get("OWNER_BOTH_WAYS") or ()
    except ConfigurationError:
        return []  # reported by check_settings
    if not label:
        if fields or both:
            return [
                Error(
                    "CUSTOMERSYNC['OWNER_FIELDS'] or ['OWNER_BOTH_WAYS'] is set without ['OWNER_MODEL'].",
                    hint="Name the model that owns customers in CUSTOMERSYNC['OWNER_MODEL'].",
                    id="customersync.E020",
                )
            ]
        return []
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError):
        return [
            Error(
                f"CUSTOMERSYNC['OWNER_MODEL'] is {label!r}, which is not an installed model.",
                hint="Use 'app_label.ModelName' of a model in INSTALLED_APPS.",
                id="customersync.E021",
            )
        ]
    messages: list = []
    for key, attr in fields.items():
        try:
            parse_key(key)
        except ValueError:
            messages.append(
                Error(
                    f"CUSTOMERSYNC['OWNER_FIELDS'] has a malformed key {key!r}.",
                    hint="Use a parameter name, or one key of it: 'email', 'address[city]', 'metadata[org_id]'.",
                    id="customersync.E022",
                )
            )
            continue
        if not callable(attr) and not isinstance(attr, str):
            messages.append(
                Error(
                    f"CUSTOMERSYNC['OWNER_FIELDS'][{key!r}] must be an attribute name, a dotted path or a callable.",
                    id="customersync.E023",
                )
            )
        elif isinstance(attr, str) and attr.split(".", 1)[0] != "pk" and not _has_attribute(model, attr):
            messages.append(
                Error(
                    f"CUSTOMERSYNC['OWNER_FIELDS'][{key!r}] is {attr!r}, but {label} has no "
                    f"attribute {attr.split('.', 1)[0]!r}.",
                    id="customersync.E023",
                )
            )
        elif isinstance(attr, str):
            try:
                relation_path(model, attr)
            except ConfigurationError as err:
                messages.append(
                    Error(
                        f"CUSTOMERSYNC['OWNER_FIELDS'][{key!r}] is {attr!r}, which passes through a "
                        f"many-valued relation: {err}",
                        hint="Map a path through foreign keys and one-to-one fields, or a method that picks one value.",
                        id="customersync.E026",
                    )
                )
    if messages:
        return messages
    try:
        mapping = Mapping(model, dict(fields), both)
    except ConfigurationError as err:
        return [
            Error(
                str(err),
                hint="Map parameters the customer object mirrors (customersync.core.params; docs/topics/owners.md).",
                id="customersync.E022",
            )
        ]
    keys = {s.key for s in mapping.sources} | {s.path[0] for s in mapping.sources}
    for name in both:
        if name not in keys:
            messages.append(
                Error(
                    f"CUSTOMERSYNC['OWNER_BOTH_WAYS'] names {name!r}, which OWNER_FIELDS does not map.",
                    id="customersync.E024",
                )
            )
    for source in mapping.both_ways:
        if source.field is None:
            messages.append(
                Error(
                    f"{source.key!r} is both ways, but comes from {source.attr!r}, not a field of "
                    f"{label}: Stripe's changes could not be written back.",
                    hint="Map it from a plain field, or leave it out of OWNER_BOTH_WAYS.",
                    id="customersync.E025",
                )
            )
    return messages


def _has_attribute(model: type, path: str) -> bool:
    head = path.split(".", 1)[0]
    if hasattr(model, head):
        return True
    return any(f.name == head or getattr(f, "attname", None) == head for f in model._meta.get_fields())
