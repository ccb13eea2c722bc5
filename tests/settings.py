"""Settings for the test suite.

The suite runs on real services, found through the environment:

- ``CUSTOMERSYNC_TEST_DATABASE_URL``: default PostgreSQL at 127.0.0.1:5432, database ``test``
  (pytest-django creates ``test_test`` beside it); ``sqlite:///path`` works too.
- ``CUSTOMERSYNC_TEST_REDIS_URL``: the Celery broker, default Redis 127.0.0.1:6379 db 15.

Worker processes started by the end-to-end tests load these settings too, with
``CUSTOMERSYNC_TEST_DB_NAME`` and ``CUSTOMERSYNC_TEST_API_BASE`` pointing them at
the test database and the fake Stripe server of the running test session.
The outage tests and the soak bench give some workers other values through
``CUSTOMERSYNC_TEST_LEASE_SECONDS``, ``CUSTOMERSYNC_TEST_TIMEOUT``,
``CUSTOMERSYNC_TEST_RATE_LIMIT``, ``CUSTOMERSYNC_TEST_PLATFORMS`` (JSON) and ``CUSTOMERSYNC_TEST_CLOCK_SKEW`` (seconds
this process's ``django.utils.timezone.now`` runs ahead, or behind when negative,
as on a machine whose clock is wrong).

``CUSTOMERSYNC_TEST_OWNER`` picks the site's owner model: ``organization`` (the
default: ``tests.ownerapp.Organization``), ``user`` (a custom user model,
``tests.useraccounts.User``), ``uuid`` or ``code`` (an organization whose primary
key is a UUID, or a string: ``tests.keyowners``), ``team`` (a team whose billing
details live on related models: ``tests.teamapp``) or ``none`` (no owner link, as
a site without the setting has it).
"""

import datetime
import json
import os
from pathlib import Path

import dj_database_url
from django.utils import timezone

BASE_DIR = Path(__file__).resolve().parent.parent
OWNER = os.environ.get("CUSTOMERSYNC_TEST_OWNER", "organization")
# Organizations keyed by something else than a number.
KEY_OWNERS = {"uuid": "keyowners.UuidOrganization", "code": "keyowners.CodeOrganization"}
SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "customersync",
]
if OWNER == "user":
    INSTALLED_APPS.insert(0, "tests.useraccounts")
    AUTH_USER_MODEL = "useraccounts.User"
elif OWNER == "organization":
    INSTALLED_APPS.insert(0, "tests.ownerapp")
elif OWNER in KEY_OWNERS:
    INSTALLED_APPS.insert(0, "tests.keyowners")
elif OWNER == "team":
    INSTALLED_APPS.insert(0, "tests.teamapp")
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
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

DATABASE_URL = os.environ.get("CUSTOMERSYNC_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
if OWNER != "organization" and not DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Another owner setup has other tables: a test database of its own.
    DATABASES["default"]["NAME"] += f"_{OWNER}"
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not memory, so worker processes can share the test database; beside the URL's file,
    # so runs given different URLs never share one.
    _named = Path(DATABASES["default"]["NAME"] or BASE_DIR / "tests.sqlite3")
    DATABASES["default"]["TEST"] = {"NAME": str(_named.with_name(f"{_named.stem}-test-{OWNER}.sqlite3"))}
    # As a site on SQLite should (the README's quick start): a transaction that reads and then
    # writes waits for another writer instead of failing "database is locked".
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE"}
if os.environ.get("CUSTOMERSYNC_TEST_DB_NAME"):
    DATABASES["default"]["NAME"] = os.environ["CUSTOMERSYNC_TEST_DB_NAME"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

TEST_API_KEY = os.environ.get("CUSTOMERSYNC_TEST_API_KEY", "sk_test_customersync_tests")
CUSTOMERSYNC = {
    "API_KEY": TEST_API_KEY,
    # Nothing listens on port 9: a test that forgets the fake server fails loudly.
    "API_BASE": os.environ.get("CUSTOMERSYNC_TEST_API_BASE", "http://127.0.0.1:9"),
    "TIMEOUT": float(os.environ.get("CUSTOMERSYNC_TEST_TIMEOUT", "2.0")),
    # Within LEASE_SECONDS' margin (2 * 5 + 10 <= 30: check E030).
    "REQUEST_DEADLINE": float(os.environ.get("CUSTOMERSYNC_TEST_REQUEST_DEADLINE", "5.0")),
    "MAX_RETRIES": int(os.environ.get("CUSTOMERSYNC_TEST_MAX_RETRIES", "2")),
    "LEASE_SECONDS": float(os.environ.get("CUSTOMERSYNC_TEST_LEASE_SECONDS", "30")),
    "WEBHOOK_SECRET": "whsec_test_secret",
    "PULL_RATE": 0,  # tests pull as fast as the fake server answers
    "RATE_LIMIT": float(os.environ.get("CUSTOMERSYNC_TEST_RATE_LIMIT", "50")),
    "RATE_LIMIT_ALGORITHM": os.environ.get("CUSTOMERSYNC_TEST_RATE_ALGORITHM", "paced"),
    # Tests wait on events, not on a coalescing window (bench measures that).
    "COALESCE_SECONDS": float(os.environ.get("CUSTOMERSYNC_TEST_COALESCE", "0")),
    # Other Stripe platforms (JSON), for workers of the several-accounts tests.
    "PLATFORMS": json.loads(os.environ.get("CUSTOMERSYNC_TEST_PLATFORMS", "{}")),
}
_ADDRESS = {
    "address[line1]": "street",
    "address[city]": "city",
    "address[postal_code]": "postal_code",
    "address[country]": "country",
}
if OWNER == "organization" or OWNER in KEY_OWNERS:
    CUSTOMERSYNC["OWNER_MODEL"] = KEY_OWNERS.get(OWNER, "ownerapp.Organization")
    CUSTOMERSYNC["OWNER_FIELDS"] = {
        "name": "name",
        "email": "billing_email",
        "phone": "phone",
        "description": "customer_description",
        **_ADDRESS,
        "metadata[org_id]": "pk",
    }
    CUSTOMERSYNC["OWNER_BOTH_WAYS"] = ["address", "phone"]
elif OWNER == "team":
    CUSTOMERSYNC["OWNER_MODEL"] = "teamapp.Team"
    CUSTOMERSYNC["OWNER_FIELDS"] = {
        "name": "customer_name",
        "email": "profile.billing_email",
        "phone": "billing_contact.phone",
        "metadata[region]": "billing_contact.office.region",
        **_ADDRESS,
        "metadata[plan]": "plan_label",
        "metadata[team_id]": "pk",
    }
    CUSTOMERSYNC["OWNER_BOTH_WAYS"] = ["address"]
elif OWNER == "user":
    CUSTOMERSYNC["OWNER_MODEL"] = AUTH_USER_MODEL
    CUSTOMERSYNC["OWNER_FIELDS"] = {
        "name": "get_full_name",
        "email": "billing_email",
        "phone": "phone",
        "description": "customer_description",
        **_ADDRESS,
        "metadata[user_id]": "pk",
    }
    CUSTOMERSYNC["OWNER_BOTH_WAYS"] = ["address", "phone"]

CELERY_BROKER_URL = os.environ.get("CUSTOMERSYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# Results are kept so tests can wait for a task to finish (an event, not a sleep).
CELERY_RESULT_BACKEND = os.environ.get("CUSTOMERSYNC_TEST_RESULT_URL", "redis://127.0.0.1:6379/15")
CELERY_TASK_IGNORE_RESULT = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "customersync": {
            "handlers": ["console"],
            "level": os.environ.get("CUSTOMERSYNC_TEST_LOG_LEVEL", "INFO"),
            "propagate": True,
        }
    },
}

CLOCK_SKEW = float(os.environ.get("CUSTOMERSYNC_TEST_CLOCK_SKEW", "0") or 0)
if CLOCK_SKEW:
    # Patched before any app module is imported, so model defaults pick it up too.
    _true_now = timezone.now

    def _skewed_now(skew=datetime.timedelta(seconds=CLOCK_SKEW)):
        return _true_now() + skew

    timezone.now = _skewed_now
