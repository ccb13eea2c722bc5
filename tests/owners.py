"""The test site's owner model, whichever ``CUSTOMERSYNC_TEST_OWNER`` picked.

Tests speak in customer parameters (``field("email")``) so one test covers
both owner setups: an organization and a custom user model.
"""

from __future__ import annotations

import itertools

from django.apps import apps
from django.conf import settings

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
