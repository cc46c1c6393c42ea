"""Console **Cancel** (run progress page) and **Break lock** (target status page):
confirmed POSTs, guarded like a run (rate, superuser on an allowed IP, CSRF, no
control characters), translated to ``run_cancel`` / ``lock_break``, which audit."""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from migration_console.console.guards import admin_context, audit_attempt, caller_of, guard_action
from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.control import UnknownRun, lock_break, run_cancel
from migration_console.core.services.errors import MigrationConsoleError, UnknownTarget
from migration_console.core.services.targets import target_get


def _refused(request, *, action: str, target: str, message: str, status: int, audit: bool):
    if audit:  # else the service wrote the row already
        audit_attempt(
            request,
            action=action,
            outcome=AuditEvent.Outcome.REFUSED,
            target=target,
            message=message,
        )
    context = admin_context(request, title=f"{action} refused", reason=message)
    return render(request, "console/denied.html", context, status=status)


def _see_other(url: str):
    response = redirect(url)
    response.status_code = 303  # the page is fetched again with GET
    return response


@never_cache
@require_POST
def run_cancel_confirm(request, run_id):
    run = Run.objects.filter(pk=run_id).first()
    refused = guard_action(request, action="cancel", target=run.target if run else "")
    if refused is not None:
        return refused
    caller = caller_of(request)
    if run is None:
        try:
            run_cancel(run_id=run_id, caller=caller)  # records the refusal
        except UnknownRun as exc:
            raise Http404(exc.message) from None
    typed = request.POST.get("confirm_database", "").strip()
    if typed != run.target:
        message = f"Confirmation did not match: type the database name {run.target!r}."
        return _refused(
            request, action="cancel", target=run.target, message=message, status=400, audit=True
        )
    try:
        run = run_cancel(run_id=run.pk, caller=caller)
    except MigrationConsoleError as exc:
        return _refused(
            request,
            action="cancel",
            target=run.target,
            message=exc.message,
            status=exc.http_status,
            audit=False,
        )
    if run.finished:
        messages.success(request, f"Run #{run.pk} {run.state}: {run.message}")
    else:
        messages.warning(
            request,
            f"Run #{run.pk} was asked to stop but its runner has not stopped yet (frozen, or "
            "busy outside the database); it stops before its next file. Break its lock from "
            "the target's page if it stays stuck.",
        )
    return _see_other(reverse("console:run-progress", args=[run.pk]))


@never_cache
@require_POST
def target_unlock(request, name):
    refused = guard_action(request, action="unlock", target=name)
    if refused is not None:
        return refused
    try:
        target = target_get(name)
    except UnknownTarget as exc:
        raise Http404(exc.message) from None
    typed = request.POST.get("confirm_database", "").strip()
    shown = request.POST.get("holder_pid", "").strip()
    if typed != target.name or not shown.isdigit():
        message = (
            f"Confirmation did not match: type the database name {target.name!r} "
            "on the page that shows the lock holder."
        )
        return _refused(
            request, action="unlock", target=name, message=message, status=400, audit=True
        )
    try:
        result = lock_break(
            target_name=target.name,
            caller=caller_of(request),
            force=request.POST.get("force", "") in ("1", "on", "true"),
            expected_pid=int(shown),
        )
    except MigrationConsoleError as exc:
        return _refused(
            request,
            action="unlock",
            target=name,
            message=exc.message,
            status=exc.http_status,
            audit=False,
        )
    messages.success(request, result["message"][:1].upper() + result["message"][1:] + ".")
    return _see_other(reverse("console:target-status", args=[target.name]))
