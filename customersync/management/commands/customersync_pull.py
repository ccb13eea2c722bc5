from __future__ import annotations

import datetime as dt
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime

from customersync import sync
from customersync.exceptions import StripeError, Unstorable


def _since(value: str) -> dt.datetime:
    if value.isdigit():
        return dt.datetime.fromtimestamp(int(value), tz=dt.timezone.utc)
    parsed = parse_datetime(value)
    if parsed is None and (day := parse_date(value)):
        parsed = dt.datetime.combine(day, dt.time.min)
    if parsed is None:
        raise ValueError(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


class Command(BaseCommand):
    help = (
        "Import or refresh customers from Stripe, 100 a page, keeping local edits not yet pushed. "
        "A whole walk also marks customers gone from Stripe as deleted there."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("stripe_ids", nargs="*", metavar="STRIPE_ID", help="Refresh only these customers.")
        parser.add_argument("--since", type=_since, help="Only customers created since (date, datetime or unix time).")
        parser.add_argument("--limit", type=int, help="Stop after this many customers.")
        parser.add_argument("--resume", action="store_true", help="Continue an interrupted pull where it stopped.")
        parser.add_argument("--page-size", type=int, default=None, help="Customers per page (1-100).")

    def handle(self, *args: Any, stripe_ids: list[str], **options: Any) -> None:
        started = time.monotonic()
        tty = self.stdout.isatty() if hasattr(self.stdout, "isatty") else sys.stdout.isatty()
        verbose = options["verbosity"] >= 1

        def progress(stats: sync.PullStats) -> None:
            rate = stats.pulled / max(time.monotonic() - started, 1e-9)
            if tty:
                bar = "#" * (stats.pages % 20) + "-" * (20 - stats.pages % 20)
                self.stdout.write(f"\r[{bar}] {stats.pulled} customers  {rate:,.0f}/s", ending="")
                self.stdout.flush()

        try:
            if stripe_ids:
                unstorable = []
                for stripe_id in stripe_ids:
                    try:
                        sync.pull_one(stripe_id)
                    except Unstorable as err:
                        unstorable.append(str(err))
                        continue
                    self.stdout.write(f"{stripe_id}: refreshed")
                if unstorable:
                    raise CommandError("\n".join(unstorable))
                return
            stats = sync.pull(
                page_size=options["page_size"],
                since=options["since"],
                limit=options["limit"],
                resume=options["resume"],
                progress=progress if verbose else None,
            )
        except StripeError as err:
            if tty:
                self.stdout.write("")
            raise CommandError(f"Pull stopped: {err}. Run again with --resume to continue.") from err
        if tty and verbose:
            self.stdout.write("")
        elapsed = time.monotonic() - started
        self.stdout.write(
            self.style.SUCCESS(
                f"Pulled {stats.pulled} customers in {elapsed:.1f}s ({stats.pulled / max(elapsed, 1e-9):,.0f}/s): "
                f"{stats.created} new, {stats.updated} refreshed, {stats.kept_local} with local edits kept, "
                f"{stats.conflicts} conflicts, {stats.deleted} gone from Stripe."
            )
        )
        if stats.skipped:
            ids = list(stats.unstorable)
            self.stderr.write(
                f"Skipped {stats.skipped} customers holding a value the mirror cannot store "
                f"(a warning in the log names each one and its fields): {', '.join(ids[:20])}"
                + (" ..." if len(ids) > 20 else "")
            )
