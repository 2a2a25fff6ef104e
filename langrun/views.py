"""Health, version, and the JSON 404 for API paths."""

import logging

from django.db import connection
from django.http import JsonResponse
from django.views.defaults import page_not_found

from langrun import __version__

logger = logging.getLogger(__name__)


def health(request):
    return JsonResponse({"status": "ok"})


def health_check(request):
    """Each subsystem's state; 503 when one is down."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["db"] = "ok"
    except Exception:
        logger.exception("Health check: database unavailable")
        checks["db"] = "error"
    try:
        from django_q.brokers import get_broker

        get_broker().ping()
        checks["queue"] = "ok"
    except Exception:
        logger.exception("Health check: queue broker unavailable")
        checks["queue"] = "error"
    healthy = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if healthy else "error", **checks}, status=200 if healthy else 503)


def version(request):
    return JsonResponse({"version": __version__, "main_version": __version__.rsplit(".", 1)[0], "package": "langrun"})


def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not Found"}, status=404)
    return page_not_found(request, exception)
