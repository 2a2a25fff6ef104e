from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

from flows.metrics import metrics_view
from langrun import views
from langrun.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("api_key", views.ApiKeyViewSet, basename="api-key")
router.register("users", views.UserViewSet, basename="user")

urlpatterns = [
    path("health", views.health, name="health"),
    path("health_check", views.health_check, name="health-check"),
    path("api/v1/version", views.version, name="version"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", include("webhooks.urls")),
    path("api/v1/", include("flows.urls")),
    path("api/v1/", include("webhooks.alerts.urls")),
    path("api/v1/", include(router.urls)),
    path("api/schema/", views.SchemaView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("api-auth/", include("rest_framework.urls")),
    path("admin/", admin.site.urls),
    # Last: any other /api/ path is a JSON 404, with DEBUG on too (Django's debug 404 page bypasses handler404).
    re_path(r"^api/", views.not_found),
]

handler404 = "langrun.views.not_found"
handler500 = "langrun.views.server_error"
