"""gunicorn's settings for `gunicorn langrun.wsgi` started in this directory (the benchmark, the end-to-end tests).

They live in langrun/gunicorn_conf.py, which `serve` and `langrun web` pass with `--config`, so that they also
hold for an installed langrun started in any directory.
"""

from langrun.gunicorn_conf import *  # noqa: F403
