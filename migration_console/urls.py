from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from migration_console.console import views as console_views

urlpatterns = [
    # The web console (before the admin's catch-all); the admin login is rate limited.
    path("admin/login/", console_views.login, name="console-login"),
    path("admin/console/", include("migration_console.console.urls")),
    # The JSON API (SPEC: JSON API): exact paths, JSON answers only, before the admin.
    path("", include("migration_console.api.urls")),
    path("admin/", admin.site.urls),
    path("", include("migration_console.ops.urls")),  # /healthz /readyz /metrics
    path("", RedirectView.as_view(url="/admin/console/", permanent=False)),
]

# JSON on API paths, Django's pages elsewhere (migration_console.api.views).
handler400 = "migration_console.api.views.error_400"
handler403 = "migration_console.api.views.error_403"
handler404 = "migration_console.api.views.error_404"
handler500 = "migration_console.api.views.error_500"
