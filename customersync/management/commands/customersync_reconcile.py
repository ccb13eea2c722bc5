from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from customersync import accounts
from customersync.exceptions import ConfigurationError, Paused, StripeError
from customersync.management import stripe_errors
from customersync.pull import catchup


class Command(BaseCommand):
    help = (
        "Walk the account's customers in Stripe and bring the mirror to them, keeping local edits not yet pushed: "
        "drift set to Stripe's value, customers gone from Stripe marked deleted, missing ones added."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--account",
            default=None,
            help="The Stripe account to reconcile: PLATFORM (its own account) or PLATFORM/acct_... (a connected "
            "account). Default: the default platform's own account.",
        )
        parser.add_argument("--page-size", type=int, default=None, help="Customers per page (1-100).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            account = accounts.resolve(options["account"])
        except ConfigurationError as err:
            raise CommandError(f"--account: {err}") from None
        try:
            figures = catchup.reconcile(account, page_size=options["page_size"])
        except catchup.CursorHeld as err:
            raise CommandError(f"{err} Try again once it ends.") from None
        except Paused as err:
            raise CommandError(f"Reconcile stopped: {err} Run it again; it resumes where it stopped.") from None
        except StripeError as err:
            raise CommandError(
                stripe_errors.sentence(
                    f"Reconcile stopped: {stripe_errors.describe(err)}",
                    stripe_errors.next_step(err),
                    "Run it again: it resumes where it stopped.",
                )
            ) from err
        self.stdout.write(
            self.style.SUCCESS(
                f"Reconciled: {figures.seen} seen, {figures.drifted} drifted, {figures.deleted} deleted, "
                f"{figures.added} added."
            )
        )
