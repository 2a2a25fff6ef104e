#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "langrun.settings")
    from django.core.management import execute_from_command_line

    from langrun.config import environment_load, home_dir, secret_key_ensure

    environment_load()
    secret_key_ensure(home_dir())  # the embedded profile's own key, as `make run` and the `langrun` command use it
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
