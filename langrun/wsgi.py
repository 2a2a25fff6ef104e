import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "langrun.settings")
application = get_wsgi_application()

# Under gunicorn's preload_app this module is imported once, in the master, before it forks the workers: what is
# loaded here is shared by them, instead of each worker loading it while it answers its first requests, all of them
# at once after a restart. The URLconf imports every view, serializer and the schema's modules; the first
# `reverse()` builds the resolver's table.
from django.urls import get_resolver  # noqa: E402

from flows.services.queue import broker_preload  # noqa: E402  (needs the application set up)

broker_preload()
get_resolver().reverse_dict  # noqa: B018  (imports the URLconf and builds the table `reverse()` reads)
