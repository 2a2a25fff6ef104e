"""The product's settings plus the benchmark's baseline view and its table.

Only the benchmark uses these settings; the product's URLs never contain the baseline.
"""

from langrun.settings import *  # noqa: F403
from langrun.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench"]
ROOT_URLCONF = "bench.urls"
