"""Interoperability with localstripe (PyPI), a fake Stripe server nobody here wrote.

Only the parameters localstripe supports are exercised (see the contract
README for its gaps: no shipping, balance, invoice_prefix, tax...; it keeps
``metadata[k]=`` as an empty string and replaces ``address`` whole).
"""

import asyncio
import threading

import pytest
import requests
from django.test import override_settings

from customersync import sync
from customersync.models import Customer, SyncStatus
from customersync.stripe.client import StripeClient

pytestmark = pytest.mark.django_db

KEY = "sk_test_interop"


@pytest.fixture(scope="module")
def localstripe_url():
    """localstripe's own aiohttp app, served on 127.0.0.1 from a thread."""
    from aiohttp import web
    from localstripe import resources, server

    # Its stock command listens on every interface and pickles its store to
    # /tmp after each POST; serve the app on loopback and keep it in memory.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(resources.store, "dump_to_disk", lambda: None)
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(server.app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port = runner.addresses[0][1]
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            asyncio.run_coroutine_threadsafe(_shutdown(runner), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()


async def _shutdown(runner):
    # localstripe fires webhook deliveries as background tasks; end them too.
    current = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is not current:
            task.cancel()
    await runner.cleanup()


@pytest.fixture
def localstripe(localstripe_url):
    requests.delete(f"{localstripe_url}/_config/data", timeout=5).raise_for_status()
    with override_settings(CUSTOMERSYNC={"API_KEY": KEY, "API_BASE": localstripe_url}):
        yield StripeClient(KEY, api_base=localstripe_url)


def test_pull_paginates_against_localstripe(localstripe):
    ids = {localstripe.create_customer({"email": f"c{i}@example.com", "name": f"C {i}"})["id"] for i in range(5)}
    stats = sync.pull(page_size=2)
    assert stats.pages == 3
    assert set(Customer.objects.values_list("stripe_id", flat=True)) == ids
    assert all(c.pending_params() == {} for c in Customer.objects.all())


def test_push_supported_params_round_trip(localstripe):
    created = localstripe.create_customer(
        {"email": "old@example.com", "name": "Ann", "metadata": {"plan": "basic"}, "preferred_locales": ["en"]}
    )
    customer = sync.pull_one(created["id"])
    customer.email = "new@example.com"
    customer.name = "Ann Smith"
    customer.description = "VIP & friends / 50%"
    customer.phone = "+33 1 23 45 67 89"
    customer.metadata = {"plan": "pro", "seats": "5"}
    customer.preferred_locales = ["fr", "en"]
    customer.address = {"line1": "1 rue de Rivoli", "city": "Paris", "postal_code": "75001", "country": "FR"}
    customer.save()

    result = sync.push(customer.pk)
    assert result.outcome is sync.Outcome.PUSHED

    remote = localstripe.retrieve_customer(created["id"])
    assert remote["email"] == "new@example.com"
    assert remote["name"] == "Ann Smith"
    assert remote["description"] == "VIP & friends / 50%"
    assert remote["phone"] == "+33 1 23 45 67 89"
    assert remote["metadata"] == {"plan": "pro", "seats": "5"}
    assert remote["preferred_locales"] == ["fr", "en"]
    assert remote["address"]["city"] == "Paris" and remote["address"]["line1"] == "1 rue de Rivoli"

    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.IN_SYNC
    assert customer.pending_params() == {}  # localstripe's answer is now the confirmed state


def test_localstripe_error_is_recorded(localstripe):
    created = localstripe.create_customer({"email": "a@example.com"})
    customer = sync.pull_one(created["id"])
    customer.invoice_prefix = "ABC"  # localstripe does not support it: a 400
    customer.save()
    assert sync.push(customer.pk).outcome is sync.Outcome.FAILED
    customer.refresh_from_db()
    assert customer.sync_status == SyncStatus.FAILED
    assert customer.sync_error["http_status"] == 400 and customer.sync_error["message"]
    assert customer.invoice_prefix == "ABC"
