from django.urls import re_path

from langrun.routers import OptionalSlashRouter
from webhooks.alerts import views

router = OptionalSlashRouter()
router.register("subscriptions", views.SubscriptionViewSet, basename="subscription")
router.register("deliveries", views.DeliveryViewSet, basename="delivery")

urlpatterns = [
    re_path(r"^callback-secret/?$", views.CallbackSecretView.as_view(), name="callback-secret"),
    *router.urls,
]
