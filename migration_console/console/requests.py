"""Console pages of change management: open run requests, one request with its
plan, and the approve / reject confirmations. Views translate to and from
``services.approvals``, which checks who may decide and writes the audit rows."""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from accounts.access import can_run
from accounts.ip import client_ip
from migration_console.console.guards import (
    admin_context,
    audit_attempt,
    caller_of,
    guard_action,
    view_required,
)
from migration_console.core.models import Approval, AuditEvent, Run
from migration_console.core.services.approvals import request_decide
from migration_console.core.services.control import UnknownRun
from migration_console.core.services.errors import MigrationConsoleError
from migration_console.core.services.lint import lint_files
from migration_console.core.services.scheduling import next_opening, target_config
from migration_console.core.services.status import target_status
from migration_console.core.services.targets import target_get

DECIDED_SHOWN = 20


def _approvals(run: Run) -> list[Approval]:
    return list(run.approvals.all())


def _row(run: Run) -> dict:
    approvals = [a for a in _approvals(run) if a.decision == Approval.Decision.APPROVE]
    return {
        "run": run,
        "url": reverse("console:request", args=[run.pk]),
        "approved": len(approvals),
        "approvers": ", ".join(a.username for a in approvals),
    }


@require_GET
@view_required
def requests_list(request):
    open_requests = Run.objects.filter(state=Run.State.AWAITING_APPROVAL).order_by("created_at")
    decided = (
        Run.objects.filter(approvals_required__gt=0)
        .exclude(state=Run.State.AWAITING_APPROVAL)
        .order_by("-created_at")[:DECIDED_SHOWN]
    )
    context = admin_context(
        request,
        title="Run requests",
        open_requests=[_row(run) for run in open_requests.prefetch_related("approvals")],
        decided=[_row(run) for run in decided.prefetch_related("approvals")],
    )
    return render(request, "console/requests.html", context)


def _decision_permission(request, run: Run) -> tuple[bool, str]:
    """Whether this user may approve or reject ``run`` here, and why not."""
    decision = can_run(request.user, client_ip(request))
    if not decision:
        return False, decision.reason
    if run.state != Run.State.AWAITING_APPROVAL:
        return False, f"it is {run.state.replace('_', ' ')}, no longer awaiting approval"
    if run.user_id == request.user.pk or run.requested_by == request.user.get_username():
        return False, "it is your own request: another superuser must decide"
    if run.approvals.filter(username=request.user.get_username()).exists():
        return False, "you have already decided on it"
    return True, ""


def _plan(run: Run) -> dict:
    """The request's plan as it reads now, and whether it is still the one requested."""
    if (run.arguments or {}).get("group"):
        return {"members": list(run.planned), "files": [], "current": True, "error": ""}
    try:
        status = target_status(target_get(run.target), with_lock_holder=False)
    except MigrationConsoleError as exc:
        return {"members": [], "files": [], "current": False, "error": exc.message}
    lint = lint_files([item.file for item in status.pending])
    files = [
        {"item": item, "file": item.file, "lint": lint[item.version]} for item in status.pending
    ]
    return {
        "members": [],
        "files": files,
        "current": status.plan_hash == run.plan_hash,
        "error": "",
    }


def _request_page(request, run: Run, *, status: int = 200, **extra):
    may_decide, why_not = _decision_permission(request, run)
    config = target_config(run.target)
    opening = next_opening(run.target) if config is not None and config.window else None
    context = admin_context(
        request,
        title=f"Request #{run.pk}: {run.action} on {run.target}",
        run=run,
        approvals=_approvals(run),
        plan=_plan(run),
        may_decide=may_decide,
        why_not=why_not,
        window=config.window if config is not None else "",
        next_opening=opening,
        progress_url=reverse("console:run-progress", args=[run.pk]),
        **extra,
    )
    return render(request, "console/request.html", context, status=status)


@require_GET
@view_required
def request_detail(request, run_id):
    run = get_object_or_404(Run, pk=run_id, approvals_required__gt=0)
    return _request_page(request, run)


@never_cache
@require_POST
def request_decide_confirm(request, run_id, decision):
    run = Run.objects.filter(pk=run_id).first()
    action = "approve" if decision == "approve" else "reject"
    refused = guard_action(request, action=action, target=run.target if run else "")
    if refused is not None:
        return refused
    if run is None:
        try:
            request_decide(run_id=run_id, caller=caller_of(request), approve=True)
        except UnknownRun as exc:  # recorded by the service
            raise Http404(exc.message) from None
    typed = request.POST.get("confirm_database", "").strip()
    comment = request.POST.get("comment", "")
    if typed != run.target:
        message = f"Confirmation did not match: type the database name {run.target!r}."
        audit_attempt(
            request,
            action=action,
            outcome=AuditEvent.Outcome.REFUSED,
            target=run.target,
            message=message,
        )
        return _request_page(
            request,
            run,
            status=400,
            typed=typed,
            comment=comment,
            confirm_error=message,
            decision=action,
        )
    try:
        run = request_decide(
            run_id=run.pk, caller=caller_of(request), approve=action == "approve", comment=comment
        )
    except MigrationConsoleError as exc:  # recorded by the service
        return _request_page(request, run, status=exc.http_status, error=exc.message)
    if run.state in (Run.State.QUEUED, Run.State.SCHEDULED):
        messages.success(request, f"Approved: run #{run.pk} is {run.state}.")
        response = redirect(reverse("console:run-progress", args=[run.pk]))
    else:
        messages.success(request, f"Request #{run.pk}: {run.message or run.state}.")
        response = redirect(reverse("console:request", args=[run.pk]))
    response.status_code = 303
    return response
