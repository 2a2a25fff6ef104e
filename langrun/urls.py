from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from flows.metrics import metrics_view
from langrun import views

urlpatterns = [
    path("health", views.health, name="health"),
    path("health_check", views.health_check, name="health-check"),
    path("api/v1/version", views.version, name="version"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", include("webhooks.urls")),
    path("api/v1/", include("flows.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("api-auth/", include("rest_framework.urls")),
    path("admin/", admin.site.urls),
]

handler404 = "langrun.views.not_found"
