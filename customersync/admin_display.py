"""How the admin shows a customer's sync: the status badge, the last error, what the next push sends, links.

Shared by customersync's own Customer admin and the owner admins of sites
(``owner_admin.OwnerAdminMixin``), so an operator sees the same thing on both
pages. Everything returned is HTML built with ``format_html``: values,
Stripe's texts included, are escaped.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.admin import AdminSite
from django.contrib.admin.utils import quote
from django.db import models
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from .diff import describe
from .exceptions import ParamError
from .models import Customer, SyncStatus
from .push import redact

BADGE_COLOURS = {
    SyncStatus.IN_SYNC: "#2e7d32",
    SyncStatus.PENDING: "#b26a00",
    SyncStatus.FAILED: "#c62828",
    SyncStatus.DELETED: "#616161",
}

# The keys of ``Customer.sync_error``, in the order they are shown.
ERROR_LABELS = (
    ("message", _("Message")),
    ("param", _("Param")),
    ("code", _("Code")),
    ("type", _("Type")),
    ("http_status", _("HTTP status")),
    ("request_id", _("Request id")),
)


def badge(customer: Customer) -> str:
    colour = BADGE_COLOURS.get(customer.sync_status, "#616161")
    return format_html(
        '<span class="customersync-badge customersync-{}" style="color:#fff;background:{};'
        'padding:1px 6px;border-radius:8px">{}</span>',
        customer.sync_status,
        colour,
        customer.get_sync_status_display(),
    )


def error_summary(error: dict[str, Any] | None) -> str:
    """One line: the message and, in brackets, the param."""
    if not error:
        return "-"
    param = f" ({error['param']})" if error.get("param") else ""
    return f"{error.get('message', '')}{param}"


def error_details(error: dict[str, Any] | None, keys: tuple[str, ...] | None = None) -> str:
    """The error's parts as a definition list (``keys``: which ones; all by default)."""
    if not error:
        return "-"
    return format_html(
        '<dl class="customersync-error">{}</dl>',
        format_html_join(
            "",
            "<dt>{}</dt><dd>{}</dd>",
            (
                (label, error[key])
                for key, label in ERROR_LABELS
                if (keys is None or key in keys) and error.get(key) not in (None, "")
            ),
        ),
    )


def pending_changes(customer: Customer, *, redacted: bool = False) -> str:
    """What the next push will send, computed by the function the worker uses.

    ``redacted``: card and bank tokens shown as ``[redacted]``, for pages that
    are not the customer's own.
    """
    if customer.pk is None:
        return "-"
    try:
        params = customer.pending_params()
    except ParamError as err:
        return str(err)
    if not params:
        return str(_("Nothing to send."))
    if redacted:
        params = redact(params)
    rows = format_html_join(
        "",
        "<tr><td><code>{}</code></td><td>{}</td><td>&rarr;</td><td>{}</td></tr>",
        (
            (param, shown(old, _("(empty)")), shown(new, _("(unset)")))
            for param, old, new in describe(customer.stripe_data, params)
        ),
    )
    return format_html(
        '<table class="customersync-pending"><tr><th>{}</th><th>{}</th><th></th><th>{}</th></tr>{}</table>',
        _("parameter"),
        _("in Stripe"),
        _("will be sent"),
        rows,
    )


def admin_link(obj: models.Model | None, admin_site: AdminSite, text: Any = None) -> str:
    """``obj`` (as ``text``) linking to its change page in ``admin_site``; plain text when that site does not
    register its model."""
    if obj is None:
        return "-"
    text = obj if text is None else text
    opts = obj._meta
    if not admin_site.is_registered(type(obj)):
        return format_html("{}", text)
    try:
        url = reverse(
            f"admin:{opts.app_label}_{opts.model_name}_change", args=[quote(obj.pk)], current_app=admin_site.name
        )
    except NoReverseMatch:
        return format_html("{}", text)
    return format_html('<a href="{}">{}</a>', url, text)


def shown(value: Any, empty: Any) -> Any:
    if value is None or value == "":
        return empty
    if isinstance(value, (dict, list)):  # metadata, an address, locales: as Stripe's JSON
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)
