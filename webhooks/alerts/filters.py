"""Query-string filters for the subscription and delivery lists."""

import django_filters

from webhooks.alerts.models import Delivery, Subscription


class SubscriptionFilter(django_filters.FilterSet):
    flow = django_filters.UUIDFilter(field_name="flow_id", help_text="Only the subscriptions of this flow.")

    class Meta:
        model = Subscription
        fields = ["flow"]


class DeliveryFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Delivery.Status.choices)
    kind = django_filters.ChoiceFilter(choices=Delivery.Kind.choices)
    event = django_filters.ChoiceFilter(choices=Subscription.Event.choices)
    subscription = django_filters.UUIDFilter(field_name="subscription_id", help_text="Only this subscription's deliveries.")
    run = django_filters.UUIDFilter(field_name="run_id", help_text="Only the deliveries of this run.")
    flow = django_filters.UUIDFilter(field_name="flow_id", help_text="Only the deliveries about this flow.")

    class Meta:
        model = Delivery
        fields = ["status", "kind", "event", "subscription", "run", "flow"]
