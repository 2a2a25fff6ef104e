from django.core.management.base import BaseCommand, CommandError

from langrun.models import User
from langrun.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for a user and print it (the key is shown only this once, as the last line)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label for the key.")

    def handle(self, *args, username: str, name: str, **options):
        try:
            user = User.objects.get(username=username)
        except User.DoesNotExist as exc:
            raise CommandError(f"No user named {username!r}.") from exc
        new = api_key_create(user=user, name=name)
        self.stderr.write(f"Created API key {new.api_key.prefix}… for {username}. Store it now: it cannot be shown again.")
        self.stdout.write(new.key)
