from django.urls import path

from webhooks.views import FlowSigningSecretView, RunAttemptsView, WebhookView

urlpatterns = [
    path("webhook/<str:flow_id_or_name>", WebhookView.as_view(), name="webhook"),
    path("webhook/<str:flow_id_or_name>/", WebhookView.as_view()),
    path("flows/<uuid:pk>/signing-secret", FlowSigningSecretView.as_view(), name="flow-signing-secret"),
    path("runs/<uuid:pk>/attempts", RunAttemptsView.as_view(), name="flowrun-attempts"),
]
