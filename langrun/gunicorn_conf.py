"""gunicorn's settings for langrun: `serve` and `langrun web` pass them with `--config python:langrun.gunicorn_conf`,
and ./gunicorn.conf.py imports them for a `gunicorn langrun.wsgi` started in the repository; command-line options override them.

See docs/performance.md for what they bought.
"""

import os

from gunicorn import glogging

from langrun.logs import mask_secret_paths

# Sync workers with threads for the requests that park: a process answers at most WEB_THREADS requests at once and
# leaves further connections to the other processes; requests that wait for a run or stream its events park
# (langrun/waits.py) and finish on threads of their own, no longer counted (langrun/gunicorn_worker.py).
worker_class = "langrun.gunicorn_worker.ParkingWorker"
worker_connections = int(os.environ.get("WEB_THREADS", "1"))
keepalive = 0
# gunicorn's control socket is one path per OS user ($HOME/.gunicorn/gunicorn.ctl): a second install on the machine
# would take it over from the first, and its stop remove it. `serve` and process managers use signals.
control_socket_disable = True


class AccessLogger(glogging.Logger):
    """gunicorn's logger, with the secret of a path that carries one (an ingest token's URL) masked in every access
    log field that may hold it: the path, the request line, the referer, the request's headers and environ."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        return {name: mask_secret_paths(value) if isinstance(value, str) else value for name, value in atoms.items()}


logger_class = AccessLogger

# Load the application once in the master and fork the workers from it: the workers share those
# pages, about 100 MB less memory (summed PSS) with 3 workers. Nothing opens a connection at import,
# and every worker makes its own database and Redis connections on first use.
preload_app = True


def pre_fork(server, worker):
    """Hand the loaded application's objects to each worker frozen, so that they stay shared.

    A worker that forked from the master shares its pages until it writes to them, and the cyclic
    garbage collector writes to every object it examines: the worker's first full collection copied
    every page of Django's and langrun's objects, and the web processes' summed PSS grew from about
    230 MB to 570 MB under load. Objects frozen in the master are never examined again.
    """
    import gc

    gc.freeze()


def post_fork(server, worker):
    """The process's threads share a pool of database connections: the requests it answers at once, the ledger's
    watch (flows/services/watch.py), unless WEB_DB_CONNECTIONS says otherwise (0: one per thread)."""
    from langrun.db import connection_pool_use

    connection_pool_use(size=int(os.environ.get("WEB_DB_CONNECTIONS", worker_connections + 1)))
