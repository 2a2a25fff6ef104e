from django.core.management.base import BaseCommand

from flows.services.sweep import flow_runs_sweep


class Command(BaseCommand):
    help = "Run the periodic sweep once: recover interrupted runs, enqueue due retries, lost runs and runs waiting for a free key, expire idempotency keys."

    def handle(self, *args, **options):
        counts = flow_runs_sweep()
        self.stdout.write(", ".join(f"{name}: {count}" for name, count in counts.items()))
