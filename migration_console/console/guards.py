"""Who may see and do what in the console: accounts.access rules applied to requests.

Every refused POST writes an audit row (channel ``console``, outcome ``denied``
or ``rate_limited``) before anything else happens, and nothing runs.
"""

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django_ratelimit.core import is_ratelimited

from accounts.access import Decision, can_run, can_view, can_view_audit
from accounts.ip import client_ip
from accounts.views import ratelimited
from migration_console.console import conf
from migration_console.core.models import AuditEvent, Channel
from migration_console.core.services.audit import audit_record
from migration_console.core.services.caller import Caller

RUN_RATE_GROUP = "console-run"
LOGIN_RATE_GROUP = "console-login"


def actor_of(request) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return user.get_username()
    return "anonymous"


def caller_of(request, *, actor: str | None = None) -> Caller:
    """Who asks from the console: the signed-in user (``actor`` overrides the name,
    e.g. the username typed at a refused login) and the client IP."""
    user = getattr(request, "user", None)
    return Caller(
        actor=actor or actor_of(request),
        channel=Channel.CONSOLE,
        user=user if user is not None and user.is_authenticated else None,
        client_ip=client_ip(request) or None,
    )


def audit_attempt(
    request, *, action: str, outcome: str, target: str = "", message: str = "", actor=None
) -> AuditEvent:
    return audit_record(
        caller=caller_of(request, actor=actor),
        action=action,
        outcome=outcome,
        target=target,
        message=message,
    )


def admin_context(request, **extra) -> dict:
    from django.contrib import admin

    return {**admin.site.each_context(request), **extra}


def denied_response(request, decision: Decision, *, title: str = "Not allowed"):
    context = admin_context(request, title=title, reason=decision.reason)
    return render(request, "console/denied.html", context, status=decision.status or 403)


def _guard(check):
    def decorator(view):
        @wraps(view)
        @never_cache
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path(), reverse("admin:login"))
            decision = check(request.user)
            if not decision:
                return denied_response(request, decision)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


view_required = _guard(can_view)
audit_view_required = _guard(can_view_audit)


def run_rate_limited(request) -> bool:
    """Count this POST against the per-IP run limit; True once the limit is exceeded."""
    return is_ratelimited(
        request, group=RUN_RATE_GROUP, key="ip", rate=conf.run_rate, method="POST", increment=True
    )


def login_rate_limited(request) -> bool:
    return is_ratelimited(
        request,
        group=LOGIN_RATE_GROUP,
        key="ip",
        rate=conf.login_rate,
        method="POST",
        increment=True,
    )


def guard_action(request, *, action: str, target: str):
    """For a POST that changes a target: rate limit, then can_run. Returns a response
    when refused (after writing the audit row), else None."""
    if run_rate_limited(request):
        audit_attempt(
            request,
            action=action,
            outcome=AuditEvent.Outcome.RATE_LIMITED,
            target=target,
            message="too many requests",
        )
        return ratelimited(request)
    if not request.user.is_authenticated:
        audit_attempt(
            request,
            action=action,
            outcome=AuditEvent.Outcome.DENIED,
            target=target,
            message="not authenticated",
        )
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    decision = can_run(request.user, client_ip(request))
    if not decision:
        audit_attempt(
            request,
            action=action,
            outcome=AuditEvent.Outcome.DENIED,
            target=target,
            message=decision.reason,
        )
        return denied_response(request, decision)
    return None
