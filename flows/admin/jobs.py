"""The admin of background jobs (bulk replays): their filters and progress, read-only."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from flows.admin.common import AdminMedia, StatusBadgeColumn, pretty_json
from flows.models import ReplayJob
from langrun.admin import OwnedModelAdmin


@admin.register(ReplayJob)
class ReplayJobAdmin(StatusBadgeColumn, OwnedModelAdmin):
    """Bulk replays started from the API or the run list's replay action; a worker does them, this page follows them."""

    list_display = ["short_id", "status_badge", "progress", "failed", "owner", "created_at", "finished_at"]
    list_display_links = ["short_id"]
    list_filter = ["status"]
    list_select_related = ["user"]
    ordering = ["-created_at"]
    Media = AdminMedia
    fields = [
        "id",
        "status_badge",
        "progress",
        "failed",
        "filters_display",
        "current_version",
        "errors_display",
        "error",
        "created_at",
        "started_at",
        "finished_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False  # started from the API or the run list's replay action

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="job", ordering="created_at")
    def short_id(self, job):
        return str(job.pk)[:8]

    @admin.display(description="replays created")
    def progress(self, job):
        percent = 100 * job.created // job.matched if job.matched else 100
        return format_html("{} of {} ({}%)", job.created, job.matched, percent)

    @admin.display(description="filters")
    def filters_display(self, job):
        return pretty_json(job.filters)

    @admin.display(description="runs not replayed (first ones)")
    def errors_display(self, job):
        return pretty_json(job.errors) if job.errors else "–"
