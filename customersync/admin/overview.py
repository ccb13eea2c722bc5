"""The sync's health in the admin: one card per account with ``sync.status()``'s figures,
each count linked to the list it counts (the failed customers, the conflicts, the outbox's waiting
customers, the webhook events). A page of the customer admin (``customer/overview/``), linked from
the app's index and the customer list.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from ..conf import app_settings
from ..health import CRITICAL, WARNING, AccountStatus, status
from ..health.status import account_name
from ..models import Account, SyncStatus
from .display import when
from .filters import NO_ACCOUNT

TEMPLATE = "admin/customersync/overview.html"
LEVELS = {0: ("healthy", _("Healthy")), WARNING: ("warning", _("Warning")), CRITICAL: ("critical", _("Critical"))}


@dataclass(frozen=True)
class Figure:
    """One line of an account's card: what it is, its value as read, and the list it counts."""

    key: str
    label: str
    text: str
    url: str = ""


@dataclass(frozen=True)
class Card:
    name: str
    level: str
    level_label: str
    figures: tuple[Figure, ...]
    problems: tuple[str, ...]


def age(seconds: float | None, never: str) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago``; ``never`` when there is nothing to measure."""
    if seconds is None:
        return never
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:g} s"


def _changelist(model: str, site_name: str, **params: Any) -> str:
    url = reverse(f"admin:customersync_{model}_changelist", current_app=site_name)
    return f"{url}?{urlencode(params)}" if params else url


def account_filters() -> dict[str, tuple[str, str, str]]:
    """Each account's name in the figures -> (its value in the admin's account filter, its platform,
    its connected account)."""
    found = {"default": (NO_ACCOUNT, "default", "")}
    for row in Account.objects.all():
        found[account_name(row.platform, row.stripe_account)] = (str(row.pk), row.platform, row.stripe_account)
    return found


def card(
    figures: AccountStatus, filters: dict[str, tuple[str, str, str]], site: str, since: dt.datetime, reach: str
) -> Card:
    """One account's card. ``reach``: how far back the last webhook was looked for (``1 h``)."""
    level_key, level_label = LEVELS[figures.level()]
    account, platform, connected = filters.get(figures.account, ("", figures.account, ""))
    by_account = {"account": account} if account else None

    def link(model: str, **params: Any) -> str:
        return "" if by_account is None else _changelist(model, site, **by_account, **params)

    budget = "-" if figures.budget_used is None else f"{figures.budget_used:.0%}"
    catch_up = age(figures.last_catch_up_age, str(_("never")))
    if figures.catch_up_behind:
        catch_up = str(_("%(age)s, behind: a reconcile is due") % {"age": catch_up})
    pushed = figures.pushes.get("succeeded", 0)
    lines = (
        Figure(
            "waiting",
            str(_("Waiting in the outbox")),
            str(_("%(waiting)d (%(ready)d ready)") % {"waiting": figures.waiting, "ready": figures.ready}),
            link("customer", sync_status__exact=SyncStatus.PENDING),
        ),
        Figure("oldest_ready_age", str(_("Oldest ready change")), age(figures.oldest_ready_age, "-")),
        Figure(
            "failed",
            str(_("Failed customers")),
            str(figures.failed),
            link("customer", sync_status__exact=SyncStatus.FAILED),
        ),
        Figure(
            "conflicts",
            str(_("Conflicts")),
            str(figures.conflicts),
            link("conflict", detected_at__gte=since.isoformat()),
        ),
        Figure("pushes", str(_("Pushed")), str(pushed), link("pushattempt", started_at__gte=since.isoformat())),
        Figure(
            "last_webhook",
            str(_("Last webhook")),
            age(figures.last_webhook_age, str(_("none in %(reach)s") % {"reach": reach})),
            _changelist("webhookevent", site, platform__exact=platform, stripe_account=connected),
        ),
        Figure("catch_up", str(_("Last catch-up")), catch_up),
        Figure("budget_used", str(_("Rate budget used")), budget),
    )
    return Card(figures.account, level_key, str(level_label), lines, tuple(p.text for p in figures.problems()))


def overview_view(model_admin: Any, request: HttpRequest) -> TemplateResponse:
    """The page: every account's card, read when it is opened. Needs the permission to view customers."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    read = status()
    filters = account_filters()
    since = read.generated_at - dt.timedelta(seconds=read.window)
    # status() looks for an account's last webhook within the window, or twice STATUS_MAX_WEBHOOK_AGE.
    reach = span(max(read.window, 2 * float(app_settings.STATUS_MAX_WEBHOOK_AGE or 0)))
    site = model_admin.admin_site.name
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Sync health"),
        "subtitle": None,
        "opts": model_admin.opts,
        "app_label": model_admin.opts.app_label,
        "cards": [card(figures, filters, site, since, reach) for figures in read.accounts],
        "generated": when(read.generated_at),
        "window": span(read.window),
    }
    return TemplateResponse(request, TEMPLATE, context)
