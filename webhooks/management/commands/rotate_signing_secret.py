from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.http import Http404

from flows.models import Flow
from webhooks.signatures import webhook_signing_secret_remove, webhook_signing_secret_rotate


class Command(BaseCommand):
    help = "Give a flow a new webhook signing secret (printed once); the previous one stays valid for the grace period."

    def add_arguments(self, parser):
        parser.add_argument("flow_id", help="The flow's id.")
        parser.add_argument(
            "--grace", type=int, default=None, help="Seconds the previous secret stays valid (default: LANGRUN_SIGNING_SECRET_GRACE)."
        )
        parser.add_argument("--remove", action="store_true", help="Remove the signing secret: requests need no signature again.")

    def handle(self, *args, flow_id: str, grace: int | None, remove: bool, **options):
        try:
            flow = Flow.objects.get(pk=flow_id)
        except (Flow.DoesNotExist, ValidationError) as exc:
            raise CommandError(f"No flow with id {flow_id}.") from exc
        try:
            if remove:
                webhook_signing_secret_remove(flow=flow)
                self.stdout.write(f"Flow {flow.id} no longer requires signed requests.")
                return
            self.stdout.write(webhook_signing_secret_rotate(flow=flow, grace_seconds=grace))
        except Http404 as exc:  # deleted since it was looked up
            raise CommandError(f"No flow with id {flow_id}.") from exc
