from django.urls import path, re_path

from webhooks.views import FlowSigningSecretView, RunAttemptsView, WebhookView

urlpatterns = [
    # With or without the trailing slash; one route, so the schema lists the operation once.
    re_path(r"^webhook/(?P<flow_id_or_name>[^/]+)/?$", WebhookView.as_view(), name="webhook"),
    path("flows/<uuid:pk>/signing-secret", FlowSigningSecretView.as_view(), name="flow-signing-secret"),
    path("runs/<uuid:pk>/attempts", RunAttemptsView.as_view(), name="flowrun-attempts"),
]
