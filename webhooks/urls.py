from django.urls import re_path

from webhooks.views import WebhookView

urlpatterns = [
    # With or without the trailing slash; one route, so the schema lists the operation once.
    re_path(r"^webhook/(?P<flow_id_or_name>[^/]+)/?$", WebhookView.as_view(), name="webhook"),
]
