"""gunicorn's settings for langrun: `serve` and `langrun web` pass them with `--config python:langrun.gunicorn_conf`,
and ./gunicorn.conf.py imports them for a `gunicorn langrun.wsgi` started in the repository; command-line options override them.

See the README's "Performance" section for what they bought.
"""

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
