"""Settings for running dj-stripe's ``djstripe_sync_models Customer`` against the fake server (bench only)."""

import os

import stripe

stripe.api_base = os.environ["BENCH_STRIPE_API_BASE"]

SECRET_KEY = "bench-only"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "djstripe"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("BENCH_DJSTRIPE_DB", "customersync_bench_djstripe"),
        "USER": os.environ.get("BENCH_PGUSER", "postgres"),
        "HOST": os.environ.get("BENCH_PGHOST", "127.0.0.1"),
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STRIPE_LIVE_MODE = False
STRIPE_TEST_SECRET_KEY = os.environ["BENCH_STRIPE_KEY"]
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_WEBHOOK_SECRET = "whsec_bench"
