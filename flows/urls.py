from django.urls import path
from rest_framework.routers import SimpleRouter

from flows import views

router = SimpleRouter(trailing_slash="/?")
router.register("flows", views.FlowViewSet, basename="flow")

urlpatterns = [
    path("runs/<str:pk>", views.FlowRunDetailView.as_view(), name="flowrun-detail"),
    path("task/<str:task_id>", views.TaskStatusView.as_view(), name="task-status"),
    *router.urls,
]
