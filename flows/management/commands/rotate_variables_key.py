from django.core.management.base import BaseCommand, CommandError

from flows.services.variables import variables_rotate_key


class Command(BaseCommand):
    help = (
        "Encrypt every stored credential again with the first key of LANGRUN_VARIABLES_KEY (a comma-separated list: the "
        "first key encrypts, every key decrypts). Put the new key first, keep the old ones after it, run this command, "
        "then drop the old keys. Credentials no listed key opens are named and left as they are."
    )

    def handle(self, *args, **options):
        rotated, unreadable = variables_rotate_key()
        self.stdout.write(f"Re-encrypted {rotated} credential(s) with the first key.")
        for variable in unreadable:
            self.stderr.write(f"Cannot decrypt {variable.name!r} (id {variable.pk}, owner {variable.user_id}) with any listed key.")
        if unreadable:
            raise CommandError(f"{len(unreadable)} credential(s) could not be decrypted; their owners must set them again.")
