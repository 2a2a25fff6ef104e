"""`langrun`: the installed command. Every word it does not know itself is a `manage.py` command.

`langrun serve` in any directory starts the embedded default as `make run` does, with its files under
LANGRUN_HOME (default ./var): the database is migrated, the static files collected, and on an empty
database an admin user, a demo flow and an API key are created and printed.
"""

import argparse
import os
import sys

from langrun.config import environment_load, home_dir, secret_key_ensure

USAGE = """usage: langrun COMMAND [ARGS]

  serve            web server and worker together; migrates, collects static files and creates a demo
                   on first start (--host, --port, --web-workers; HOST, PORT, WEB_WORKERS)
  web              the web server only (gunicorn)
  worker           a worker cluster only (manage.py qcluster)
  migrate          create or update the database tables
  create-api-key   a new API key for a user (manage.py create_api_key)
  status           queue depth, recent runs and the workers' heartbeat (manage.py langrun_status)
  help             every other command (any manage.py command works: langrun changepassword admin, ...)

Settings come from the environment and from ./.env; see .env.example.
"""

# langrun's names for management commands whose own names read oddly on a command line.
COMMANDS = {"worker": "qcluster", "create-api-key": "create_api_key", "status": "langrun_status"}


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "langrun.settings")
    environment_load()
    home = home_dir()
    # The absolute path, so that the processes `serve` starts agree on it whatever their directory.
    os.environ["LANGRUN_HOME"] = str(home)
    secret_key_ensure(home)
    command, rest = args[0], args[1:]
    if command == "serve":
        serve(rest)
    elif command == "web":
        web(rest)
    else:
        from django.core.management import execute_from_command_line

        execute_from_command_line(["langrun", COMMANDS.get(command, command), *rest])


def _address_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    return parser


def serve(args: list[str]) -> None:
    """What `make run` does: migrate, collect static files, bootstrap a demo on an empty database, then `serve`."""
    import django
    from django.core.management import call_command, execute_from_command_line
    from django.db import connections

    options, rest = _address_parser("langrun serve").parse_known_args(args)
    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    call_command("bootstrap", base_url=f"http://{options.host}:{options.port}")
    connections.close_all()
    execute_from_command_line(["langrun", "serve", "--host", options.host, "--port", str(options.port), *rest])


def web(args: list[str]) -> None:
    """gunicorn alone, in place of this process (so that a process manager's signals reach it)."""
    import django
    from django.db import connection

    from langrun.management.commands.serve import web_workers_default
    from langrun.processes import web_command

    parser = _address_parser("langrun web")
    parser.add_argument("--web-workers", type=int, default=None)
    options = parser.parse_args(args)
    django.setup()
    workers = options.web_workers or int(os.environ.get("WEB_WORKERS") or web_workers_default(connection.vendor))
    command = web_command(host=options.host, port=options.port, workers=workers)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
