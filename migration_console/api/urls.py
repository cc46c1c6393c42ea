"""SPEC's JSON API paths. Included before the admin, whose catch-all would take them."""

from django.urls import path, re_path

from migration_console.api import control, views

app_name = "migrations_api"

urlpatterns = [
    path("admin/migrations/status", views.status, name="status"),
    path("admin/migrations/run", views.run, name="run"),
    path("admin/migrations/rollback", views.rollback, name="rollback"),
    path("admin/migrations/baseline", views.baseline, name="baseline"),
    path("admin/migrations/repair", views.repair, name="repair"),
    path("admin/migrations/history", views.history, name="history"),
    path("admin/migrations/runs/<int:run_id>", views.run_detail, name="run-detail"),
    path("admin/migrations/runs/<int:run_id>/cancel", control.cancel, name="run-cancel"),
    path("admin/migrations/unlock", control.unlock, name="unlock"),
    path("admin/migrations/openapi.json", views.openapi, name="openapi"),
    re_path(r"^admin/migrations(?:/(?P<rest>.*))?$", views.not_found, name="not_found"),
]
