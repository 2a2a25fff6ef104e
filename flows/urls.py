from django.urls import path, re_path

from flows import job_views, run_views, schedule_views, stream_views, version_views, views
from langrun.routers import OptionalSlashRouter

UUID_RE = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


router = OptionalSlashRouter()
router.register("flows", views.FlowViewSet, basename="flow")
router.register("variables", views.VariableViewSet, basename="variable")
router.register("runs", views.FlowRunViewSet, basename="flowrun")
router.register("jobs", job_views.JobViewSet, basename="job")
router.register("schedules", schedule_views.FlowScheduleViewSet, basename="schedule")

urlpatterns = [
    path("task/<str:task_id>", views.TaskStatusView.as_view(), name="task-status"),
    re_path(r"^runs/replay/?$", job_views.BulkReplayView.as_view(), name="run-bulk-replay"),  # before runs/{id}
    re_path(r"^components/?$", views.ComponentListView.as_view(), name="component-list"),
    re_path(r"^flows/upload/?$", views.FlowUploadView.as_view(), name="flow-upload"),
    re_path(r"^flows/(?P<pk>[^/]+)/export/?$", views.FlowExportView.as_view(), name="flow-export"),
    re_path(rf"^flows/(?P<flow_id>{UUID_RE})/versions/?$", version_views.FlowVersionListView.as_view(), name="flowversion-list"),
    path("flows/<uuid:flow_id>/versions/<int:number>", version_views.FlowVersionDetailView.as_view(), name="flowversion-detail"),
    path("flows/<uuid:flow_id>/versions/<int:number>/restore", version_views.FlowVersionRestoreView.as_view(), name="flowversion-restore"),
    path("run/<str:flow_id_or_name>", run_views.SimplifiedRunView.as_view(), name="run-flow"),
    path("runs/<uuid:pk>/events", stream_views.RunEventsView.as_view(), name="flowrun-events"),
    path("webhook-events/<str:flow_id_or_name>", stream_views.WebhookEventsView.as_view(), name="webhook-events"),
    path("monitor/builds", views.MonitorBuildsView.as_view(), name="monitor-builds"),
    *router.urls,
]
