"""How the admin shows a customer's sync: the status badge, the last error, what the next push sends, links.

Shared by customersync's own Customer admin and the owner admins of sites
(``admin.owner.OwnerAdminMixin``), so an operator sees the same thing on both
pages. Everything returned is HTML built with ``format_html``: values,
Stripe's texts included, are escaped.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote as url_quote

from django.contrib.admin import AdminSite
from django.contrib.admin.utils import quote
from django.db import models
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _

from ..core.params import Role
from ..exceptions import ParamError
from ..models import Customer, SyncStatus
from ..push.send import redact
from .params import Row, change_rows, readable, sent_lines

DASHBOARD = "https://dashboard.stripe.com"

# The "in Stripe" column of values Stripe does not keep on the customer.
ONCE_LABELS = {Role.WRITE_ONCE: _("(sent once)"), Role.OPTION: _("(request option)")}

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
    """One line: the message and, in brackets, the param; cut to the column, the whole text on hover."""
    if not error:
        return "-"
    param = f" ({error['param']})" if error.get("param") else ""
    return truncated(f"{error.get('message', '')}{param}")


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

    One row per parameter that changes (an object's changed parts, each; a
    note says the object is sent whole and which parts go unchanged with it).
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
    rows = []
    for row in change_rows(customer.stripe_data, params):
        if row.whole is not None:
            rows.append(format_html('<tr class="customersync-whole"><td colspan="4">{}</td></tr>', whole_note(row)))
            continue
        old = ONCE_LABELS.get(row.role) or shown(row.old, _("(empty)"))
        rows.append(
            format_html(
                "<tr><td><code>{}</code></td><td>{}</td><td>&rarr;</td><td>{}</td></tr>",
                row.param,
                old,
                shown(row.new, _("(unset)")),
            )
        )
    return format_html(
        '<table class="customersync-pending"><tr><th>{}</th><th>{}</th><th></th><th>{}</th></tr>{}</table>',
        _("parameter"),
        _("in Stripe"),
        _("will be sent"),
        mark_safe("".join(rows)),  # each row built by format_html
    )


def whole_note(row: Row) -> str:
    """``address`` is sent whole, with its unchanged ``country`` and ``line1``."""
    if not row.whole:
        return format_html("<code>{}</code> {}", row.param, _("is sent whole."))
    return format_html(
        "<code>{}</code> {} {}.",
        row.param,
        _("is sent whole, with its unchanged"),
        format_html_join(", ", "<code>{}</code>", ((part,) for part in row.whole)),
    )


def sent(params: dict[str, Any]) -> str:
    """What a push sent, as the panel names it: a parameter and its value a line (tokens as stored: redacted)."""
    if not params:
        return "-"
    return format_html(
        '<ul class="customersync-sent">{}</ul>',
        format_html_join(
            "",
            "<li><code>{}</code>{} {}</li>",
            (
                (
                    name,
                    format_html(' <span class="customersync-quiet">{}</span>', _("(whole)")) if whole else "",
                    shown(value, _("(unset)")),
                )
                for name, value, whole in sent_lines(params)
            ),
        ),
    )


def when(value: dt.datetime | None, empty: str = "-") -> str:
    """A moment, the one way the admin shows them: ``2026-11-25 21:26:52 UTC``, in the active time zone."""
    if value is None:
        return empty
    if timezone.is_aware(value):
        local = timezone.localtime(value)
        zone = local.tzname() or local.strftime("%z")
    else:
        local, zone = value, timezone.get_current_timezone_name()
    return format_html(
        '<time class="customersync-time" datetime="{}">{} {}</time>',
        value.isoformat(),
        local.strftime("%Y-%m-%d %H:%M:%S"),
        zone,
    )


def dashboard_url(customer: Customer) -> str | None:
    """The customer's page in Stripe's dashboard, in its mode (test or live); None before it exists in Stripe."""
    if not customer.stripe_id:
        return None
    mode = "" if customer.livemode else "test/"
    # A connected account's customer lives under that account in the platform's dashboard.
    account = customer.account.stripe_account if customer.account_id is not None else ""
    where = f"{url_quote(account, safe='')}/" if account else ""
    return f"{DASHBOARD}/{where}{mode}customers/{url_quote(customer.stripe_id, safe='')}"


def stripe_link(customer: Customer, *, mode: bool = True) -> str:
    """The Stripe id, linked to the customer in Stripe's dashboard; ``mode``: and the mode it lives in."""
    url = dashboard_url(customer)
    if url is None:
        return str(_("Not in Stripe yet"))
    kind, label = ("live", _("live mode")) if customer.livemode else ("test", _("test mode"))
    link = format_html(
        '<a class="customersync-dashboard" href="{}" target="_blank" rel="noopener noreferrer" title="{}">'
        "<code>{}</code></a>",
        url,
        _("Open this customer in Stripe's dashboard (%(mode)s)") % {"mode": label},
        customer.stripe_id,
    )
    if not mode:
        return link
    return format_html('{} <span class="customersync-mode customersync-mode-{}">{}</span>', link, kind, label)


def truncated(text: Any, empty: str = "-", *, title: Any = None) -> str:
    """One line cut to the column's width; the whole text (or ``title``) on hover."""
    if text is None or text == "":
        return empty
    return format_html('<span class="customersync-truncate" title="{}">{}</span>', title or text, text)


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
    """A value as an operator reads it (lists and objects as text, never JSON)."""
    return readable(value, empty)


def unsent(problems: dict[str, list[str]]) -> str:
    """The owner's mapped values not sent, each with why Stripe would refuse it."""
    return format_html_join(
        mark_safe("<br>"), "{}: {}", ((key, " ".join(messages)) for key, messages in sorted(problems.items()))
    )
