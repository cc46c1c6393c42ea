"""Console URLs, mounted under /admin/console/ (before the admin's own catch-all)."""

from django.urls import path

from migration_console.console import rollback, views

app_name = "console"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("targets/<str:name>/", views.target_detail, name="target-status"),
    path("targets/<str:name>/plan/", views.target_plan, name="target-plan"),
    path("targets/<str:name>/run/", views.target_run, name="target-run"),
    path("targets/<str:name>/rollback/", rollback.target_rollback, name="target-rollback"),
    path(
        "targets/<str:name>/rollback/confirm/",
        rollback.target_rollback_confirm,
        name="target-rollback-confirm",
    ),
    path("targets/<str:name>/history/", views.target_history, name="target-history"),
    path("runs/<int:run_id>/", views.run_progress, name="run-progress"),
    path("runs/<int:run_id>/progress.json", views.run_progress_json, name="run-progress-json"),
    path("audit/", views.audit_review, name="audit"),
    path("audit/export.csv", views.audit_export, name="audit-export"),
]
