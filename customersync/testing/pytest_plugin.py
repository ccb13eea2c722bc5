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

Everything else (``add_customer``, ``inject``, ``requests``, ``wait_for_requests``
...) is the ``FakeStripeServer``'s own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .handler import RecordedRequest
from .server import FakeStripeServer

KIT_API_KEY = "sk_test_customersync_kit"
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
        settings.CUSTOMERSYNC = {
            **(getattr(settings, "CUSTOMERSYNC", None) or {}),
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
