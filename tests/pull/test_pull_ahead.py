"""The pull walks Stripe's pages in a thread while it stores the page before: in order, at most
two pages ahead, and never past a page that failed, whichever side failed."""

from __future__ import annotations

import threading

import pytest

from customersync import sync
from customersync.exceptions import APIConnectionError
from customersync.models import Customer
from customersync.pull import pages
from customersync.stripe.client import StripeClient

pytestmark = pytest.mark.django_db


def walkers():
    return [t for t in threading.enumerate() if t.name == "customersync pull walk"]


def test_a_page_that_fails_to_store_stops_the_walk(stripe, monkeypatch):
    stripe.seed(100)
    real, stored = pages.store_page, []

    def second_fails(objects, stats, **kwargs):
        if stored:
            raise RuntimeError("the database went away")
        stored.append([obj["id"] for obj in objects])
        real(objects, stats, **kwargs)

    monkeypatch.setattr(pages, "store_page", second_fails)
    with pytest.raises(RuntimeError, match="went away"):
        sync.pull(page_size=10)
    assert not walkers()  # ended before the error left the pull
    assert sorted(Customer.objects.values_list("stripe_id", flat=True)) == sorted(stored[0])
    listed = [r for r in stripe.requests if r.method == "GET" and r.path == "/v1/customers"]
    assert 2 <= len(listed) <= 4  # the two pages it met, and at most two ahead


def test_an_error_walking_is_raised_after_the_pages_before_it(stripe, monkeypatch):
    stripe.seed(50)
    real, calls = StripeClient.list_customers, []

    def third_fails(self, **kwargs):
        calls.append(kwargs.get("starting_after"))
        if len(calls) == 3:
            raise APIConnectionError("network down")
        return real(self, **kwargs)

    monkeypatch.setattr(StripeClient, "list_customers", third_fails)
    progress = []
    with pytest.raises(APIConnectionError, match="network down"):
        sync.pull(page_size=10, progress=lambda stats: progress.append(stats.created))
    assert progress == [10, 20] and Customer.objects.count() == 20
    assert len(calls) == 3 and not walkers()
