import functools

from django.conf import settings
from rest_framework import exceptions, serializers, status
from rest_framework.exceptions import MethodNotAllowed, NotAcceptable
from rest_framework.generics import get_object_or_404
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from flows.metrics import webhook_waits
from flows.models import Flow, FlowRun, RunAttempt
from flows.serializers import FlowRunSerializer
from flows.views import run_status_url
from langrun.authentication import api_key_from_request
from langrun.exceptions import RequestValidationError
from langrun.filters import query_value
from langrun.serializers import StrictCharField
from webhooks import answers, handshakes, services, signatures, targets

ACCEPTED_MESSAGE = "Task started in the background"


class AnyBodyParser(BaseParser):
    """Declares that the webhook takes any content type; the view reads the raw body itself."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream.read() if stream else b""


def wants_browsable_api(request) -> bool:
    """Whether a client asks for the browsable API's page: HTML in its Accept header, or a `?format=` override."""
    return "html" in request.META.get("HTTP_ACCEPT", "") or api_settings.URL_FORMAT_OVERRIDE in request.GET


class WebhookNegotiation(DefaultContentNegotiation):
    """JSON for every sender, whatever its Accept header says (Langflow answers JSON too), so an integration
    never gets a 406; the browsable API's page only for a client that asks for HTML (or `?format=`)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        if not wants_browsable_api(request):
            return renderers[0], renderers[0].media_type
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type


class WebhookAcceptedSerializer(serializers.Serializer):
    message = serializers.CharField(default=ACCEPTED_MESSAGE)
    status = serializers.CharField(default="in progress")
    run_id = serializers.UUIDField()
    status_url = serializers.URLField()


class WebhookView(APIView):
    """Run a flow with the request body as its payload (Langflow's Webhook Run Flow).

    Answers 202 once the run is committed; the flow runs in the background (or the flow's `response` answers:
    a static answer, or what its run's Respond node produced, webhooks/answers.py). The view has no DRF
    authentication, permission or throttle classes: the webhook authenticates (an API key in
    webhooks/targets.py, or a signature in webhooks/signatures.py) and rate-limits itself
    (webhooks/services.py), with Langflow's answers.
    """

    authentication_classes = []
    permission_classes = [AllowAny]
    parser_classes = [AnyBodyParser]
    content_negotiation_class = WebhookNegotiation
    # HEAD is not a delivery: without it here Django would answer it with the GET handler, recording a run.
    http_method_names = ["get", "post", "put", "patch", "delete", "options"]
    # The flow's `methods` once the caller is known (a refusal of the method, or the run recorded); until then `Allow`
    # says POST, as Langflow's webhook does.
    flow_methods: tuple[str, ...] | None = None

    def _allowed_methods(self):
        if self.flow_methods is None:  # every method some flow may accept: what the schema lists
            return super()._allowed_methods()
        return [*self.flow_methods, "OPTIONS"]

    @property
    def default_response_headers(self):
        headers = super().default_response_headers
        request = getattr(self, "request", None)
        if request is None or request.method != "OPTIONS":  # OPTIONS describes the resource: every method a flow may take
            headers["Allow"] = ", ".join([*(self.flow_methods or ("POST",)), "OPTIONS"])
        return headers

    def post(self, request, **route):
        return self._deliver(request, route)

    # The other methods a flow may accept (`methods`); a flow that does not is a 405, once the caller is known.
    get = put = patch = delete = post

    def _deliver(self, request, route: dict):
        if request.method == "GET" and wants_browsable_api(request):
            # A browser opening the URL gets the browsable API's page (a 405 with its POST form), as before.
            raise MethodNotAllowed(request.method)
        try:
            run, status_url, wait, answer = self._record(request._request, route)
        except handshakes.HandshakeAnswer as answer:
            return answer.response
        if run.status == FlowRun.Status.FILTERED:
            return self._filtered(run, status_url)
        if answer["mode"] == "static":
            return answers.webhook_static_answer(response=answer, replayed=run.deduplicated)
        finished = services.webhook_run_wait(run=run, seconds=wait)
        if finished is not None and answer["mode"] == "flow":
            return answers.webhook_run_answer(run=finished, status_url=status_url, replayed=run.deduplicated)
        if finished is not None:
            caller = run.webhook_caller  # the API key's user: the run is shown as GET /api/v1/runs/{id} shows it them
            context = {"tracebacks": caller is not None and caller.is_staff}
            return Response(FlowRunSerializer(finished, context=context).data, headers={"Location": status_url})
        body, headers = self._accepted(run, status_url)
        return Response(body, status=status.HTTP_202_ACCEPTED, headers=headers)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        for name, value in getattr(response, "langrun_flow_headers", {}).items():  # the flow's own, over DRF's Allow and Vary
            response[name] = value
        return response

    def _record(self, request, route: dict) -> tuple[FlowRun, str, float, dict]:
        """Check the request and record its run: the run, its status URL, the seconds to wait for it, and the flow's
        `response` setting (in `flow` mode its timeout is the wait; `?wait=` is the caller's in `accepted` mode only).

        Takes Django's request: the body is read raw from its stream, never parsed by DRF."""
        meta = request.META
        user_id = services.webhook_user_id_parse(raw=query_value(request.GET, "user_id"))
        wait = services.webhook_wait_parse(raw=query_value(request.GET, "wait"))
        if wait > 0:
            webhook_waits(request)
        # Read before the lookup, so that a body too large is refused alike whether or not the flow exists.
        body = services.webhook_body_read(stream=request, content_length=meta.get("CONTENT_LENGTH"))
        lookup = self._lookup(request, route, user_id, body)
        run = services.webhook_intake(
            target=lookup(), retarget=functools.partial(lookup, fresh=True), request=request, body=body, waits=wait > 0
        )
        answer = run.flow.response_settings  # the flow as the intake found it (read again if what was remembered changed)
        self._allow(run.flow.allowed_methods)  # the caller is known: `Allow` says what its flow takes
        if answer["mode"] != "accepted":
            wait = min(answer.get("timeout", 0), settings.LANGRUN_WEBHOOK_MAX_WAIT)
            webhook_waits(request)  # not the ledger's 202: counted under the code answered
        return run, run_status_url(request, run.id), wait, answer

    def _lookup(self, request, route: dict, user_id, body: bytes):
        """The call that finds the caller and the flow (`fresh=True` reads them again): by the API key, or a signature."""
        key = api_key_from_request(request)
        return functools.partial(
            targets.webhook_caller_and_flow,
            key=key,
            identifier=route["flow_id_or_name"],
            user_id=user_id,
            # Without a key, a request may be signed (or carry a token preset's token, under a name only the flow
            # knows): its flow is looked up, and a signature or token that does not hold is the same 403.
            signed=key is None or signatures.webhook_is_signed(headers=request.META),
            signed_by=functools.partial(signatures.webhook_signature_holds, body=body, headers=request.META),
        )

    def handle_exception(self, exc):
        if isinstance(exc, services.WebhookMethodNotAllowed):  # the flow's own `Allow`
            self._allow(exc.allowed)
        return super().handle_exception(exc)

    def _allow(self, methods: tuple[str, ...]) -> None:
        self.flow_methods = methods
        self.headers["Allow"] = ", ".join(self._allowed_methods())

    @staticmethod
    def _filtered(run: FlowRun, status_url: str) -> Response:
        # 200, not a 4xx: a sender retries a 4xx, and a filtered event must not come again.
        headers = {"Location": status_url}
        if run.deduplicated:
            headers["Idempotent-Replayed"] = "true"
        response = Response({"status": FlowRun.Status.FILTERED, "run_id": str(run.id), "status_url": status_url}, headers=headers)
        response.langrun_counted_by_ledger = not run.deduplicated  # /metrics counts a new filtered run from the ledger
        return response

    @staticmethod
    def _accepted(run: FlowRun, status_url: str) -> tuple[dict, dict]:
        # The fields WebhookAcceptedSerializer documents (for the schema).
        body = {"message": ACCEPTED_MESSAGE, "status": "in progress", "run_id": str(run.id), "status_url": status_url}
        headers = {"Location": status_url}
        if run.deduplicated:
            headers["Idempotent-Replayed"] = "true"
        return body, headers


class IngestTokenWebhookView(WebhookView):
    """A flow's webhook at its ingest token's own URL, for senders that can set neither headers nor a query string.

    The same checks and intake as WebhookView; only the caller is found otherwise: the token in the path names the
    flow and stands in for the API key. A token that does not hold is the 403 of a request without credentials.
    JSON answers only: the browsable API's page would print the URL, token included.
    """

    renderer_classes = [JSONRenderer]

    def _lookup(self, request, route: dict, user_id, body: bytes):
        return functools.partial(targets.webhook_target_of_ingest_token, token=route["token"])


class SigningSecretSerializer(serializers.Serializer):
    signing_secret = serializers.CharField(
        allow_null=True,
        help_text="Shown only in this response: the generated secret (whsec_...); null when you gave the secret.",
    )
    previous_secret_valid_until = serializers.DateTimeField(allow_null=True)


class SigningSecretInputSerializer(serializers.Serializer):
    secret = StrictCharField(
        required=False,
        min_length=1,
        max_length=100,
        trim_whitespace=False,
        help_text="A secret your provider issued (Stripe's whsec_..., Slack's signing secret, Shopify's app secret) or a token; "
        "without it one is generated.",
    )


class FlowSigningSecretView(APIView):
    """POST: create or rotate the flow's webhook signing secret (the old one stays valid for the grace period).
    DELETE: stop requiring signatures. Another user's flow is a 404."""

    serializer_class = SigningSecretSerializer

    def _flow(self, request, pk) -> Flow:
        return get_object_or_404(Flow.objects.filter(user=request.user), pk=pk)

    def post(self, request, pk):
        flow = self._flow(request, pk)
        try:
            data = request.data
        except exceptions.ParseError as exc:  # an unsupported content type stays the API's usual 415
            raise RequestValidationError.single(
                ["body"], f'Send JSON such as {{"secret": "…"}}, or no body: {exc.detail}', "json_invalid"
            ) from exc
        if not isinstance(data, dict):
            raise RequestValidationError.single(["body"], 'Send a JSON object such as {"secret": "…"}, or no body.', "dict_type")
        given = SigningSecretInputSerializer(data=data)
        given.is_valid(raise_exception=True)
        if "secret" in given.validated_data:
            signatures.webhook_signing_secret_set(flow=flow, secret=given.validated_data["secret"])
            secret = None  # never echoed: the caller has it
        else:
            secret = signatures.webhook_signing_secret_rotate(flow=flow)
        data = {"signing_secret": secret, "previous_secret_valid_until": flow.signing_secret_previous_expires_at}
        return Response(SigningSecretSerializer(data).data, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})

    def delete(self, request, pk):
        signatures.webhook_signing_secret_remove(flow=self._flow(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class RunAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = RunAttempt
        fields = ["number", "outcome", "error", "started_at", "finished_at"]


class RunAttemptsView(APIView):
    """Every attempt at one of your runs, oldest first (retries and recoveries). Another user's run is a 404."""

    serializer_class = RunAttemptSerializer

    def get(self, request, pk):
        run = get_object_or_404(FlowRun.objects.filter(flow__user=request.user), pk=pk)
        return Response(RunAttemptSerializer(run.attempt_log.all(), many=True).data)
