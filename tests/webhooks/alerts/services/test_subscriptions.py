"""Subscriptions' services: a secret rotated on, or a change made to, a subscription deleted meanwhile."""

import pytest
from django.http import Http404

from webhooks.alerts.models import Subscription
from webhooks.alerts.services.subscriptions import subscription_create, subscription_secret_rotate, subscription_update


def test_rotating_the_secret_of_a_subscription_deleted_meanwhile_is_not_found(user, local_allowed):
    sub = subscription_create(user=user, url="http://127.0.0.1:9/hook", events=["run.failed"])
    Subscription.objects.filter(pk=sub.pk).delete()  # a DELETE between the view's lookup and the rotation
    with pytest.raises(Http404):
        subscription_secret_rotate(subscription=sub)
    assert not Subscription.objects.exists()


def test_changing_a_subscription_deleted_meanwhile_is_not_found_and_writes_nothing(user, local_allowed):
    sub = subscription_create(user=user, url="http://127.0.0.1:9/hook", events=["run.failed"])
    Subscription.objects.filter(pk=sub.pk).delete()
    with pytest.raises(Http404):
        subscription_update(subscription=sub, events=["run.succeeded"])
    assert not Subscription.objects.exists()  # not written again


def test_a_subscription_to_a_flow_moved_to_another_owner_since_it_was_read_is_not_found(user, make_user, flow, local_allowed):
    # The flow is no longer the caller's: the API's owner-scoped lookup would not find it now.
    from flows.models import Flow

    stale = Flow.objects.get(pk=flow.pk)
    Flow.objects.filter(pk=flow.pk).update(user=make_user("bob"))
    with pytest.raises(Http404):
        subscription_create(user=user, flow=stale, url="http://127.0.0.1:9/hook", events=["run.failed"])
    sub = subscription_create(user=user, url="http://127.0.0.1:9/hook", events=["run.failed"])
    with pytest.raises(Http404):
        subscription_update(subscription=sub, flow=stale)
    assert Subscription.objects.get(pk=sub.pk).flow_id is None
