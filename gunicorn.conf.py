"""gunicorn's settings for langrun, read by every `gunicorn langrun.wsgi` started in this directory
(`make run`/`serve`, the benchmark, the end-to-end tests); command-line options override them.

See the README's "Performance" section for what they bought.
"""

# Load the application once in the master and fork the workers from it: the workers share those
# pages, about 100 MB less memory (summed PSS) with 3 workers. Nothing opens a connection at import,
# and every worker makes its own database and Redis connections on first use.
preload_app = True
