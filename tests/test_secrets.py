"""No secret key in any log line, sync-log row, database row, task message or exception text.

A sentinel key is planted in the settings of the test process and of a real
worker; pushes succeed, fail, are retried and are refused; then every place
the app writes to is searched for it.
"""

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from customersync.exceptions import StripeError
from customersync.models import Customer, PendingPush, PushAttempt
from customersync.stripe.client import StripeClient
from tests.conftest import wait_for_tasks
from tests.e2e.test_e2e import mirrored

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SENTINEL = "sk_test_" + "SENTINEL0d1e2a3d4b5e6e7f"  # built, not a key-shaped literal


@pytest.fixture
def sentinel_stripe(stripe, settings):
    stripe.set_api_key(SENTINEL)
    settings.CUSTOMERSYNC = {**settings.CUSTOMERSYNC, "API_KEY": SENTINEL}
    yield stripe
    stripe.set_api_key(settings.TEST_API_KEY)


def redis_dump(client) -> bytes:
    chunks = []
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"string":
            chunks.append(client.get(key) or b"")
        elif kind == b"list":
            chunks.extend(client.lrange(key, 0, -1))
        elif kind == b"hash":
            chunks.extend(k + b"=" + v for k, v in client.hgetall(key).items())
        elif kind == b"set":
            chunks.extend(client.smembers(key))
        elif kind == b"zset":
            chunks.extend(client.zrange(key, 0, -1))
        chunks.append(key)
    return b"\n".join(chunks)


def test_sentinel_key_appears_nowhere(
    sentinel_stripe, start_worker, published_tasks, broker_db, caplog, client, admin_user
):
    stripe = sentinel_stripe
    caplog.set_level("DEBUG")
    caplog.set_level("DEBUG", logger="customersync")
    ok, bad, denied, retried = (mirrored(stripe, name=n) for n in ("ok", "bad", "denied", "retried"))
    stripe.inject(
        status=400,
        error={"type": "invalid_request_error", "message": "Invalid phone", "param": "phone"},
        path_prefix=f"/v1/customers/{bad.stripe_id}",
    )
    stripe.inject(
        status=401,
        error={"type": "invalid_request_error", "message": "Invalid API Key provided."},
        path_prefix=f"/v1/customers/{denied.stripe_id}",
    )
    stripe.inject(status=500, path_prefix=f"/v1/customers/{retried.stripe_id}")
    worker = start_worker(
        "--loglevel=DEBUG",
        env={"CUSTOMERSYNC_TEST_API_KEY": SENTINEL, "CUSTOMERSYNC_TEST_LOG_LEVEL": "DEBUG"},
    )
    for customer in (ok, bad, denied, retried):
        customer.phone = "+1 555 0100"
        customer.save()
    wait_for_tasks(published_tasks)
    assert {c.sync_status for c in Customer.objects.all()} == {"in_sync", "failed"}
    # Stopped here, so the save below queues a push no worker takes: the command meets the 401.
    worker.stop()

    # In-process paths: a refused command and exceptions raised by the client.
    denied.name = "again"
    denied.save()
    stripe.inject(status=401, error={"type": "invalid_request_error", "message": "Invalid API Key provided."})
    out = io.StringIO()
    with pytest.raises(CommandError) as command_error:
        call_command("customersync_push", denied.stripe_id, stdout=out)
    texts = [out.getvalue(), str(command_error.value)]
    for wrong_key in (SENTINEL + "x", SENTINEL):
        stripe.inject(
            status=401,
            method=None,
            error={"type": "invalid_request_error", "message": "no"},
            path_prefix=f"/v1/customers/{ok.stripe_id}",
        )  # not the worker's push of `denied`
        with pytest.raises(StripeError) as info:
            StripeClient(wrong_key, api_base=stripe.url).retrieve_customer(ok.stripe_id)
        texts += [str(info.value), repr(info.value), json.dumps(info.value.as_dict()), repr(info.value.__cause__)]
    texts.append(repr(StripeClient(SENTINEL, api_base=stripe.url)))

    # Admin pages.
    client.force_login(admin_user)
    texts.append(client.get(reverse("admin:customersync_customer_changelist")).content.decode())
    for customer in Customer.objects.all():
        texts.append(client.get(reverse("admin:customersync_customer_change", args=[customer.pk])).content.decode())

    places = {
        "worker log": worker.log,
        "test process log": caplog.text,
        "sync log rows": json.dumps(list(PushAttempt.objects.values()), default=str),
        "outbox rows": json.dumps(list(PendingPush.objects.values()), default=str),
        "customer rows": json.dumps(list(Customer.objects.values()), default=str),
        "redis (task messages, results)": redis_dump(broker_db).decode("utf-8", "replace"),
        "exception and command texts": "\n".join(texts),
    }
    assert PushAttempt.objects.count() >= 5 and "Invalid phone" in places["sync log rows"]
    assert "customersync.push_customer" in places["redis (task messages, results)"] or published_tasks
    leaks = [name for name, text in places.items() if SENTINEL in text or SENTINEL[8:] in text]
    assert leaks == []
