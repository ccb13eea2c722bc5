from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import ngettext

from customersync import accounts
from customersync.exceptions import ConfigurationError, Paused, StripeError
from customersync.management import stripe_errors
from customersync.management.commands.customersync_pull import parse_since
from customersync.pull import catchup


class Command(BaseCommand):
    help = (
        "Apply the customer events Stripe logged after the account's cursor, oldest first, as the webhook "
        "applies them (each once). A cursor older than Stripe keeps events is logged and the account reconciled."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--account",
            default=None,
            help="The Stripe account to catch up: PLATFORM (its own account) or PLATFORM/acct_... (a connected "
            "account). Default: the default platform's own account.",
        )
        parser.add_argument(
            "--since",
            type=parse_since,
            help="Apply the events created since then (date, datetime or unix time) instead of those after the "
            "cursor. Without it, an account's first catch-up starts from its newest event.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            account = accounts.resolve(options["account"])
        except ConfigurationError as err:
            raise CommandError(f"--account: {err}") from None
        try:
            stats = catchup.catch_up(account, since=options["since"])
        except catchup.CursorHeld as err:
            raise CommandError(f"{err} Try again once it ends.") from None
        except Paused as err:
            raise CommandError(
                f"Catch-up stopped: {err} Run it again; it goes on after the last event applied."
            ) from None
        except StripeError as err:
            raise CommandError(
                stripe_errors.sentence(
                    f"Catch-up stopped: {stripe_errors.describe(err)}",
                    stripe_errors.next_step(err),
                    "Run it again: it goes on after the last event applied.",
                )
            ) from err
        if stats.started:
            self.stdout.write(self.style.SUCCESS("No cursor yet: the cursor is set on the newest event."))
            return
        applied = ngettext("Applied %(count)d event", "Applied %(count)d events", stats.applied) % {
            "count": stats.applied
        }
        outcomes = ", ".join(f"{count} {said}" for said, count in sorted(stats.outcomes.items()))
        self.stdout.write(self.style.SUCCESS(f"{applied}" + (f" ({outcomes})." if outcomes else ".")))
        if stats.reconciled is not None:
            figures = stats.reconciled
            self.stderr.write(
                "The events log could not reach the cursor (older than Stripe keeps events): the account was "
                f"reconciled: {figures.seen} seen, {figures.drifted} drifted, {figures.deleted} deleted, "
                f"{figures.added} added."
            )
