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
router.register("variables", views.VariableViewSet, basename="variable")

urlpatterns = [
    path("runs/<str:pk>", views.FlowRunDetailView.as_view(), name="flowrun-detail"),
    path("task/<str:task_id>", views.TaskStatusView.as_view(), name="task-status"),
    path("components/", views.ComponentListView.as_view(), name="component-list"),
    path("components", views.ComponentListView.as_view()),
    path("flows/upload/", views.FlowUploadView.as_view(), name="flow-upload"),
    path("flows/upload", views.FlowUploadView.as_view()),
    path("flows/<str:pk>/export", views.FlowExportView.as_view(), name="flow-export"),
    path("flows/<str:pk>/export/", views.FlowExportView.as_view()),
    *router.urls,
]
