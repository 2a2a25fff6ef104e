"""Serializers of subscriptions, their secrets, and deliveries."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from rest_framework import serializers

from langrun.routers import route_url
from langrun.serializers import StrictCharField
from webhooks.alerts.models import Delivery, Subscription


class SubscriptionSerializer(serializers.ModelSerializer):
    """A subscription as listed: never its secret (shown once, on create and on rotate)."""

    flow = serializers.UUIDField(
        source="flow_id", required=False, allow_null=True, help_text="Only this flow's runs; empty: all your flows."
    )
    url = StrictCharField(required=False, allow_blank=True, max_length=2000, help_text="Where events are POSTed.")
    # Not an EmailField: its schema's `format: email` would not hold for the empty value a URL subscription has.
    email = StrictCharField(required=False, allow_blank=True, max_length=254, help_text="Or an address events are mailed to.")
    events = serializers.ListField(child=serializers.ChoiceField(choices=Subscription.Event.choices), min_length=1)
    deliveries_url = serializers.SerializerMethodField()

    class Meta:
        model = Subscription
        fields = [
            "id",
            "flow",
            "url",
            "email",
            "events",
            "backlog_threshold",
            "backlog_age_seconds",
            "is_active",
            "created_at",
            "updated_at",
            "deliveries_url",
        ]
        read_only_fields = ["id", "created_at", "updated_at", "deliveries_url"]

    def get_deliveries_url(self, sub) -> str:
        return route_url(self.context.get("request"), "delivery-list", query=f"subscription={sub.pk}")

    def validate_email(self, value: str) -> str:
        if value:
            try:
                validate_email(value)
            except DjangoValidationError:
                raise serializers.ValidationError("Enter a valid email address.", code="invalid") from None
        return value

    def validate(self, attrs):
        url = attrs.get("url", getattr(self.instance, "url", ""))
        email = attrs.get("email", getattr(self.instance, "email", ""))
        if bool(url) == bool(email):
            raise serializers.ValidationError({"url": "Give either a url or an email, not both."}, code="invalid")
        events = attrs.get("events", getattr(self.instance, "events", []))
        threshold = attrs.get("backlog_threshold", getattr(self.instance, "backlog_threshold", None))
        age = attrs.get("backlog_age_seconds", getattr(self.instance, "backlog_age_seconds", None))
        if Subscription.Event.FLOW_BACKLOG in events and threshold is None and age is None:
            raise serializers.ValidationError(
                {"backlog_threshold": "flow.backlog needs backlog_threshold, backlog_age_seconds or both."}, code="required"
            )
        return attrs


class SubscriptionCreatedSerializer(SubscriptionSerializer):
    """A subscription just made: `secret` (whsec_...) verifies its deliveries' signatures; shown this once."""

    secret = serializers.CharField(read_only=True)

    class Meta(SubscriptionSerializer.Meta):
        fields = [*SubscriptionSerializer.Meta.fields, "secret"]


class SecretSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text="Shown only in this response: the Standard Webhooks secret (whsec_...).")


class DeliverySerializer(serializers.ModelSerializer):
    """One event for one receiver, with every attempt: `webhook_id` is the Standard Webhooks `webhook-id` it carries."""

    webhook_id = serializers.CharField(read_only=True)
    subscription = serializers.UUIDField(source="subscription_id", read_only=True, allow_null=True)
    run = serializers.UUIDField(source="run_id", read_only=True, allow_null=True)
    flow = serializers.UUIDField(source="flow_id", read_only=True, allow_null=True)
    attempts = serializers.ListField(child=serializers.DictField(), read_only=True)
    url = serializers.CharField(read_only=True, help_text="Where it is POSTed; empty for an e-mail.")
    email = serializers.CharField(read_only=True, help_text="Where it is mailed; empty for a URL.")

    class Meta:
        model = Delivery
        fields = [
            "id",
            "webhook_id",
            "subscription",
            "kind",
            "run",
            "flow",
            "event",
            "url",
            "email",
            "status",
            "attempt_count",
            "attempts",
            "next_attempt_at",
            "payload",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields
