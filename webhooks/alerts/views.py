"""Subscriptions (`/api/v1/subscriptions`), their deliveries (`/api/v1/deliveries`) and the callback secret."""

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from flows.models import Flow
from langrun.parsers import JSONParser
from langrun.schema import error, validation_error
from langrun.views import UuidLookupMixin
from webhooks.alerts.filters import DeliveryFilter, SubscriptionFilter
from webhooks.alerts.models import Delivery, Subscription
from webhooks.alerts.serializers import DeliverySerializer, SecretSerializer, SubscriptionCreatedSerializer, SubscriptionSerializer
from webhooks.alerts.services.sending import delivery_retry_now
from webhooks.alerts.services.subscriptions import (
    callback_secret_rotate,
    subscription_create,
    subscription_secret_rotate,
    subscription_update,
)

_BAD_INPUT = validation_error("An unknown event name, a URL the address guard refuses, neither or both of url and email.")
_NO_STORE = {"Cache-Control": "no-store"}


@extend_schema_view(
    list=extend_schema(summary="List your subscriptions"),
    create=extend_schema(
        summary="Subscribe to run events",
        description="Its `secret` is in this response only.",
        responses={201: SubscriptionCreatedSerializer, 404: error("No flow of yours with this id."), 422: _BAD_INPUT},
    ),
    partial_update=extend_schema(summary="Change a subscription", responses={200: SubscriptionSerializer, 422: _BAD_INPUT}),
)
class SubscriptionViewSet(UuidLookupMixin, viewsets.ModelViewSet):
    """Your subscriptions: run events (and flow backlogs) of one flow or all your flows, sent signed to a URL or by
    mail. Another user's subscription is a 404."""

    serializer_class = SubscriptionSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    queryset = Subscription.objects.none()  # for the schema; get_queryset scopes to the owner
    filterset_class = SubscriptionFilter
    # JSON only: a form cannot say `"flow": null`, and DRF reads its empty field as one.
    parser_classes = [JSONParser]

    def get_queryset(self):
        return Subscription.objects.filter(user=self.request.user)

    def _flow(self, data: dict):
        flow_id = data.pop("flow_id", None)
        if flow_id is None:
            return None
        flow = Flow.objects.filter(pk=flow_id, user=self.request.user).first()
        if flow is None:
            raise NotFound("Flow not found")
        return flow

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        subscription = subscription_create(user=request.user, flow=self._flow(data), **data)
        body = SubscriptionCreatedSerializer(subscription, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED, headers=_NO_STORE)

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        if "flow_id" in data:
            data["flow"] = self._flow(data)
        serializer.instance = subscription_update(subscription=serializer.instance, **data)

    @extend_schema(summary="A new signing secret for a subscription", request=None, responses={201: SecretSerializer})
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        secret = subscription_secret_rotate(subscription=self.get_object())
        return Response({"secret": secret}, status=status.HTTP_201_CREATED, headers=_NO_STORE)

    @extend_schema(summary="A subscription's deliveries", responses={200: DeliverySerializer(many=True)}, filters=False)
    @action(detail=True, methods=["get"], filterset_class=None)
    def deliveries(self, request, pk=None):
        queryset = Delivery.objects.filter(user=request.user, subscription=self.get_object())
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)


@extend_schema_view(
    list=extend_schema(summary="List your alert deliveries", description="Newest first, each with its attempts."),
    retrieve=extend_schema(summary="A delivery with its attempts"),
)
class DeliveryViewSet(UuidLookupMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The deliveries of your subscriptions and callbacks: pending, delivered or failed. Another user's is a 404."""

    serializer_class = DeliverySerializer
    queryset = Delivery.objects.none()
    filterset_class = DeliveryFilter

    def get_queryset(self):
        return Delivery.objects.filter(user=self.request.user)

    @extend_schema(
        summary="Send a delivery again now",
        request=None,
        responses={202: DeliverySerializer, 409: error("Its send is already due or under way: it is sent once.")},
    )
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        delivery = delivery_retry_now(delivery=self.get_object())
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class CallbackSecretView(APIView):
    """POST: a new secret signing the deliveries to your webhooks' `?callback_url=` (shown in this response only;
    the previous one stops signing at once)."""

    serializer_class = SecretSerializer

    @extend_schema(summary="A new callback signing secret", request=None, responses={201: SecretSerializer})
    def post(self, request):
        return Response({"secret": callback_secret_rotate(user=request.user)}, status=status.HTTP_201_CREATED, headers=_NO_STORE)
