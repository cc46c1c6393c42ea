"""Admin: read-only views of runs and audit events (no add, change or delete anywhere).

The console pages themselves live in ``migration_console.console`` under
/admin/console/; these change lists are the admin's own window on the rows.
"""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from migration_console.core.models import AuditEvent, Run

admin.site.site_header = "Migration Console"
admin.site.site_title = "Migration Console"
admin.site.index_title = "Administration"
admin.site.site_url = None  # no public site; the console is linked from the user tools


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows are records of what happened: viewable by who holds the view permission, never
    editable (AuditEvent additionally refuses UPDATE/DELETE with a database trigger)."""

    actions = None

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "target",
        "action",
        "state",
        "channel",
        "requested_by",
        "created_at",
        "progress_link",
    )
    list_filter = ("state", "action", "channel", "target")
    search_fields = ("requested_by", "target", "message", "plan_hash")
    date_hierarchy = "created_at"

    @admin.display(description="progress")
    def progress_link(self, obj: Run):
        return format_html('<a href="{}">open</a>', reverse("console:run-progress", args=[obj.pk]))


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "actor",
        "client_ip",
        "channel",
        "target",
        "action",
        "outcome",
        "message",
    )
    list_filter = ("outcome", "action", "channel", "target", "created_at")
    search_fields = ("actor", "target", "message", "client_ip", "token_prefix")
    date_hierarchy = "created_at"
