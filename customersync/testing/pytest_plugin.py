"""A pytest fixture for sites that install customersync: ``fake_stripe``.

Loaded automatically by pytest (the ``pytest11`` entry point) and needs
pytest-django. In a test that asks for it:

- the bundled fake Stripe server runs on 127.0.0.1 and the app talks to it
  (``CUSTOMERSYNC`` keeps the site's other keys);
- nothing is published to a broker, in a ``transaction=True`` test too: what
  would have been queued is listed in ``fake_stripe.published``;
- ``fake_stripe.push_pending()`` runs every pending push in the test's
  process, and the server's log holds the exact requests::

      def test_billing_email_reaches_stripe(fake_stripe):
          customer = sync.pull_one(fake_stripe.add_customer(email="old@example.com")["id"])
          customer.email = "new@example.com"
          customer.save()
          fake_stripe.push_pending()
          (request,) = fake_stripe.requests_for("POST")
          assert request.body == b"email=new%40example.com"

A change made in Stripe itself comes back to the site through its webhook
endpoint, signed with the site's secret, as Stripe sends it::

      def test_portal_address_reaches_the_customer(fake_stripe):
          customer = sync.pull_one(fake_stripe.add_customer(name="Ann")["id"])
          event = fake_stripe.change_customer(customer.stripe_id, address={"city": "Paris", "country": "FR"})
          assert fake_stripe.deliver(event).status_code == 200  # through Django's test client
          customer.refresh_from_db()
          assert customer.address["city"] == "Paris"

``deliver`` posts to the endpoint ``reverse`` finds (``customersync:webhook``;
the Connect endpoint for an event with an ``account``; ``platform=`` for
another platform's), signed with that endpoint's secret from
``CUSTOMERSYNC`` (``secret=`` signs with another, and the endpoint refuses
it). ``forward_to(url)`` and ``send_event(event, url)`` send over HTTP, to a
live server (pytest-django's ``live_server``), signed with the secret of the
endpoint the URL's path resolves to. The fixture sets ``WEBHOOK_SECRET`` and
``CONNECT_WEBHOOK_SECRET`` to secrets of its own when the site's settings
have none; a secret the site sets is the one used.

Everything else (``add_customer``, ``inject``, ``requests``, ``wait_for_requests``,
``change_customer``, ``events``, ``deliveries`` ...) is the ``FakeStripeServer``'s own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import pytest

from .events import CONTENT_TYPE, USER_AGENT, Delivery, sign_event
from .handler import RecordedRequest
from .server import FakeStripeServer

KIT_API_KEY = "sk_test_customersync_kit"
# The webhook secrets the fixture sets when the site's settings have none (built, not key-shaped literals).
KIT_WEBHOOK_SECRET = "whsec_" + "customersync_kit"
KIT_CONNECT_WEBHOOK_SECRET = "whsec_" + "customersync_kit_connect"
# Rounds of push_pending: a confirmed push may leave an edit made meanwhile,
# and a retryable error leaves its record to resend.
_MAX_ROUNDS = 20


class FakeStripe:
    """The running fake server, plus what a site's test needs around it."""

    def __init__(self, server: FakeStripeServer) -> None:
        self.server = server
        # Customer pks (and "drain") that would have been published to the broker.
        self.published: list[int | str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.server, name)

    def requests_for(self, method: str, path_prefix: str = "/v1/") -> list[RecordedRequest]:
        """The logged requests of one method (and path prefix), in order."""
        return [r for r in self.server.requests if r.method == method and r.path.startswith(path_prefix)]

    def webhook_path(self, event: Mapping[str, Any] | None = None, *, platform: str = "default") -> str:
        """The path of the site's webhook endpoint for ``event`` (``reverse``): the platform's
        account endpoint, or its Connect endpoint for an event with an ``account``."""
        from django.urls import NoReverseMatch, reverse

        connect = event is not None and event.get("account") is not None
        name = "webhook-connect" if connect else "webhook"
        kwargs = {}
        if platform != "default":
            name, kwargs = f"platform-{name}", {"platform": platform}
        try:
            return reverse(f"customersync:{name}", kwargs=kwargs)
        except NoReverseMatch:
            raise LookupError(
                f"customersync's webhook endpoints (customersync:{name}) are not in the site's URLconf: "
                'add path("stripe/", include("customersync.urls")) to its urlpatterns'
            ) from None

    def webhook_secrets(self, *, platform: str = "default", connect: bool = False) -> tuple[str, ...]:
        """The signing secrets the site's endpoint verifies with (from ``CUSTOMERSYNC``), possibly none."""
        from customersync.accounts import platforms

        found = platforms().get(platform)
        if found is None:
            raise LookupError(f"no platform {platform!r} in CUSTOMERSYNC['PLATFORMS']")
        return found.connect_webhook_secrets if connect else found.webhook_secrets

    def deliver(
        self,
        event: Mapping[str, Any],
        *,
        platform: str = "default",
        secret: str | Iterable[str] | None = None,
    ) -> Any:
        """Send ``event`` to the site's webhook endpoint (``webhook_path``) through Django's test
        client, signed as Stripe signs it, and return the response (200 when the site took it).

        Signed with that endpoint's secrets, or with ``secret``; with none, unsigned (the endpoint
        answers 400, as it must).
        """
        from django.test import Client

        connect = event.get("account") is not None
        path = self.webhook_path(event, platform=platform)
        secrets = self.webhook_secrets(platform=platform, connect=connect) if secret is None else secret
        signed = sign_event(event, secrets)
        signature = {} if signed.signature is None else {"HTTP_STRIPE_SIGNATURE": signed.signature}
        return Client().post(path, signed.body, content_type=CONTENT_TYPE, HTTP_USER_AGENT=USER_AGENT, **signature)

    def send_event(
        self,
        event: dict[str, Any],
        url: str,
        secret: str | Iterable[str] | None = None,
        *,
        timeout: float = 10.0,
    ) -> Delivery:
        """The server's ``send_event`` (over HTTP, once), signed by default with the secrets of the
        endpoint ``url``'s path resolves to."""
        secrets = self._secrets_for(url) if secret is None else secret
        return self.server.send_event(event, url, secrets, timeout=timeout)

    def forward_to(self, url: str | None, secret: str | Iterable[str] | None = None) -> None:
        """The server's ``forward_to`` (each event as it happens, over HTTP; ``None`` stops),
        signed by default with the secrets of the endpoint ``url``'s path resolves to."""
        if url is None:
            self.server.forward_to(None)
            return
        self.server.forward_to(url, self._secrets_for(url) if secret is None else secret)

    def _secrets_for(self, url: str) -> tuple[str, ...]:
        """The secrets of the site's endpoint at ``url``'s path (``resolve``)."""
        from django.urls import Resolver404, resolve

        from customersync.webhooks.views import webhook

        try:
            match = resolve(urlsplit(url).path)
        except Resolver404:
            match = None
        if match is None or match.func is not webhook:
            raise LookupError(f"{url} is no customersync webhook endpoint of the site's URLconf: give secret=")
        platform, connect = match.kwargs.get("platform", "default"), bool(match.kwargs.get("connect"))
        secrets = self.webhook_secrets(platform=platform, connect=connect)
        if not secrets:
            raise LookupError(f"the site's endpoint at {url} has no signing secret: give secret=")
        return secrets

    def push_pending(self) -> list[Any]:
        """Push every customer with something in the outbox, in this process, until none is left.

        A retryable error is retried at once (the same frozen body and key),
        up to ``CUSTOMERSYNC['MAX_RETRIES']``; returns each push's result.
        """
        from customersync import sync
        from customersync.exceptions import RetryLater
        from customersync.models import PendingPush, PushState

        results: list[Any] = []
        for _ in range(_MAX_ROUNDS):
            waiting = PendingPush.objects.filter(state__in=[PushState.PENDING, PushState.SENDING])
            pks = sorted(set(waiting.values_list("customer_id", flat=True)))
            if not pks:
                break
            for pk in pks:
                try:
                    results.append(sync.push(pk))
                except RetryLater:
                    continue  # its record is resent next round
        return results


@pytest.fixture
def fake_stripe(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStripe]:
    """The app pointed at a fake Stripe server on 127.0.0.1, with no broker publishing."""
    from customersync.push import outbox

    with FakeStripeServer(api_key=KIT_API_KEY) as server:
        kit = FakeStripe(server)
        site = getattr(settings, "CUSTOMERSYNC", None) or {}
        settings.CUSTOMERSYNC = {
            **site,
            # The site's own secrets sign the events when it sets them: its endpoint verifies with those.
            "WEBHOOK_SECRET": site.get("WEBHOOK_SECRET") or KIT_WEBHOOK_SECRET,
            "CONNECT_WEBHOOK_SECRET": site.get("CONNECT_WEBHOOK_SECRET") or KIT_CONNECT_WEBHOOK_SECRET,
            "API_KEY": KIT_API_KEY,
            "API_BASE": server.url,
            "PUBLISH_IN_BACKGROUND": False,  # on_commit publishes in the test's thread, into the list
            "COALESCE_SECONDS": 0,
            "RATE_LIMIT": 0,
            "PULL_RATE": 0,
        }

        def enqueue(customer_pk: int, *, countdown: float | None = None) -> bool:
            kit.published.append(customer_pk)
            return True

        monkeypatch.setattr(outbox, "enqueue", enqueue)
        monkeypatch.setattr(outbox, "_publish_drain", lambda: kit.published.append("drain"))
        yield kit
