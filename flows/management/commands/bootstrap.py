import json
import secrets

from django.core.management.base import BaseCommand
from django.db import transaction

from flows.examples import GREETING_GRAPH
from flows.services.flows import flow_create
from langrun.models import User
from langrun.services import api_key_create


class Command(BaseCommand):
    help = "On an empty database: create an admin user, a demo flow and an API key, and print how to call it."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    def handle(self, *args, base_url: str, **options):
        base_url = base_url.rstrip("/")
        if User.objects.exists():
            self.stdout.write(
                f"langrun is set up. Admin: {base_url}/admin/  (new API key: manage.py create_api_key <username>, or langrun create-api-key <username>)"
            )
            return
        password = secrets.token_urlsafe(12)
        with transaction.atomic():
            admin = User.objects.create_superuser("admin", email="", password=password)
            flow_create(
                user=admin, name="Demo: greeting", endpoint_name="demo", data=GREETING_GRAPH, description="Webhook -> Template -> Output"
            )
            key = api_key_create(user=admin, name="demo").key
        body = json.dumps({"name": "Ada"})
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "First start: created an admin user, a demo flow and an API key (shown only now).",
                    f"  Admin:    {base_url}/admin/   user: admin   password: {password}",
                    f"  API key:  {key}",
                    "",
                    "Call the demo flow's webhook:",
                    f"  curl -X POST '{base_url}/api/v1/webhook/demo' -H 'x-api-key: {key}' -H 'Content-Type: application/json' -d '{body}'",
                    "Then open the status_url from the answer:",
                    f"  curl -H 'x-api-key: {key}' '{base_url}/api/v1/runs/<run_id>'",
                    "",
                ]
            )
        )
