from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.utils.translation import ngettext

from customersync import sync
from customersync.conf import app_settings


class Command(BaseCommand):
    help = (
        "Queue again every push that waited in the outbox longer than --older-than seconds "
        "(for sites without Celery beat; run it from cron)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--older-than",
            type=float,
            default=None,
            help=f"Seconds (default CUSTOMERSYNC['SWEEP_AFTER'], now {app_settings.get('SWEEP_AFTER')}).",
        )

    def handle(self, *args: Any, older_than: float | None = None, **options: Any) -> None:
        queued = sync.sweep(older_than)
        self.stdout.write(
            ngettext("Queued %(count)d customer.", "Queued %(count)d customers.", queued) % {"count": queued}
        )
