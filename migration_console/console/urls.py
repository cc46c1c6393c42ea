"""Console URLs, mounted under /admin/console/ (before the admin's own catch-all)."""

from django.urls import path

from migration_console.console import audit_views, control, groups, maintenance, requests, views
from migration_console.console.members import member_routes

app_name = "console"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("targets/<str:name>/", views.target_detail, name="target-status"),
    path("targets/<str:name>/summary.json", views.target_summary, name="target-summary"),
    path("targets/<str:name>/plan/", views.target_plan, name="target-plan"),
    path("targets/<str:name>/run/", views.target_run, name="target-run"),
    path("targets/<str:name>/unlock/", control.target_unlock, name="target-unlock"),
    # target-rollback, target-rollback-confirm, target-baseline, ... target-repair-confirm
    *(
        route
        for action in maintenance.PAGES
        for route in (
            path(
                f"targets/<str:name>/{action}/",
                maintenance.maintenance_review,
                {"action": action},
                name=f"target-{action}",
            ),
            path(
                f"targets/<str:name>/{action}/confirm/",
                maintenance.maintenance_confirm,
                {"action": action},
                name=f"target-{action}-confirm",
            ),
        )
    ),
    path("targets/<str:name>/history/", views.target_history, name="target-history"),
    path("runs/<int:run_id>/", views.run_progress, name="run-progress"),
    path("runs/<int:run_id>/progress.json", views.run_progress_json, name="run-progress-json"),
    path("runs/<int:run_id>/cancel/", control.run_cancel_confirm, name="run-cancel"),
    path("requests/", requests.requests_list, name="requests"),
    path("requests/<int:run_id>/", requests.request_detail, name="request"),
    path(
        "requests/<int:run_id>/approve/",
        requests.request_decide_confirm,
        {"decision": "approve"},
        name="request-approve",
    ),
    path(
        "requests/<int:run_id>/reject/",
        requests.request_decide_confirm,
        {"decision": "reject"},
        name="request-reject",
    ),
    path("audit/", audit_views.audit_review, name="audit"),
    path("audit/export.csv", audit_views.audit_export, name="audit-export"),
    path("groups/<str:name>/", groups.group_detail, name="group"),
    path("groups/<str:name>/summary.json", groups.group_summary, name="group-summary"),
    # "action": a POST refused for CSRF is audited as a run of the group (console.csrf).
    path("groups/<str:name>/run/", groups.group_run, {"action": "run"}, name="group-run"),
]
# The same target pages for a group's member, <group>/<schema> (after the originals).
urlpatterns += member_routes(urlpatterns)
