import uuid
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from flows.models import Flow
from flows.services.sweep import flow_runs_requeue


class Command(BaseCommand):
    help = (
        "Requeue runs by status, flow and age. queued: enqueue again (a lost task). running: back to queued and enqueue "
        "(a worker that died; make --older-than longer than any run can take). failed: replay as new linked runs. "
        "`requeue_stale_runs` stays the exact equivalent of the periodic sweep."
    )

    def add_arguments(self, parser):
        parser.add_argument("--status", choices=["queued", "running", "failed"], default="queued", help="Which runs (default: queued).")
        parser.add_argument("--flow", help="Only this flow: its id, or an endpoint name (must be unambiguous across users).")
        parser.add_argument(
            "--older-than",
            type=int,
            default=None,
            help="Seconds since the run was last enqueued (queued), started (running) or finished (failed). "
            "Default: 0, or LANGRUN_RUN_TIMEOUT + 60 for running runs.",
        )
        parser.add_argument("--limit", type=int, default=1000, help="At most this many runs (default: 1000).")
        parser.add_argument("--dry-run", action="store_true", help="Only list the runs that would be requeued.")

    def handle(self, *args, status, flow, older_than, limit, dry_run, **options):
        from django.conf import settings

        if older_than is None:
            older_than = settings.LANGRUN_RUN_TIMEOUT + 60 if status == "running" else 0
        flow_obj = self._flow(flow) if flow else None
        runs = flow_runs_requeue(status=status, flow=flow_obj, older_than=timedelta(seconds=older_than), limit=limit, dry_run=dry_run)
        for run in runs:
            self.stdout.write(f"  {run.id}  flow {run.flow_id}")
        action = {"failed": "replayed", "queued": "enqueued again", "running": "requeued"}[status]
        self.stdout.write(f"{'Would have ' if dry_run else ''}{action} {len(runs)} {status} run(s).")

    def _flow(self, ident: str) -> Flow:
        try:
            return Flow.objects.get(pk=uuid.UUID(ident))
        except (ValueError, Flow.DoesNotExist):
            pass
        matches = list(Flow.objects.filter(endpoint_name=ident)[:2])
        if len(matches) != 1:
            raise CommandError(f"No flow {ident!r}." if not matches else f"Several users have a flow named {ident!r}; pass its id.")
        return matches[0]
