"""``path("stripe/", include("customersync.urls"))`` serves the webhook at ``stripe/webhook/``."""

from django.urls import path

from .webhooks import webhook

app_name = "customersync"
urlpatterns = [path("webhook/", webhook, name="webhook")]
