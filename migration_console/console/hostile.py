"""``HostileInputMiddleware``: control characters in the admin's own pages are a 400
and an audit row, never a 500 (SPEC: Audit).

The console's views (``guards``) and the JSON API (``api.endpoint``) refuse such
input themselves, after their own rate limits and access checks; this covers
every other page Django's admin serves (change lists, their filters, object
pages), where a NUL would otherwise reach a query that PostgreSQL refuses.
"""

from migration_console.console.guards import hostile_input, refuse_hostile_input
from migration_console.core.services.audit import clean_text

SELF_GUARDED_NAMESPACES = ("console", "migrations_api")
SELF_GUARDED_VIEWS = ("console-login",)


class HostileInputMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        match = getattr(request, "resolver_match", None)
        if match is not None and (
            match.namespace in SELF_GUARDED_NAMESPACES or match.url_name in SELF_GUARDED_VIEWS
        ):
            return None
        where = hostile_input(request, view_kwargs)
        if where is None:
            return None
        action = "view" if request.method in ("GET", "HEAD") else "post"
        page = clean_text(request.path, limit=200)
        return refuse_hostile_input(request, action=action, target="", where=f"{where} of {page}")
