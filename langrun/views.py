"""Health, version, JSON errors for API paths, API keys and users."""

import logging
import uuid
from typing import ClassVar

from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.test.signals import setting_changed
from django.utils import translation
from django.views.decorators.csrf import csrf_exempt
from django.views.defaults import page_not_found
from django.views.defaults import server_error as django_server_error
from drf_spectacular.utils import extend_schema, extend_schema_view
from drf_spectacular.views import SpectacularAPIView
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from langrun import __version__
from langrun.exceptions import Conflict
from langrun.models import ApiKey, User
from langrun.schema import error
from langrun.serializers import ApiKeyCreatedSerializer, ApiKeyCreateSerializer, ApiKeySerializer, UserSerializer
from langrun.services import api_key_create, api_key_delete

logger = logging.getLogger(__name__)


class UuidLookupMixin:
    """A detail route whose id is no UUID is a 404 saying `not_found`, asked of no database."""

    not_found = "Not found"

    def get_object(self):
        try:
            uuid.UUID(str(self.kwargs["pk"]))
        except ValueError:
            raise NotFound(self.not_found) from None
        return super().get_object()


def health(request):
    return JsonResponse({"status": "ok"})


def health_check(request):
    """Each subsystem's state, with Langflow's keys (`status`, `chat`, `db`); 503 when one is down.

    `worker` is down when no worker cluster has reported within LANGRUN_HEALTH_WORKER_TIMEOUT seconds: webhooks are
    still accepted then, but no run would start. Liveness, which needs no worker, is `/health`.
    """
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["db"] = "ok"
    except Exception:
        logger.exception("Health check: database unavailable")
        checks["db"] = "error"
    try:
        # Langflow's `chat` is its cache; here the cache holds the rate limits and, on the embedded profile, the workers' stats.
        cache.set("langrun:health_check", 1, 10)
        checks["chat"] = "ok" if cache.get("langrun:health_check") == 1 else "error"
    except Exception:
        logger.exception("Health check: cache unavailable")
        checks["chat"] = "error"
    try:
        from django_q.brokers import get_broker

        get_broker().ping()
        checks["queue"] = "ok"
    except Exception:
        logger.exception("Health check: queue broker unavailable")
        checks["queue"] = "error"
    try:
        from flows.health import worker_health

        report = worker_health()
    except Exception:
        logger.exception("Health check: worker clusters unknown")
        report = {"worker": "error"}
    checks["worker"] = report.pop("worker")
    healthy = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if healthy else "error", **checks, **report}, status=200 if healthy else 503)


def version(request):
    return JsonResponse({"version": __version__, "main_version": __version__.rsplit(".", 1)[0], "package": "langrun"})


@csrf_exempt  # also the catch-all route for unknown /api/ paths, where a POST must get a 404, not a CSRF page
def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not Found"}, status=404)
    return page_not_found(request, exception)


def server_error(request):
    """A 500 under /api/ is JSON like every other API error (the error itself is logged by Django)."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Internal Server Error"}, status=500)
    return django_server_error(request)


class ApiKeyViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Your API keys. The secret is shown once, in the answer to the POST that creates it."""

    serializer_class = ApiKeySerializer
    queryset = ApiKey.objects.none()  # for the schema; get_queryset scopes to the owner

    def get_queryset(self):
        return ApiKey.objects.filter(user=self.request.user)

    def get_serializer_class(self):
        return ApiKeyCreateSerializer if self.action == "create" else ApiKeySerializer

    @extend_schema(request=ApiKeyCreateSerializer, responses={201: ApiKeyCreatedSerializer})
    def create(self, request):
        body = ApiKeyCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        new = api_key_create(user=request.user, **body.validated_data)
        data = {**ApiKeySerializer(new.api_key).data, "api_key": new.key}
        # The key in clear, this once: no cache may keep it, as for every other secret the API shows once.
        return Response(ApiKeyCreatedSerializer(data).data, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})

    @extend_schema(responses={204: None, 409: error("This request is authenticated with the key it deletes.")})
    def destroy(self, request, *args, **kwargs):
        return super().destroy(request, *args, **kwargs)

    def perform_destroy(self, instance):
        # A script deleting the key it runs with would lock itself out mid-way; use another key or a session.
        if isinstance(self.request.auth, ApiKey) and self.request.auth.pk == instance.pk:
            raise Conflict("This request is authenticated with this key; delete it with another key or from a session.")
        api_key_delete(api_key=instance)


class IsStaff(permissions.BasePermission):
    """Staff who may view users in the admin: the list shows every user's name and address, which the admin shows only
    with Django's `view_user` permission."""

    message = "Only staff allowed to view users can list them."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_staff and request.user.has_perm("langrun.view_user"))


@extend_schema_view(list=extend_schema(summary="All users (staff allowed to view users)"))
class UserViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Users of this langrun. Listing them is for staff allowed to view users; anyone can ask who they are."""

    serializer_class = UserSerializer
    queryset = User.objects.order_by("username")
    permission_classes = [permissions.IsAuthenticated, IsStaff]

    def get_permissions(self):
        if self.action == "whoami":
            return [permissions.IsAuthenticated()]
        return super().get_permissions()

    @extend_schema(summary="The user this request is authenticated as")
    @action(detail=False, methods=["get"], pagination_class=None)
    def whoami(self, request):
        return Response(UserSerializer(request.user).data)


class SchemaView(SpectacularAPIView):
    """The OpenAPI description, generated once per process for each version and language asked for: generating it
    takes a third of a second of CPU, and anyone may ask for it. A changed setting (the tests') generates it again."""

    MAX_KEPT = 8  # `?version=` and `?lang=` take any text: past this many, a description is generated but not kept
    _made: ClassVar[dict[tuple, dict]] = {}

    @classmethod
    def forget(cls, **kwargs) -> None:
        cls._made.clear()

    def _get_schema_response(self, request):
        version = self.api_version or request.version or self._get_version_parameter(request)
        key = (version, translation.get_language())
        schema = self._made.get(key)
        if schema is None:
            generator = self.generator_class(urlconf=self.urlconf, api_version=version, patterns=self.patterns)
            schema = generator.get_schema(request=request, public=self.serve_public)
            if len(self._made) < self.MAX_KEPT:
                self._made[key] = schema
        filename = self._get_filename(request, version)
        return Response(data=schema, headers={"Content-Disposition": f'inline; filename="{filename}"'})


setting_changed.connect(SchemaView.forget)
