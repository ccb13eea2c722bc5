from __future__ import annotations

import datetime as dt
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.translation import ngettext

from customersync import accounts, sync
from customersync.exceptions import ConfigurationError, StripeError, Unstorable
from customersync.management import stripe_errors
from customersync.models import PullCursor

CURSOR = "customersync_pull"  # sync.pull's default: where an interrupted walk resumes


def parse_since(value: str) -> dt.datetime:
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
        parser.add_argument(
            "--since", type=parse_since, help="Only customers created since (date, datetime or unix time)."
        )
        parser.add_argument("--limit", type=int, help="Stop after this many customers.")
        parser.add_argument("--resume", action="store_true", help="Continue an interrupted pull where it stopped.")
        parser.add_argument("--page-size", type=int, default=None, help="Customers per page (1-100).")
        parser.add_argument(
            "--account",
            default=None,
            help="The Stripe account to pull: PLATFORM (its own account) or PLATFORM/acct_... (a connected account). "
            "Default: the default platform's own account.",
        )

    def handle(self, *args: Any, stripe_ids: list[str], **options: Any) -> None:
        started = time.monotonic()
        tty = self.stdout.isatty() if hasattr(self.stdout, "isatty") else sys.stdout.isatty()
        verbose = options["verbosity"] >= 1
        try:
            account = accounts.resolve(options["account"])
        except ConfigurationError as err:
            raise CommandError(f"--account: {err}") from None
        if stripe_ids:
            self.refresh(stripe_ids, account)
            return

        def progress(stats: sync.PullStats) -> None:
            if not (tty and verbose):
                return
            rate = stats.pulled / max(time.monotonic() - started, 1e-9)
            bar = "#" * (stats.pages % 20) + "-" * (20 - stats.pages % 20)
            pulled = ngettext("%(count)d customer", "%(count)d customers", stats.pulled) % {"count": stats.pulled}
            self.stdout.write(f"\r[{bar}] {pulled}  {rate:,.0f}/s", ending="")
            self.stdout.flush()

        try:
            stats = sync.pull(
                page_size=options["page_size"],
                since=options["since"],
                limit=options["limit"],
                resume=options["resume"],
                progress=progress if verbose else None,
                account=account,
            )
        except StripeError as err:
            if tty and verbose:
                self.stdout.write("")
            resume = ""
            cursor = CURSOR if account is None else f"{CURSOR}:{account.pk}"
            kept = PullCursor.objects.filter(name=cursor).exclude(starting_after="").first()
            if kept is not None:  # a place to continue from
                resume = (
                    ngettext(
                        "%(count)d customer was pulled before it stopped",
                        "%(count)d customers were pulled before it stopped",
                        kept.pulled,
                    )
                    % {"count": kept.pulled}
                    + ": run it again with --resume to continue from there."
                )
            raise CommandError(
                stripe_errors.sentence(
                    f"Pull stopped: {stripe_errors.describe(err)}", stripe_errors.next_step(err), resume
                )
            ) from err
        if tty and verbose:
            self.stdout.write("")
        elapsed = time.monotonic() - started
        pulled = ngettext("Pulled %(count)d customer", "Pulled %(count)d customers", stats.pulled) % {
            "count": stats.pulled
        }
        conflicts = ngettext("%(count)d conflict", "%(count)d conflicts", stats.conflicts) % {"count": stats.conflicts}
        self.stdout.write(
            self.style.SUCCESS(
                f"{pulled} in {elapsed:.1f}s ({stats.pulled / max(elapsed, 1e-9):,.0f}/s): "
                f"{stats.created} new, {stats.updated} refreshed, {stats.kept_local} with local edits kept, "
                f"{conflicts}, {stats.deleted} gone from Stripe."
            )
        )
        if stats.skipped:
            ids = list(stats.unstorable)
            skipped = ngettext(
                "Skipped %(count)d customer holding a value the mirror cannot store",
                "Skipped %(count)d customers holding a value the mirror cannot store",
                stats.skipped,
            ) % {"count": stats.skipped}
            self.stderr.write(
                f"{skipped} (a warning in the log names each one and its fields): {', '.join(ids[:20])}"
                + (" ..." if len(ids) > 20 else "")
            )

    def refresh(self, stripe_ids: list[str], account: Any = None) -> None:
        """Refresh these customers; an id Stripe does not know is reported and the others still refreshed."""
        missing: dict[str, StripeError] = {}
        unstorable: list[str] = []
        for stripe_id in stripe_ids:
            try:
                sync.pull_one(stripe_id, account=account)
            except Unstorable as err:
                unstorable.append(str(err))
                continue
            except StripeError as err:
                if err.http_status != 404:  # the next ones would fail the same way
                    raise self.failed(stripe_id, err) from err
                missing[stripe_id] = err
                continue
            self.stdout.write(f"{stripe_id}: refreshed")
        if unstorable:
            raise CommandError("\n".join(unstorable))
        if len(missing) == 1:
            ((stripe_id, err),) = missing.items()
            raise self.failed(stripe_id, err)
        if missing:
            for stripe_id, err in missing.items():
                self.stderr.write(stripe_errors.sentence(f"{stripe_id}: {stripe_errors.describe(err)}"))
            not_found = ngettext(
                "%(missing)d of %(count)d customer not found in Stripe at %(base)s: %(ids)s",
                "%(missing)d of %(count)d customers not found in Stripe at %(base)s: %(ids)s",
                len(stripe_ids),
            ) % {
                "missing": len(missing),
                "count": len(stripe_ids),
                "base": stripe_errors.api_base(),
                "ids": ", ".join(missing),
            }
            raise CommandError(
                stripe_errors.sentence(
                    not_found,
                    stripe_errors.next_step(next(iter(missing.values())), one_customer=True),
                )
            )

    @staticmethod
    def failed(stripe_id: str, err: StripeError) -> CommandError:
        return CommandError(
            stripe_errors.sentence(
                f"{stripe_id}: {stripe_errors.describe(err)}", stripe_errors.next_step(err, one_customer=True)
            )
        )
