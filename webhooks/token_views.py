"""A flow's ingest tokens: list, create (the token is shown once), one token, revoke (`/api/v1/flows/{id}/ingest-tokens/...`)."""

from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.response import Response

from flows.models import Flow
from langrun.parsers import JSONParser
from langrun.schema import error, validation_error
from langrun.serializers import StrictCharField
from webhooks.models import IngestToken
from webhooks.tokens import ingest_token_create, ingest_token_delete, ingest_token_revoke


class IngestTokenSerializer(serializers.ModelSerializer):
    """A token as listed: never the secret, only its first characters."""

    token = serializers.CharField(source="masked", read_only=True, help_text="The token's prefix, the rest masked.")
    state = serializers.ChoiceField(choices=IngestToken.State.choices, read_only=True, help_text="Only an active token is accepted.")
    created_by = serializers.UUIDField(source="created_by_id", read_only=True, allow_null=True)

    class Meta:
        model = IngestToken
        fields = ["id", "name", "token", "state", "created_at", "created_by", "expires_at", "revoked_at", "last_used_at", "use_count"]
        read_only_fields = fields


class IngestTokenCreateSerializer(serializers.ModelSerializer):
    name = StrictCharField(max_length=100, allow_blank=True, default="")

    class Meta:
        model = IngestToken
        fields = ["name", "expires_at"]
        extra_kwargs = {"expires_at": {"default": None}}


class IngestTokenCreatedSerializer(IngestTokenSerializer):
    """A token just created: `token` is the full secret and `webhook_url` its own URL, shown this once."""

    token = serializers.CharField(read_only=True, help_text="The full token. It is shown only now; store it.")
    webhook_url = serializers.URLField(read_only=True, help_text="The flow's webhook at the token's own URL (no header needed).")

    class Meta(IngestTokenSerializer.Meta):
        fields = [*IngestTokenSerializer.Meta.fields, "webhook_url"]
        read_only_fields = fields


class _FlowIngestTokensMixin:
    def get_flow(self) -> Flow:
        return get_object_or_404(Flow, pk=self.kwargs["flow_id"], user=self.request.user)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no flow_id
            return IngestToken.objects.none()
        return IngestToken.objects.filter(flow=self.get_flow()).order_by("-created_at")


@extend_schema_view(
    get=extend_schema(
        summary="A flow's ingest tokens", responses={200: IngestTokenSerializer(many=True), 404: error("No flow of yours with this id.")}
    ),
)
class IngestTokenListView(_FlowIngestTokensMixin, generics.ListAPIView):
    """Your flow's ingest tokens, newest first, revoked and expired ones too; never the secrets. Another user's flow is a 404."""

    serializer_class = IngestTokenSerializer
    # JSON only: a form's empty `expires_at` would read as null, where the schema promises a date-time.
    parser_classes = [JSONParser]

    @extend_schema(
        summary="Create an ingest token",
        description=(
            "A token that authorises only this flow's webhook: in `x-api-key` (header or query) on "
            "`/api/v1/webhook/{flow}`, or in a URL of its own, `/api/v1/webhook/t/{token}`, for senders that can set "
            "neither headers nor query strings. The token is in this answer only. It never authenticates anything else."
        ),
        request=IngestTokenCreateSerializer,
        responses={
            201: IngestTokenCreatedSerializer,
            404: error("No flow of yours with this id."),
            422: validation_error("A `name` longer than 100 characters, or an `expires_at` that is not a future date-time."),
        },
    )
    def post(self, request, flow_id):
        flow = self.get_flow()
        body = IngestTokenCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        new = ingest_token_create(flow=flow, created_by=request.user, **body.validated_data)
        created = new.ingest_token
        created.token = new.token  # the secret, this once
        created.webhook_url = request.build_absolute_uri(reverse("webhook-token", kwargs={"token": new.token}))
        data = IngestTokenCreatedSerializer(created).data
        return Response(data, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})


class IngestTokenDetailView(_FlowIngestTokensMixin, generics.RetrieveDestroyAPIView):
    """One ingest token of your flow (never its secret); DELETE deletes it (refused from then on, and gone from lists)."""

    serializer_class = IngestTokenSerializer
    lookup_url_kwarg = "token_id"

    @extend_schema(summary="An ingest token", responses={200: IngestTokenSerializer, 404: error("No such token on a flow of yours.")})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Delete an ingest token",
        description="The token is refused from now on, as an invalid key is, and no longer listed (revoke it to keep it listed).",
        responses={204: OpenApiResponse(description="Deleted."), 404: error("No such token on a flow of yours.")},
    )
    def delete(self, request, *args, **kwargs):
        return super().delete(request, *args, **kwargs)

    def perform_destroy(self, instance):
        ingest_token_delete(ingest_token=instance)


class IngestTokenRevokeView(_FlowIngestTokensMixin, generics.GenericAPIView):
    """Revoke one ingest token of your flow: refused from now on, it stays listed as `revoked`."""

    serializer_class = IngestTokenSerializer
    lookup_url_kwarg = "token_id"

    @extend_schema(
        summary="Revoke an ingest token",
        description="The token is refused from now on, as an invalid key is; it stays listed as `revoked`. Revoking it again changes nothing.",
        request=None,
        responses={200: IngestTokenSerializer, 404: error("No such token on a flow of yours.")},
    )
    def post(self, request, flow_id, token_id):
        revoked = ingest_token_revoke(ingest_token=self.get_object())
        return Response(IngestTokenSerializer(revoked).data)
