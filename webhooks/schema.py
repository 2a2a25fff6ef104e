"""The webhook's OpenAPI description: it takes any body, answers 202 (or 200 with `?wait=`), and its own errors."""

from drf_spectacular.extensions import OpenApiViewExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema

from flows.serializers import RUN_EXAMPLE, FlowRunSerializer
from langrun.schema import error, validation_error

ACCEPTED_EXAMPLE = {
    "message": "Task started in the background",
    "status": "in progress",
    "run_id": RUN_EXAMPLE["id"],
    "status_url": f"http://127.0.0.1:8000/api/v1/runs/{RUN_EXAMPLE['id']}",
}


class WebhookViewSchema(OpenApiViewExtension):
    target_class = "webhooks.views.WebhookView"

    def view_replacement(self):
        from webhooks.views import WebhookAcceptedSerializer

        class Fixed(self.target_class):
            @extend_schema(
                summary="Run a flow from its webhook",
                description=(
                    "Langflow's Webhook Run Flow. The body, of any content type, becomes the Webhook node's payload: "
                    'JSON gives its value, a form an object, other text `{"payload": text}`. The run is stored before '
                    "the answer; 202 means it runs in the background. With `?wait=<seconds>` the answer waits up to "
                    "that long (capped by LANGRUN_WEBHOOK_MAX_WAIT) and is a 200 with the run's status when it finished."
                ),
                # An empty body is a 400. Forms are one of the "any" content types (*/*).
                request={
                    "application/json": OpenApiTypes.ANY,
                    "text/plain": {"type": "string", "minLength": 1},
                    "*/*": {"type": "string", "format": "binary"},
                },
                parameters=[
                    OpenApiParameter("flow_id_or_name", str, OpenApiParameter.PATH, description="A flow's id or endpoint name."),
                    OpenApiParameter(
                        "user_id", OpenApiTypes.UUID, description="The flow owner's id, when authentication is off and names clash."
                    ),
                    OpenApiParameter(
                        "wait",
                        {"type": "number", "minimum": 0},
                        description="Seconds to wait for the run to finish (0 or more, capped by LANGRUN_WEBHOOK_MAX_WAIT).",
                    ),
                ],
                responses={
                    200: OpenApiResponse(FlowRunSerializer, description="With ?wait=: the run finished in time."),
                    202: OpenApiResponse(
                        WebhookAcceptedSerializer,
                        description="The run is stored and queued; follow status_url (also in the Location header).",
                        examples=[OpenApiExample("Accepted", value=ACCEPTED_EXAMPLE, status_codes=["202"])],
                    ),
                    400: error("Empty body."),
                    403: error("API key missing or invalid, or the flow is another user's."),
                    404: error("No such flow (names are looked up among the caller's flows)."),
                    409: error("Authentication is off and several users have this endpoint name: add ?user_id=."),
                    413: error("Body larger than LANGRUN_MAX_BODY_BYTES."),
                    422: validation_error("Malformed JSON, non-UTF-8 body, NUL characters, or a malformed query parameter."),
                },
                auth=[{"ApiKeyHeader": []}, {"ApiKeyQuery": []}],
            )
            def post(self, request, flow_id_or_name: str):
                return super().post(request, flow_id_or_name)

        return Fixed


def webhook_body_required(result, generator, request, public):
    """Postprocessing hook: the webhook's body is required (an empty one is a 400)."""
    for path, operations in result.get("paths", {}).items():
        if path.startswith("/api/v1/webhook/") and "requestBody" in operations.get("post", {}):
            operations["post"]["requestBody"]["required"] = True
    return result
