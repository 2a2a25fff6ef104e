from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand

from flows.services.sweep import flow_runs_requeue_stale


class Command(BaseCommand):
    help = "Enqueue again the runs still queued whose last enqueue is older than a threshold (what the periodic sweep does)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=int,
            default=settings.LANGRUN_REQUEUE_AFTER,
            help="Seconds since the last enqueue (default: LANGRUN_REQUEUE_AFTER).",
        )

    def handle(self, *args, older_than: int, **options):
        count = flow_runs_requeue_stale(older_than=timedelta(seconds=older_than))
        self.stdout.write(f"Re-enqueued {count} queued run(s).")
