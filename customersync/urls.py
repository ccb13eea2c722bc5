"""``path("stripe/", include("customersync.urls"))`` serves the webhook endpoints (``webhooks``):
``stripe/webhook/`` and ``stripe/webhook/connect/`` for the default platform, and
``stripe/webhook/<platform>/`` and ``stripe/webhook/<platform>/connect/`` for each other one."""

from django.urls import path

from .webhooks.views import webhook

app_name = "customersync"
urlpatterns = [
    path("webhook/", webhook, name="webhook"),
    path("webhook/connect/", webhook, {"connect": True}, name="webhook-connect"),
    path("webhook/<slug:platform>/", webhook, name="platform-webhook"),
    path("webhook/<slug:platform>/connect/", webhook, {"connect": True}, name="platform-webhook-connect"),
]
