from __future__ import annotations

import json
from typing import Any

from django.core import checks
from django.core.management.base import BaseCommand
from django.db import DatabaseError

from customersync.conf import app_settings
from customersync.exceptions import CustomerSyncError
from customersync.health import CRITICAL, HEALTHY, WARNING, AccountStatus, Status, UnknownAccount, status

MISCONFIGURED = 3
LEVELS = {HEALTHY: "healthy", WARNING: "warning", CRITICAL: "critical", MISCONFIGURED: "misconfigured"}


class Command(BaseCommand):
    help = (
        "Show the sync's figures per account and exit 0 when healthy, 1 on a warning, 2 when critical, "
        "3 when misconfigured (a system check error, the database away, an unknown account): for cron "
        "and container probes."
    )
    # The checks run in handle(): their errors are exit status 3, not Django's 1.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--account", default=None, help="Only this account: default, a platform, or platform/acct_..."
        )
        parser.add_argument("--format", choices=["text", "json"], default="text", help="text (default) or json.")
        parser.add_argument(
            "--max-ready-age",
            type=float,
            default=None,
            help="Seconds the oldest ready push may wait: critical above, warning above half "
            f"(default CUSTOMERSYNC['STATUS_MAX_READY_AGE'], now {app_settings.get('STATUS_MAX_READY_AGE')}).",
        )
        parser.add_argument(
            "--max-failed",
            type=int,
            default=None,
            help="Failed customers allowed: critical above, warning above 0 "
            f"(default CUSTOMERSYNC['STATUS_MAX_FAILED'], now {app_settings.get('STATUS_MAX_FAILED')}).",
        )

    def handle(
        self,
        *args: Any,
        account: str | None = None,
        max_ready_age: float | None = None,
        max_failed: int | None = None,
        **options: Any,
    ) -> None:
        shape = options.get("format") or "text"
        found: Status | None = None
        problem: str | None = None
        try:
            problem = _misconfiguration()
            found = None if problem else status(account)
            ready_age: float = app_settings.STATUS_MAX_READY_AGE if max_ready_age is None else max_ready_age
            failed: int = app_settings.STATUS_MAX_FAILED if max_failed is None else max_failed
        except UnknownAccount as err:
            problem = str(err)
        except DatabaseError as err:
            problem = f"The database cannot be read: {type(err).__name__}: {err}".strip()
        except CustomerSyncError as err:
            problem = f"Misconfigured: {err}"
        if problem is not None or found is None:
            if shape == "json":
                self.stdout.write(json.dumps({"level": MISCONFIGURED, "state": "misconfigured", "error": problem}))
            else:
                self.stderr.write(f"customersync: MISCONFIGURED: {problem}")
            raise SystemExit(MISCONFIGURED)
        thresholds = {
            "max_ready_age": float(ready_age),
            "max_failed": int(failed),
            "max_webhook_age": app_settings.STATUS_MAX_WEBHOOK_AGE,
        }
        level = found.level(ready_age, failed)
        if shape == "json":
            self.stdout.write(json.dumps(_json(found, level, thresholds), indent=2))
        else:
            self.stdout.write(_text(found, level, thresholds))
        raise SystemExit(level)


def _misconfiguration() -> str | None:
    """The system checks' errors (the app's and the site's), as one message; None when there are none."""
    errors = [m for m in checks.run_checks() if m.is_serious() and not m.is_silenced()]
    if not errors:
        return None
    return "; ".join(f"{m.id}: {m.msg}" for m in errors)


def _json(found: Status, level: int, thresholds: dict[str, Any]) -> dict[str, Any]:
    accounts = []
    for item in found.accounts:
        problems = item.problems(thresholds["max_ready_age"], thresholds["max_failed"])
        accounts.append(
            {
                **item.to_dict(),
                "level": max((p.level for p in problems), default=HEALTHY),
                "problems": [{"level": LEVELS[p.level], "text": p.text} for p in problems],
            }
        )
    return {
        "level": level,
        "state": LEVELS[level],
        "generated_at": found.generated_at.isoformat(),
        "window": found.window,
        "thresholds": thresholds,
        "accounts": accounts,
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{key}:{n}" for key, n in counts.items()) or "-"


def _row(item: AccountStatus, level: int) -> list[str]:
    return [
        item.account,
        LEVELS[level],
        str(item.waiting),
        str(item.ready),
        _age(item.oldest_ready_age),
        str(item.failed),
        _counts(item.pushes),
        str(item.pauses),
        _counts(item.webhooks),
        "-" if item.bad_signatures is None else str(item.bad_signatures),
        _age(item.last_webhook_age),
        _age(item.last_catch_up_age) + (" BEHIND" if item.catch_up_behind else ""),
        "-" if item.budget_used is None else f"{item.budget_used:.0%}",
    ]


HEADER = [
    "ACCOUNT",
    "LEVEL",
    "WAITING",
    "READY",
    "OLDEST",
    "FAILED",
    "PUSHES",
    "429",
    "WEBHOOKS",
    "BADSIG",
    "LASTHOOK",
    "CATCHUP",
    "BUDGET",
]


def _text(found: Status, level: int, thresholds: dict[str, Any]) -> str:
    """One screen: the verdict, a line per account, then what is wrong."""
    rows, problems = [HEADER], []
    for item in found.accounts:
        listed = item.problems(thresholds["max_ready_age"], thresholds["max_failed"])
        rows.append(_row(item, max((p.level for p in listed), default=HEALTHY)))
        problems += [f"  {item.account}: {LEVELS[p.level]}: {p.text}" for p in listed]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = [
        f"customersync: {LEVELS[level].upper()} at {found.generated_at:%Y-%m-%d %H:%M:%S %Z} "
        f"(events: the last {found.window:g} s; critical above {thresholds['max_ready_age']:g} s ready "
        f"or {thresholds['max_failed']} failed)",
        "",
        *("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows),
    ]
    if problems:
        lines += ["", "Problems:", *problems]
    return "\n".join(lines)
