"""``CSRF_FAILURE_VIEW``: a POST refused for CSRF is an audit row, then Django's 403.

The action and target come from the URL the POST was aimed at. A refused run,
rollback, baseline or repair still counts against the per-IP run limit (and a
refused login against the login limit), so dropping the token is no way around
either.
"""

from django.http import JsonResponse
from django.views.csrf import csrf_failure as django_csrf_failure

from accounts.ratelimit import RateLimiterUnavailable
from accounts.views import ratelimited
from migration_console.api.conf import is_api_path
from migration_console.console.guards import (
    audit_attempt,
    login_rate_limited,
    refuse_uncounted,
    run_rate_limited,
)
from migration_console.core.models import AuditEvent

TARGET_ACTIONS = ("run", "rollback", "baseline", "repair")


def _aimed_at(request) -> tuple[str, str]:
    """(action, target) of the refused POST: ``run`` / ``db_main`` for the console's
    run URL, ``login`` for the login, else ``post``."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "post", ""
    name = match.kwargs.get("name", "")
    action = match.kwargs.get("action") or (match.url_name or "")
    if action == "target-run":
        action = "run"
    elif action == "console-login":
        action = "login"
    elif action not in TARGET_ACTIONS:
        action = "post"
    return action, name if isinstance(name, str) else ""


def _typed_username(request) -> str | None:
    try:
        return request.POST.get("username") or None
    except Exception:  # an unreadable body: the row still names the attempt
        return None


def csrf_failure(request, reason: str = ""):
    action, target = _aimed_at(request)
    actor = _typed_username(request) if action == "login" else None
    try:
        limited = (action in TARGET_ACTIONS and run_rate_limited(request)) or (
            action == "login" and login_rate_limited(request)
        )
    except RateLimiterUnavailable as exc:
        return refuse_uncounted(
            request, exc, action=action, target=target, actor=actor, note=" (CSRF check failed)"
        )
    if limited:
        audit_attempt(
            request,
            action=action,
            outcome=AuditEvent.Outcome.RATE_LIMITED,
            target=target,
            message="too many requests (CSRF check failed)",
            actor=actor,
        )
        return ratelimited(request)
    audit_attempt(
        request,
        action=action,
        outcome=AuditEvent.Outcome.DENIED,
        target=target,
        message=f"CSRF check failed: {reason}: {request.method} {request.path}"[:500],
        actor=actor,
    )
    if is_api_path(request.path):  # SPEC: JSON API: never an HTML page
        return JsonResponse({"error": "forbidden", "message": "CSRF check failed"}, status=403)
    return django_csrf_failure(request, reason=reason)
