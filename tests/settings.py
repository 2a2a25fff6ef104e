"""Test settings: the product's settings, with a throwaway secret and a file-backed SQLite test database.

The test database is a file (not SQLite's in-memory default) so that the
qcluster and server processes that end-to-end tests start can share it.
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
# A cluster name of its own, so a test run never shares a Redis queue with a running langrun.
os.environ.setdefault("LANGRUN_CLUSTER_NAME", f"langrun-test-{os.getpid()}")

from langrun.settings import *  # noqa: E402, F403
from langrun.settings import DATABASES  # noqa: E402

# One test database per test process, so that test runs side by side (and CI) never share one.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": os.path.join(tempfile.gettempdir(), f"langrun-test-{os.getpid()}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_langrun_{os.getpid()}"}

# whitenoise warns when the collected static folder is missing; tests do not collect.
STATIC_ROOT = os.path.join(tempfile.gettempdir(), "langrun-test-static")
os.makedirs(STATIC_ROOT, exist_ok=True)

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Every API key use is written at once, so tests see it (tests of the throttle set their own interval).
LANGRUN_API_KEY_USAGE_INTERVAL = 0
