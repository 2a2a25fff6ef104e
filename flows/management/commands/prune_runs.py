from django.conf import settings
from django.core.management.base import BaseCommand

from flows.retention import runs_prune


class Command(BaseCommand):
    help = (
        "Delete old runs and clear old raw payloads per the retention settings, in small batches (the same job as the daily "
        "`langrun-prune` schedule). Succeeded runs go after LANGRUN_KEEP_SUCCEEDED_DAYS, failed and cancelled runs after "
        "LANGRUN_KEEP_FAILED_DAYS, the body and payload of any finished run after LANGRUN_KEEP_PAYLOAD_DAYS, and django-q2's "
        "task records after LANGRUN_KEEP_TASKS_DAYS. 0 days keeps forever. Queued and running runs are never touched."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be deleted.")
        parser.add_argument(
            "--succeeded-days", type=int, help=f"Override LANGRUN_KEEP_SUCCEEDED_DAYS ({settings.LANGRUN_KEEP_SUCCEEDED_DAYS})."
        )
        parser.add_argument("--failed-days", type=int, help=f"Override LANGRUN_KEEP_FAILED_DAYS ({settings.LANGRUN_KEEP_FAILED_DAYS}).")
        parser.add_argument("--payload-days", type=int, help=f"Override LANGRUN_KEEP_PAYLOAD_DAYS ({settings.LANGRUN_KEEP_PAYLOAD_DAYS}).")
        parser.add_argument("--batch", type=int, help=f"Runs per delete transaction (LANGRUN_PRUNE_BATCH, {settings.LANGRUN_PRUNE_BATCH}).")

    def handle(self, *args, dry_run: bool, succeeded_days, failed_days, payload_days, batch, **options):
        r = runs_prune(succeeded_days=succeeded_days, failed_days=failed_days, payload_days=payload_days, batch=batch, dry_run=dry_run)
        verb = "Would delete" if dry_run else "Deleted"
        self.stdout.write(f"{verb} {r.succeeded_runs} succeeded run(s) and {r.failed_runs} failed or cancelled run(s).")
        self.stdout.write(f"{'Would clear' if dry_run else 'Cleared'} the payload of {r.payloads_cleared} run(s).")
        self.stdout.write(f"{verb} {r.queue_tasks} django-q2 task record(s) and {r.queue_leftovers} broker leftover(s).")
