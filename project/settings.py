"""Settings for the demo site (``scripts/demo``), and only for it: never copy them into a site.

Everything that varies comes from the environment:

- ``DATABASE_URL`` (default: SQLite in ``var/``)
- ``CELERY_BROKER_URL`` (default: kombu's ``filesystem://`` transport in ``var/broker``,
  a broker that needs no server)
- ``STRIPE_API_KEY`` (default: a test key the bundled fake server accepts)
- ``STRIPE_API_BASE`` (default: the bundled fake server on 127.0.0.1:12111)
- ``DJANGO_DEBUG``, ``DJANGO_SECRET_KEY``, ``STRIPE_WEBHOOK_SECRET``

The defaults let the demo run with nothing set, on 127.0.0.1, and are unsafe
anywhere else: DEBUG on (its error pages show code and settings), a
``SECRET_KEY`` anyone can read here (sessions and CSRF tokens forgeable), and
a webhook secret anyone can sign events with. With ``DJANGO_DEBUG=0`` the site
refuses to start until ``DJANGO_SECRET_KEY`` and ``STRIPE_WEBHOOK_SECRET`` are
set to values of your own.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("DEMO_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# Demo only: public values, refused below once DEBUG is off.
DEMO_SECRET_KEY = "demo-only-not-secret"
DEMO_WEBHOOK_SECRET = "whsec_demo"

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", DEMO_SECRET_KEY)
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"  # demo only: on unless DJANGO_DEBUG=0
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "customersync",
    # The site's own model that owns customers (CUSTOMERSYNC["OWNER_MODEL"]).
    "project.organizations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
WSGI_APPLICATION = "project.wsgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'demo.sqlite3'}"), conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's connection pool (psycopg[pool]): Celery's Django fix-up closes a worker's connection
    # before and after every task, whatever CONN_MAX_AGE says; with the pool that hands it back
    # instead of closing it, so a push task does not open a connection of its own (see
    # docs/operations/celery.md). The pool is per process: run the worker with --pool=threads, and let the
    # pool hold a connection per thread (psycopg_pool's default holds 4; threads beyond wait).
    DATABASES["default"]["OPTIONS"] = {**DATABASES["default"].get("OPTIONS", {}), "pool": {"max_size": 8}}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A transaction takes SQLite's write lock when it begins, so one that reads and then writes
    # waits for another writer (up to the busy timeout) instead of failing "database is locked".
    DATABASES["default"]["OPTIONS"] = {**DATABASES["default"].get("OPTIONS", {}), "transaction_mode": "IMMEDIATE"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"

CUSTOMERSYNC = {
    "API_KEY": os.environ.get("STRIPE_API_KEY", "sk_test_demo"),
    "API_BASE": os.environ.get("STRIPE_API_BASE", "http://127.0.0.1:12111"),
    # A queue of its own, so pushes never wait behind the site's other tasks.
    "QUEUE": "customersync",
    "WEBHOOK_SECRET": os.environ.get("STRIPE_WEBHOOK_SECRET", DEMO_WEBHOOK_SECRET),
    # Each organization is one Stripe customer; its save sends what changed.
    "OWNER_MODEL": "organizations.Organization",
    "OWNER_FIELDS": {
        "name": "name",
        "email": "billing_email",
        "phone": "phone",
        "address[line1]": "street",
        "address[city]": "city",
        "address[postal_code]": "postal_code",
        "address[country]": "country",
        "metadata[org_id]": "pk",
    },
    # A customer may change its address in Stripe's Billing Portal: a webhook
    # or pull writes it back to the organization (and nothing is pushed back).
    "OWNER_BOTH_WAYS": ["address"],
}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    _broker_dir.mkdir(exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
# A push is acknowledged only once it ran, and requeued if the worker dies
# (customersync's tasks declare both themselves; a site's own tasks benefit too).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A worker reserves one push at a time, so a dead worker holds back nothing.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# The sweeper queues again pushes whose message was lost (broker restart,
# broker down at save time); sites without beat run `customersync_sweep` from cron.
CELERY_BEAT_SCHEDULE = {
    "customersync-sweep": {"task": "customersync.sweep", "schedule": 60.0, "options": {"queue": "customersync"}},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"customersync": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}

# Off the demo's path (DEBUG off), its public secrets are refused rather than used.
if not DEBUG and SECRET_KEY == DEMO_SECRET_KEY:
    raise ImproperlyConfigured(
        "DEBUG is off and SECRET_KEY is the demo's public one: set DJANGO_SECRET_KEY to a secret of your own."
    )
if not DEBUG and CUSTOMERSYNC["WEBHOOK_SECRET"] == DEMO_WEBHOOK_SECRET:
    raise ImproperlyConfigured(
        "DEBUG is off and the webhook secret is the demo's public one: set STRIPE_WEBHOOK_SECRET to your "
        "endpoint's signing secret (whsec_...)."
    )
