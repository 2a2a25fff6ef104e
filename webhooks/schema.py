"""The OpenAPI description of the webhooks app: the webhook (any body; 202, or 200 with `?wait=`; its own errors and
optional headers), the signing-secret endpoints and a run's attempts. Kept here, out of the views' hot path."""

from drf_spectacular.extensions import OpenApiViewExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema

from flows.serializers import RUN_EXAMPLE, FlowRunSerializer
from langrun.schema import ErrorSerializer, error, validation_error

ACCEPTED_EXAMPLE = {
    "message": "Task started in the background",
    "status": "in progress",
    "run_id": RUN_EXAMPLE["id"],
    "status_url": f"http://127.0.0.1:8000/api/v1/runs/{RUN_EXAMPLE['id']}",
}


_HEADER_VALUE = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"}
HEADERS = [
    OpenApiParameter(
        "Idempotency-Key",
        _HEADER_VALUE,
        OpenApiParameter.HEADER,
        description=(
            "Deduplicates retries: a second request with the same key for the same flow gets the first run's 202 "
            "(with `Idempotent-Replayed: true`) and starts nothing. 1 to 255 printable ASCII characters. "
            "On a flow with a signing secret the signed delivery's id decides instead (webhook-id, X-GitHub-Delivery)."
        ),
    ),
    OpenApiParameter(
        "webhook-id",
        str,
        OpenApiParameter.HEADER,
        description=(
            "Standard Webhooks message id: signed along with the body, and the idempotency key when there is no "
            "Idempotency-Key, or always when the flow has a signing secret (1 to 255 printable ASCII characters)."
        ),
    ),
    OpenApiParameter(
        "X-GitHub-Delivery",
        str,
        OpenApiParameter.HEADER,
        description=(
            "GitHub's delivery id: the idempotency key of a request signed with X-Hub-Signature-256 on a flow with a "
            "signing secret (then it must be 1 to 255 printable ASCII characters); ignored otherwise."
        ),
    ),
    OpenApiParameter(
        "webhook-timestamp", str, OpenApiParameter.HEADER, description="Standard Webhooks: Unix seconds, within 5 minutes of now."
    ),
    OpenApiParameter(
        "webhook-signature",
        str,
        OpenApiParameter.HEADER,
        description=(
            "Standard Webhooks signature(s) `v1,<base64>` (space-separated) with the flow's signing secret. Required, "
            "this or X-Hub-Signature-256, once the flow has a signing secret; it stands in for the API key."
        ),
    ),
    OpenApiParameter(
        "X-Hub-Signature-256",
        str,
        OpenApiParameter.HEADER,
        description="GitHub-style `sha256=<hex HMAC-SHA256 of the body>`, keyed with the flow's signing secret as written.",
    ),
]
LOCATION = OpenApiParameter(
    "Location", str, OpenApiParameter.HEADER, required=True, response=[200, 202], description="The run's status URL."
)
REPLAYED = OpenApiParameter(
    "Idempotent-Replayed",
    str,
    OpenApiParameter.HEADER,
    response=[202],
    description="`true` when an earlier request had this idempotency key.",
)
NO_STORE = OpenApiParameter(
    "Cache-Control", str, OpenApiParameter.HEADER, required=True, response=[201], description="`no-store`: the secret must not be cached."
)
RETRY_AFTER = OpenApiParameter(
    "Retry-After", int, OpenApiParameter.HEADER, required=True, response=[429], description="Seconds until the next minute's allowance."
)


RUN_ENDED = OpenApiResponse(
    {
        "type": "object",
        "properties": {
            "detail": {"type": "string"},
            "status": {"type": "string", "enum": ["failed", "cancelled"]},
            "run_id": {"type": "string", "format": "uuid"},
            "status_url": {"type": "string", "format": "uri"},
        },
        "required": ["detail", "status", "run_id", "status_url"],
    },
    description="A flow in `flow` response mode whose run failed or was cancelled before a Respond node answered.",
)


FLOW_PARAMETER = OpenApiParameter("flow_id_or_name", str, OpenApiParameter.PATH, description="A flow's id or endpoint name.")
TOKEN_PARAMETER = OpenApiParameter(
    "token",
    str,
    OpenApiParameter.PATH,
    description="One of the flow's ingest tokens (`it-...`): it names the flow and authorises the call.",
)
KEY_AUTH = [{"ApiKeyHeader": []}, {"ApiKeyQuery": []}]
TOKEN_NOTE = (
    "\n\nThis is the flow's webhook at an ingest token's own URL, for senders that can set neither headers nor a query "
    "string: the token in the path stands in for the API key, and everything else is as `/api/v1/webhook/{flow_id_or_name}`. "
    "A token that is unknown, revoked or expired is a 403."
)


def _webhook_operations(target_class, *, path_parameter: OpenApiParameter, auth: list, note: str = ""):
    """The webhook's operations, for a view whose path names the flow by `path_parameter` (its id or name, or a token)."""
    from webhooks.views import WebhookAcceptedSerializer

    name = path_parameter.name
    query = [] if name == "token" else [
        OpenApiParameter("user_id", OpenApiTypes.UUID, description="The flow owner's id, when authentication is off and names clash.")
    ]  # fmt: skip

    class Fixed(target_class):
        @extend_schema(
            summary="Run a flow from its webhook" + (" (ingest token URL)" if note else ""),
            description=(
                "Langflow's Webhook Run Flow. The body, of any content type, becomes the Webhook node's payload: "
                'JSON gives its value, a form an object, other text `{"payload": text}`. The run is stored before '
                "the answer; 202 means it runs in the background. With `?wait=<seconds>` the answer waits up to "
                "that long (capped by LANGRUN_WEBHOOK_MAX_WAIT) and is a 200 with the run's status when it finished. "
                "A flow's `response` may answer otherwise, once the run is stored: `static`, its fixed status (200-499), "
                "headers and body; `flow`, after waiting up to its timeout, what its Respond node produced (else the "
                "run's outputs as JSON, 200), a 502 when the run failed before answering, or the 202 when not done in time." + note
            ),
            # An empty body is a 400. Forms are one of the "any" content types (*/*).
            request={
                "application/json": OpenApiTypes.ANY,
                "text/plain": {"type": "string", "minLength": 1},
                "*/*": {"type": "string", "format": "binary"},
            },
            parameters=[
                path_parameter,
                *query,
                OpenApiParameter(
                    "wait",
                    {"type": "number", "minimum": 0},
                    description="Seconds to wait for the run to finish (0 or more, capped by LANGRUN_WEBHOOK_MAX_WAIT).",
                ),
                OpenApiParameter(
                    "callback_url",
                    str,
                    description="An http(s) URL: send this run's end (run.succeeded or run.failed, signed with your callback secret) to this "
                    "URL; it must pass the outbound address guard (no private or loopback addresses unless allowed).",
                ),
                *HEADERS,
                LOCATION,
                REPLAYED,
                RETRY_AFTER,
            ],
            responses={
                200: OpenApiResponse(
                    FlowRunSerializer,
                    description="With ?wait=: the run finished in time. A flow's static or flow `response` answers its own "
                    "status, headers and body (text or JSON) instead.",
                ),
                202: OpenApiResponse(
                    WebhookAcceptedSerializer,
                    description="The run is stored and queued; follow status_url (also in the Location header).",
                    examples=[OpenApiExample("Accepted", value=ACCEPTED_EXAMPLE, status_codes=["202"])],
                ),
                502: RUN_ENDED,
                400: error("Empty body."),
                401: error("The flow has a signing secret and the request is not signed with it (or not signed)."),
                403: error(
                    "API key or ingest token missing or invalid (and no signature standing in for it), or the flow is another user's."
                ),
                404: error("No such flow (names are looked up among the caller's flows)."),
                405: error("The flow does not accept this method (its `methods`); `Allow` lists those it does."),
                409: error("Authentication is off and several users have this endpoint name: add ?user_id=."),
                413: error("Body larger than LANGRUN_MAX_BODY_BYTES."),
                422: validation_error(
                    "Malformed JSON, non-UTF-8 body, NUL characters, a payload against the Webhook node's schema, "
                    "a malformed query parameter or Idempotency-Key, or a callback_url the address guard refuses."
                ),
                429: OpenApiResponse(
                    ErrorSerializer,
                    description=(
                        "More than LANGRUN_RATE_LIMIT_FLOW (per flow) or LANGRUN_RATE_LIMIT_KEY (per API key or ingest token) this minute."
                    ),
                ),
            },
            auth=auth,
        )
        def post(self, request, **route):
            return super().post(request, **route)

        @extend_schema(
            summary="Run a flow from its webhook (GET)" + (" (ingest token URL)" if note else ""),
            description=(
                "For a flow whose `methods` include GET (a 405 otherwise): the payload is the query object "
                "(a repeated key gives a list; x-api-key left out). Otherwise as POST." + note
            ),
            request=None,
            parameters=[path_parameter, LOCATION, REPLAYED],
            responses={
                202: OpenApiResponse(WebhookAcceptedSerializer, description="The run is stored and queued."),
                200: OpenApiResponse(FlowRunSerializer, description="With ?wait=: the run finished in time."),
                **_ERRORS,
            },
            auth=auth,
        )
        def get(self, request, **route):
            return super().get(request, **route)

        @_as_post("PUT", path_parameter, auth, note)
        def put(self, request, **route):
            return super().put(request, **route)

        @_as_post("PATCH", path_parameter, auth, note)
        def patch(self, request, **route):
            return super().patch(request, **route)

        @_as_post("DELETE", path_parameter, auth, note)
        def delete(self, request, **route):
            return super().delete(request, **route)

    return Fixed


class WebhookViewSchema(OpenApiViewExtension):
    target_class = "webhooks.views.WebhookView"

    def view_replacement(self):
        return _webhook_operations(self.target_class, path_parameter=FLOW_PARAMETER, auth=KEY_AUTH)


class IngestTokenWebhookViewSchema(OpenApiViewExtension):
    target_class = "webhooks.views.IngestTokenWebhookView"

    def view_replacement(self):
        # No security scheme: the token in the path is the credential.
        return _webhook_operations(self.target_class, path_parameter=TOKEN_PARAMETER, auth=[], note=TOKEN_NOTE)


_ERRORS = {
    502: RUN_ENDED,
    401: error("The flow verifies signatures and the request is not signed with its secret."),
    403: error("API key or ingest token missing or invalid, or the flow is another user's."),
    404: error("No such flow."),
    405: error("The flow does not accept this method (its `methods`); `Allow` lists those it does."),
    422: validation_error("A malformed query parameter or header."),
    429: OpenApiResponse(ErrorSerializer, description="Rate limit exceeded."),
}


def _as_post(method: str, path_parameter: OpenApiParameter, auth: list, note: str = ""):
    """The schema of PUT, PATCH and DELETE to a webhook: as POST's, for a flow whose `methods` include it."""
    from webhooks.views import WebhookAcceptedSerializer

    return extend_schema(
        summary=f"Run a flow from its webhook ({method})" + (" (ingest token URL)" if note else ""),
        description=f"For a flow whose `methods` include {method} (a 405 otherwise); the body is read as POST's." + note,
        request={"application/json": OpenApiTypes.ANY, "*/*": {"type": "string", "format": "binary"}},
        parameters=[path_parameter, LOCATION, REPLAYED],
        responses={
            202: OpenApiResponse(WebhookAcceptedSerializer, description="The run is stored and queued."),
            200: OpenApiResponse(FlowRunSerializer, description="With ?wait=: the run finished in time."),
            400: error("Empty body."),
            413: error("Body larger than LANGRUN_MAX_BODY_BYTES."),
            **_ERRORS,
        },
        auth=auth,
    )


def webhook_body_required(result, generator, request, public):
    """Postprocessing hook: the webhook's body is required (an empty one is a 400)."""
    for path, operations in result.get("paths", {}).items():
        if path.startswith("/api/v1/webhook/") and "requestBody" in operations.get("post", {}):
            operations["post"]["requestBody"]["required"] = True
    return result


class SigningSecretSchema(OpenApiViewExtension):
    target_class = "webhooks.views.FlowSigningSecretView"

    def view_replacement(self):
        from webhooks.views import SigningSecretInputSerializer, SigningSecretSerializer

        class Fixed(self.target_class):
            @extend_schema(
                summary="Create, set or rotate a flow's signing secret",
                description=(
                    "From now on the flow's webhook needs a signature made with this secret (webhook-signature or "
                    "X-Hub-Signature-256, or the scheme of the flow's `verification` preset); a previous secret stays "
                    "valid for LANGRUN_SIGNING_SECRET_GRACE seconds. Without a body a secret is generated and shown "
                    'only in this answer; with `{"secret": "…"}` (one Stripe, Slack or Shopify issued, or a token) that '
                    "secret is set and not echoed (`signing_secret` is null)."
                ),
                request={"application/json": SigningSecretInputSerializer},
                parameters=[NO_STORE],
                responses={
                    201: OpenApiResponse(SigningSecretSerializer, description="The new secret (null when you gave it)."),
                    404: error("No flow of yours with this id."),
                    422: validation_error("A `secret` that is not a string of 1 to 100 characters."),
                },
            )
            def post(self, request, pk):
                return super().post(request, pk)

            @extend_schema(
                summary="Stop requiring webhook signatures",
                description="Forgets the flow's signing secrets (the current one and any previous one in its grace period).",
                request=None,
                responses={204: None, 404: error("No flow of yours with this id.")},
            )
            def delete(self, request, pk):
                return super().delete(request, pk)

        return Fixed


class RunAttemptsSchema(OpenApiViewExtension):
    target_class = "webhooks.views.RunAttemptsView"

    def view_replacement(self):
        from webhooks.views import RunAttemptSerializer

        class Fixed(self.target_class):
            @extend_schema(
                summary="A run's attempts",
                responses={200: RunAttemptSerializer(many=True), 404: error("No run of yours with this id.")},
            )
            def get(self, request, pk):
                return super().get(request, pk)

        return Fixed
