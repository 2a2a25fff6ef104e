from django.urls import path

from webhooks.views import WebhookView

urlpatterns = [
    path("webhook/<str:flow_id_or_name>", WebhookView.as_view(), name="webhook"),
    path("webhook/<str:flow_id_or_name>/", WebhookView.as_view()),
]
