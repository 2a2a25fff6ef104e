"""gunicorn's settings for langrun: `serve` and `langrun web` pass them with `--config python:langrun.gunicorn_conf`,
and ./gunicorn.conf.py imports them for a `gunicorn langrun.wsgi` started in the repository; command-line options override them.

See docs/performance.md for what they bought.
"""

import os

from gunicorn import glogging

from langrun.logs import mask_secret_paths

# Threads in each worker process, not one request per process: a caller that waits (`?wait=`, the synchronous
# run) or a client that sends its request slowly holds one thread, and the process's other threads go on
# answering (health checks, webhooks). Waiting callers may take at most LANGRUN_WAITS_PER_PROCESS threads of a
# process. Each thread keeps its own database connection (CONN_MAX_AGE): up to workers x threads connections.
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "8"))
# A process takes no more connections than it has threads: one whose threads are all busy leaves new connections
# to the other processes, as a sync worker does (otherwise it would accept them and queue them behind its busy
# threads). Hence no keep-alive either, like the sync workers before: an idle kept-alive connection would count.
worker_connections = threads
keepalive = 0


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
