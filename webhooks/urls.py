from django.urls import path, re_path

from flows.urls import UUID_RE
from webhooks.token_views import IngestTokenDetailView, IngestTokenListView, IngestTokenRevokeView
from webhooks.views import FlowSigningSecretView, IngestTokenWebhookView, RunAttemptsView, WebhookView

urlpatterns = [
    # With or without the trailing slash; one route, so the schema lists the operation once.
    re_path(r"^webhook/(?P<flow_id_or_name>[^/]+)/?$", WebhookView.as_view(), name="webhook"),
    # A flow's webhook at its ingest token's URL: the token is a credential, kept out of logs (langrun/logs.py).
    re_path(r"^webhook/t/(?P<token>[^/]+)/?$", IngestTokenWebhookView.as_view(), name="webhook-token"),
    path("flows/<uuid:pk>/signing-secret", FlowSigningSecretView.as_view(), name="flow-signing-secret"),
    re_path(rf"^flows/(?P<flow_id>{UUID_RE})/ingest-tokens/?$", IngestTokenListView.as_view(), name="flow-ingest-tokens"),
    path("flows/<uuid:flow_id>/ingest-tokens/<uuid:token_id>", IngestTokenDetailView.as_view(), name="flow-ingest-token"),
    path("flows/<uuid:flow_id>/ingest-tokens/<uuid:token_id>/revoke", IngestTokenRevokeView.as_view(), name="flow-ingest-token-revoke"),
    path("runs/<uuid:pk>/attempts", RunAttemptsView.as_view(), name="flowrun-attempts"),
]
