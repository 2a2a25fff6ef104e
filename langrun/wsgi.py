import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "langrun.settings")
application = get_wsgi_application()

# Under gunicorn's preload_app this module is imported once, in the master, before it forks the workers.
from flows.services.queue import broker_preload  # noqa: E402  (needs the application set up)

broker_preload()
