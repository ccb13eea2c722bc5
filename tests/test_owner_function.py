"""The owner function (``ownersql``): created by ``migrate`` for the mapping, found by a connection's
first owner save in that save's own statement, and called by the later ones; a mapping without one
keeps the statement planned at each save, and says so once.

What the function writes is tested with every owner-save test in ``test_owner_save.py``, which runs
each both ways.
"""

from __future__ import annotations

import logging

import pytest
from django.core.management.sql import emit_post_migrate_signal
from django.db import connection
from django.test import override_settings

from customersync import ownersql
from customersync.models import Customer, PendingPush
from customersync.owners import mapping
from tests.owners import field, make_owner, owner_model

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the owner function is PostgreSQL's"),
]


def exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regproc(%s) IS NOT NULL", [name])
        return bool(cursor.fetchone()[0])


@pytest.fixture
def new_connection(monkeypatch):
    """``ownersql`` as on a connection it has not seen yet, nothing yet said about missing functions."""
    monkeypatch.setattr(ownersql, "_present", ownersql.weakref.WeakKeyDictionary())
    monkeypatch.setattr(ownersql, "_missing", set())


def linked(**values):
    owner = make_owner(**{field("email"): "billing@acme.test", **values})
    customer = Customer(owner=owner, stripe_id=f"cus_Fn{owner.pk}")
    found = mapping()
    found.apply(customer, found.values(owner))
    customer.save()
    PendingPush.objects.all().delete()
    return owner_model().objects.get(pk=owner.pk), customer


def test_migrate_creates_the_function_of_the_mapping():
    name = ownersql.function(mapping(), connection)[0]
    assert exists(name)  # the test database was made by migrate
    with connection.cursor() as cursor:
        cursor.execute(f"DROP FUNCTION {name}")  # undone with the test's transaction
    assert not exists(name)
    emit_post_migrate_signal(verbosity=0, interactive=False, db=connection.alias)
    assert exists(name)


def test_a_connections_first_owner_save_asks_for_the_function_in_its_one_statement_then_calls_it(
    new_connection, django_assert_num_queries
):
    owner, customer = linked()
    name = ownersql.function(mapping(), connection)[0]
    setattr(owner, field("email"), "first@acme.test")
    with django_assert_num_queries(1) as first:
        owner.save()
    assert first.captured_queries[0]["sql"].startswith("WITH cust AS (UPDATE")
    assert first.captured_queries[0]["sql"].endswith(f"to_regproc('{name}') IS NOT NULL")
    setattr(owner, field("email"), "second@acme.test")
    with django_assert_num_queries(1) as second:
        owner.save()
    assert second.captured_queries[0]["sql"].startswith("WITH own AS (UPDATE")
    assert f'SELECT "{name}"(' in second.captured_queries[0]["sql"]
    stored = Customer.objects.get(pk=customer.pk)
    assert (stored.email, stored.owner_values["email"]) == ("second@acme.test", "second@acme.test")
    assert PendingPush.objects.filter(customer=customer).count() == 1


def test_a_mapping_migrate_has_not_seen_keeps_the_statement_and_says_so_once(
    new_connection, settings, caplog, django_assert_num_queries
):
    fields = {**settings.CUSTOMERSYNC["OWNER_FIELDS"], "metadata[plan]": "plan_note"}
    with override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "OWNER_FIELDS": fields}):
        owner, customer = linked(plan_note="silver")
        name = ownersql.function(mapping(), connection)[0]
        assert not exists(name)
        caplog.set_level(logging.WARNING, logger="customersync")
        for plan in ("gold", "platinum"):
            owner.plan_note = plan
            with django_assert_num_queries(1) as queries:
                owner.save()
            assert queries.captured_queries[0]["sql"].startswith("WITH cust AS (UPDATE")
            assert Customer.objects.get(pk=customer.pk).metadata["plan"] == plan
    assert "to_regproc" not in queries.captured_queries[0]["sql"]  # asked once per connection
    warnings = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    assert len(warnings) == 1 and "manage.py migrate" in warnings[0]


def test_each_mapping_has_a_function_of_its_own(settings):
    before = ownersql.function(mapping(), connection)
    fields = {key: attr for key, attr in settings.CUSTOMERSYNC["OWNER_FIELDS"].items() if key != "phone"}
    with override_settings(CUSTOMERSYNC={**settings.CUSTOMERSYNC, "OWNER_FIELDS": fields}):
        after = ownersql.function(mapping(), connection)
    assert before[0] != after[0] and '"phone"' in before[1] and '"phone"' not in after[1]
