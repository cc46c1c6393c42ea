"""SPEC's JSON API paths. Included before the admin, whose catch-all would take them.

Each path serves ninja's operation registered at it (api/views.py, api/control.py)
behind the guard (endpoint.guarded), via ``service.django_view``."""

from django.urls import path, re_path

from migration_console.api import control, views  # noqa: F401 - they register the operations
from migration_console.api.service import django_view

app_name = "migrations_api"

urlpatterns = [
    path("admin/migrations/status", django_view("status"), name="status"),
    path("admin/migrations/run", django_view("run"), name="run"),
    path("admin/migrations/rollback", django_view("rollback"), name="rollback"),
    path("admin/migrations/baseline", django_view("baseline"), name="baseline"),
    path("admin/migrations/repair", django_view("repair"), name="repair"),
    path("admin/migrations/history", django_view("history"), name="history"),
    path("admin/migrations/runs/<int:run_id>", django_view("runs/{run_id}"), name="run-detail"),
    path(
        "admin/migrations/runs/<int:run_id>/cancel",
        django_view("runs/{run_id}/cancel"),
        name="run-cancel",
    ),
    path(
        "admin/migrations/runs/<int:run_id>/approve",
        django_view("runs/{run_id}/approve"),
        name="run-approve",
    ),
    path(
        "admin/migrations/runs/<int:run_id>/reject",
        django_view("runs/{run_id}/reject"),
        name="run-reject",
    ),
    path("admin/migrations/unlock", django_view("unlock"), name="unlock"),
    path("admin/migrations/openapi.json", django_view("openapi.json"), name="openapi"),
    re_path(r"^admin/migrations(?:/(?P<rest>.*))?$", views.not_found, name="not_found"),
]
