from django.urls import reverse
from rest_framework import serializers, status
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from flows.models import FlowRun
from flows.services import flow_run_create
from langrun.authentication import api_key_from_request
from webhooks import services

ACCEPTED_MESSAGE = "Task started in the background"


class AnyBodyParser(BaseParser):
    """Declares that the webhook takes any content type; the view reads the raw body itself."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream.read() if stream else b""


class WebhookAcceptedSerializer(serializers.Serializer):
    message = serializers.CharField(default=ACCEPTED_MESSAGE)
    status = serializers.CharField(default="in progress")
    run_id = serializers.UUIDField()
    status_url = serializers.URLField()


class WebhookView(APIView):
    """Run a flow with the request body as its payload (Langflow's Webhook Run Flow).

    Answers 202 once the run is committed; the flow runs in the background.
    """

    authentication_classes = []
    permission_classes = [AllowAny]
    parser_classes = [AnyBodyParser]

    def post(self, request, flow_id_or_name: str):
        user_id = services.webhook_user_id_parse(raw=request.query_params.get("user_id"))
        caller, flow = services.webhook_caller_and_flow(key=api_key_from_request(request), identifier=flow_id_or_name, user_id=user_id)
        services.webhook_body_check_size(content_length=request.META.get("CONTENT_LENGTH"))
        content_type = request.content_type or ""
        text, payload = services.webhook_payload_decode(body=request.body, content_type=content_type)
        run = flow_run_create(
            flow=flow,
            user=caller or flow.user,
            trigger=FlowRun.Trigger.WEBHOOK,
            payload=payload,
            body=text,
            content_type=content_type,
        )
        status_url = request.build_absolute_uri(reverse("flowrun-detail", kwargs={"pk": run.id}))
        body = WebhookAcceptedSerializer(
            {"message": ACCEPTED_MESSAGE, "status": "in progress", "run_id": run.id, "status_url": status_url}
        ).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": status_url})
