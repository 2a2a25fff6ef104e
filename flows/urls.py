from django.urls import path
from rest_framework.routers import SimpleRouter

from flows import views


class OptionalSlashRouter(SimpleRouter):
    """`/flows/` and `/flows/{id}` as Langflow spells them, with or without the trailing slash."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("flows", views.FlowViewSet, basename="flow")
router.register("runs", views.FlowRunViewSet, basename="flowrun")

urlpatterns = [
    path("task/<str:task_id>", views.TaskStatusView.as_view(), name="task-status"),
    path("run/<str:flow_id_or_name>", views.SimplifiedRunView.as_view(), name="run-flow"),
    path("monitor/builds", views.MonitorBuildsView.as_view(), name="monitor-builds"),
    *router.urls,
]
