"""`manage.py import_flow FILE --user NAME`: create flows from a Langflow (or langrun) export file."""

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from flows.engine import GraphValidationError
from flows.services.imports import flow_import
from langrun.parsers import json_document_loads


class Command(BaseCommand):
    help = "Import a Langflow flow export (or a langrun export) as flows of a user."

    def add_arguments(self, parser):
        parser.add_argument("file", help="Path to the exported JSON file.")
        parser.add_argument("--user", required=True, help="Username of the flows' owner.")

    def handle(self, *args, file: str, user: str, **options):
        owner = get_user_model().objects.filter(username=user).first()
        if owner is None:
            raise CommandError(f"No user named {user!r}.")
        try:
            document = json_document_loads(Path(file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}") from exc
        except ValueError as exc:
            raise CommandError(f"{file} is not JSON: {exc}") from exc
        try:
            flows = flow_import(user=owner, document=document)
        except GraphValidationError as exc:
            problems = "\n".join(f"  {'.'.join(map(str, i.loc)) or '(file)'}: {i.msg}" for i in exc.issues)
            raise CommandError(f"{file} cannot be imported:\n{problems}") from exc
        for flow in flows:
            self.stdout.write(f"Imported flow {flow.name!r}: id {flow.id}, endpoint {flow.endpoint_name or flow.id}")
