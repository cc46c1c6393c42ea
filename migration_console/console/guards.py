"""Who may see and do what in the console: accounts.access rules applied to requests.

Every refused request writes one audit row (channel ``console``; outcome
``denied``, ``rate_limited``, ``refused``, or ``error`` with a 503 when the rate
limiter cannot count) before anything else happens, and nothing runs: a POST
refused by rate, access, hostile bytes or an unknown target, a GET by a
signed-in user without the permission, a failed login.
Anonymous GETs are only sent to the login page, without a row.
"""

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.http import Http404
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache

from accounts.access import Decision, can_run, can_view, can_view_audit
from accounts.ip import client_ip
from accounts.ratelimit import RateLimiterUnavailable, over_limit
from accounts.signals import LOGIN_FAILURE_AUDITED
from accounts.views import rate_limiter_unavailable, ratelimited
from migration_console.console import conf
from migration_console.core.models import AuditEvent, Channel
from migration_console.core.services.audit import audit_record, clean_text, has_unsafe_text
from migration_console.core.services.caller import Caller
from migration_console.core.services.errors import UnknownTarget
from migration_console.core.services.targets import target_get

RUN_RATE_GROUP = "console-run"
LOGIN_RATE_GROUP = "console-login"
# A typed comment may span lines; nothing else a console form or URL carries
# has a use for control characters.
FIELD_KEEPS = frozenset("\t\n\r")


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

    # Links to the audit review only for those it would answer (no dead ends).
    may_audit = bool(can_view_audit(getattr(request, "user", None)))
    return {**admin.site.each_context(request), "may_audit": may_audit, **extra}


def denied_response(request, decision: Decision, *, title: str = "Not allowed"):
    context = admin_context(request, title=title, reason=decision.reason)
    return render(request, "console/denied.html", context, status=decision.status or 403)


def hostile_input(request, segments: dict | None = None) -> str | None:
    """What carries control characters (NUL included), if anything does: a URL
    segment, a query parameter or a form field. Such bytes would reach a database
    query (PostgreSQL refuses NUL), so the request is refused before any view runs."""
    for name, value in (segments or {}).items():
        if isinstance(value, str) and has_unsafe_text(value):
            return f"URL segment {name!r}"
    for where, data in (("query parameter", request.GET), ("form field", request.POST)):
        for key, values in data.lists():
            if has_unsafe_text(key) or any(has_unsafe_text(v, keep=FIELD_KEEPS) for v in values):
                return f"{where} {clean_text(key, limit=40)!r}"
    return None


def refuse_hostile_input(request, *, action: str, target: str, where: str):
    reason = f"control characters in the {where}: refused"
    audit_attempt(
        request, action=action, outcome=AuditEvent.Outcome.REFUSED, target=target, message=reason
    )
    return denied_response(request, Decision(False, reason, 400), title="Bad request")


def require_known_target(request, *, action: str, name: str) -> None:
    """Http404 for a name that is no configured target, after its audit row."""
    try:
        target_get(name)
    except UnknownTarget as exc:
        audit_attempt(
            request,
            action=action,
            outcome=AuditEvent.Outcome.REFUSED,
            target=name,
            message=exc.message,
        )
        raise Http404(clean_text(exc.message, limit=200)) from None


def _guard(check):
    def decorator(view):
        @wraps(view)
        @never_cache
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path(), reverse("admin:login"))
            name = kwargs.get("name", "")
            decision = check(request.user)
            if not decision:
                audit_attempt(
                    request,
                    action="view",
                    outcome=AuditEvent.Outcome.DENIED,
                    target=name,
                    message=f"{decision.reason}: {request.method} {request.path}"[:500],
                )
                return denied_response(request, decision)
            where = hostile_input(request, kwargs)
            if where:
                return refuse_hostile_input(request, action="view", target=name, where=where)
            if _names_a_target(request):
                require_known_target(request, action="view", name=name)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def _names_a_target(request) -> bool:
    """The URL is one of ``targets/<name>/...`` (groups and runs have pages of their own)."""
    match = getattr(request, "resolver_match", None)
    return bool(match and (match.url_name or "").startswith("target-") and "name" in match.kwargs)


view_required = _guard(can_view)
audit_view_required = _guard(can_view_audit)


def run_rate_limited(request) -> bool:
    """Count this POST against the per-IP run limit; True once the limit is exceeded.
    Raises RateLimiterUnavailable when the count cannot be kept."""
    return over_limit(request, group=RUN_RATE_GROUP, key="ip", rate=conf.run_rate, method="POST")


def login_rate_limited(request) -> bool:
    return over_limit(
        request, group=LOGIN_RATE_GROUP, key="ip", rate=conf.login_rate, method="POST"
    )


def refuse_uncounted(
    request, exc: RateLimiterUnavailable, *, action: str, target="", actor=None, note=""
):
    """503 for a POST the rate limit could not count (fail closed), after its row."""
    audit_attempt(
        request,
        action=action,
        outcome=AuditEvent.Outcome.ERROR,
        target=target,
        message=f"{exc}{note}",
        actor=actor,
    )
    return rate_limiter_unavailable(request)


def guard_action(request, *, action: str, target: str):
    """For a POST that changes a target: rate limit, can_run, no control characters,
    a configured target. Returns a response (or raises Http404) when refused, after
    writing the one audit row; else None."""
    try:
        limited = run_rate_limited(request)
    except RateLimiterUnavailable as exc:
        return refuse_uncounted(request, exc, action=action, target=target)
    if limited:
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
    where = hostile_input(request, {"name": target})
    if where:
        return refuse_hostile_input(request, action=action, target=target, where=where)
    if _names_a_target(request):
        require_known_target(request, action=action, name=target)
    return None


def _wait_words(seconds: int) -> str:
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def login_limited_response(request):
    """429 for a login over its limit: the admin's look, how long to wait, a way back
    (the rate's whole period: django-ratelimit counts in fixed windows)."""
    from django_ratelimit.core import _split_rate

    _, period = _split_rate(conf.login_rate())
    context = admin_context(
        request,
        title="Too many sign-in attempts",
        wait=_wait_words(period),
        client_ip=client_ip(request),
        login_url=request.get_full_path(),
    )
    return render(request, "console/login_limited.html", context, status=429)


def login_attempt(request, login_view, **kwargs):
    """The admin login with every refused POST audited once: over the per-IP limit
    (429), control characters in a field (400), a wrong password (the row comes from
    ``accounts.signals``), or any other form the login refused."""
    if request.method != "POST":
        return login_view(request, **kwargs)
    typed = request.POST.get("username") or "anonymous"
    try:
        limited = login_rate_limited(request)
    except RateLimiterUnavailable as exc:
        return refuse_uncounted(request, exc, action="login", actor=typed)
    if limited:
        audit_attempt(
            request,
            action="login",
            outcome=AuditEvent.Outcome.RATE_LIMITED,
            message="too many login attempts",
            actor=typed,
        )
        return login_limited_response(request)
    where = hostile_input(request)
    if where:
        reason = f"control characters in the {where}: refused"
        audit_attempt(
            request, action="login", outcome=AuditEvent.Outcome.REFUSED, message=reason, actor=typed
        )
        return denied_response(request, Decision(False, reason, 400), title="Bad request")
    response = login_view(request, **kwargs)
    if response.status_code == 200 and not getattr(request, LOGIN_FAILURE_AUDITED, False):
        # The form was refused before any password was checked (a field missing or
        # too long, a user who is not staff): no user_login_failed signal fired.
        audit_attempt(
            request,
            action="login",
            outcome=AuditEvent.Outcome.DENIED,
            message="login form refused",
            actor=typed,
        )
    return response
