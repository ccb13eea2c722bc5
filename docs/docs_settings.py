"""The smallest site that lets autodoc import customersync's modules (no database is opened)."""

SECRET_KEY = "docs-only"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "customersync",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
CUSTOMERSYNC = {"API_KEY": ""}
