"""The test site's owner model, whichever ``CUSTOMERSYNC_TEST_OWNER`` picked.

Tests speak in customer parameters (``field("email")``) so one test covers
every owner setup: an organization (keyed by a number, a UUID or a string) and
a custom user model.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager

from django.apps import apps
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

_names = itertools.count(1)


def owner_model():
    return apps.get_model(settings.CUSTOMERSYNC["OWNER_MODEL"])


def field(param: str) -> str:
    """The owner's field a customer parameter comes from (``"email"`` -> ``"billing_email"``)."""
    return settings.CUSTOMERSYNC["OWNER_FIELDS"][param]


def is_user() -> bool:
    return settings.OWNER == "user"


def make_owner(name: str = "Acme", **values):
    """A saved owner; ``values`` are owner fields."""
    model = owner_model()
    if is_user():
        values.setdefault("username", f"user{next(_names)}")
        values.setdefault("first_name", name)
    else:
        values.setdefault("name", name)
    return model.objects.create(**values)


def set_name(owner, name: str) -> None:
    if is_user():
        owner.first_name = name
    else:
        owner.name = name


def identity(owner) -> str:
    return f"{owner._meta.label_lower}:{owner.pk}"


def owner_metadata_key() -> str:
    """The site's own metadata key for the owner's pk."""
    return "metadata[user_id]" if is_user() else "metadata[org_id]"


class SaveQueries:
    """What an owner save cost: its queries, and those its customers' own saves made."""

    def __init__(self) -> None:
        self.total = 0
        self.in_customer_saves = 0
        self.customer_saves = 0

    @property
    def own(self) -> int:
        """The owner save's queries outside its customers' saves."""
        return self.total - self.in_customer_saves


@contextmanager
def owner_save_queries():
    """Count the queries of the block's owner save (``SaveQueries``). Its promise: the owner's own
    ``UPDATE``, one read of its customers when a mapped value changed (none else), then each changed
    customer's own ``save()`` (whose cost is the save's promise, ``tests/models/test_save_queries.py``)."""
    from customersync.models import Customer

    counts = SaveQueries()
    original = Customer.save

    def save(self, *args, **kwargs):
        before = len(captured.captured_queries)
        try:
            return original(self, *args, **kwargs)
        finally:
            counts.customer_saves += 1
            counts.in_customer_saves += len(captured.captured_queries) - before

    with CaptureQueriesContext(connection) as captured:
        Customer.save = save
        try:
            yield counts
        finally:
            Customer.save = original
    counts.total = len(captured.captured_queries)
