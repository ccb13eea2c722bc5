from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from customersync import sync
from customersync.exceptions import StripeError


class Command(BaseCommand):
    help = "Import or refresh every customer of the Stripe account (local edits not yet pushed are kept)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--page-size", type=int, default=None, help="Customers per page (1-100).")

    def handle(self, *args: Any, page_size: int | None = None, **options: Any) -> None:
        started = time.monotonic()

        def progress(stats: sync.PullStats) -> None:
            done = stats.created + stats.updated
            rate = done / max(time.monotonic() - started, 1e-9)
            self.stdout.write(f"page {stats.pages}: {done} customers ({rate:.0f}/s)")

        try:
            stats = sync.pull(page_size=page_size, progress=progress if options["verbosity"] >= 1 else None)
        except StripeError as err:
            raise CommandError(f"Pull stopped: {err}") from err
        self.stdout.write(
            self.style.SUCCESS(
                f"Pulled {stats.created + stats.updated} customers: {stats.created} new, {stats.updated} refreshed, "
                f"{stats.kept_local} with local edits kept."
            )
        )
