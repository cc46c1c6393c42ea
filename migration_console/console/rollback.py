"""Console rollback: review the down files, then confirm by typing the database name
and the version. The rollback runs like a console run: a queued Run row executed by
a detached ``migrate_sql rollback <version> --run-id N`` bound to the reviewed plan.
"""

from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from accounts.access import can_run
from accounts.ip import client_ip
from migration_console.console.guards import (
    actor_of,
    admin_context,
    audit_attempt,
    guard_action,
    view_required,
)
from migration_console.core.models import AuditEvent, Channel
from migration_console.core.services.errors import MigrationConsoleError, UnknownTarget
from migration_console.core.services.launch import run_start
from migration_console.core.services.maintenance import (
    ROLLBACK,
    MaintenancePlan,
    maintenance_plan,
    maintenance_preview,
)
from migration_console.core.services.status import COMPLETED, DRIFTED, target_status
from migration_console.core.services.targets import Target, target_get

TEMPLATE = "console/rollback.html"


def _target_or_404(name: str) -> Target:
    try:
        return target_get(name)
    except UnknownTarget:
        raise Http404(f"unknown database {name!r}") from None


def _context(
    request, target: Target, version: str, *, plan: MaintenancePlan | None = None, error=None
) -> dict:
    decision = can_run(request.user, client_ip(request))
    context = admin_context(
        request,
        title=f"{target.name}: roll back",
        target=target,
        version=version,
        may_run=decision.allowed,
        run_reason=decision.reason,
        error=error,
        choices=[],
    )
    try:
        status = plan.status if plan else target_status(target, with_lock_holder=True)
        context["choices"] = [
            item.version for item in reversed(status.items) if item.status in (COMPLETED, DRIFTED)
        ]
        context["lock_holder"] = status.lock_holder
        if plan is None and version:
            plan = maintenance_plan(action=ROLLBACK, target=target, version=version)
    except MigrationConsoleError as exc:
        context["error"] = error or exc.message
    if plan is not None:
        context.update(
            plan=plan,
            plan_hash=plan.plan_hash,
            changes=[
                {
                    "version": change.version,
                    "name": change.name,
                    "filename": change.file.filename,
                    "mode": "no transaction" if change.file.no_transaction else "one transaction",
                    "sql": change.file.sql,
                    "description": change.description,
                }
                for change in plan.changes
            ],
        )
    return context


@require_GET
@view_required
def target_rollback(request, name):
    """The rollback plan for ``?to=<version>`` (or a version picker), nothing executed."""
    target = _target_or_404(name)
    version = request.GET.get("to", "").strip()[:64]
    return render(request, TEMPLATE, _context(request, target, version))


@never_cache
@require_POST
def target_rollback_confirm(request, name):
    """Confirmed rollback: access, both typed confirmations, the exact plan, then launch."""
    refused = guard_action(request, action=ROLLBACK, target=name)
    if refused is not None:
        return refused
    target = _target_or_404(name)
    version = request.POST.get("version", "").strip()[:64]

    def refuse(message: str, code: int, plan=None):
        audit_attempt(
            request,
            action=ROLLBACK,
            outcome=AuditEvent.Outcome.REFUSED,
            target=name,
            message=message,
        )
        context = _context(request, target, version, plan=plan, error=message)
        return render(request, TEMPLATE, context, status=code)

    typed_database = request.POST.get("confirm_database", "").strip()
    typed_version = request.POST.get("confirm_version", "").strip()
    if not version or typed_database != target.name or typed_version != version:
        return refuse(
            f"Confirmation did not match: type the database name {target.name!r} and the "
            f"version {version!r}. Nothing was rolled back.",
            400,
        )
    try:
        # A refusal found here (missing down file, ...) is recorded as a refused rollback.
        plan = maintenance_preview(
            action=ROLLBACK,
            target_name=target.name,
            version=version,
            actor=actor_of(request),
            channel=Channel.CONSOLE,
            user=request.user,
            client_ip=client_ip(request) or None,
        )
    except MigrationConsoleError as exc:
        context = _context(request, target, version, error=exc.message)
        return render(request, TEMPLATE, context, status=exc.http_status)
    if plan.plan_hash != request.POST.get("plan_hash", ""):
        return refuse(
            "The rollback plan changed since the page was drawn (files or applied migrations "
            "differ); nothing was rolled back. Review the new plan below and confirm again.",
            409,
            plan,
        )
    if not plan.changes:
        return refuse(f"Nothing to roll back at or above {version}.", 409, plan)
    run = run_start(
        target_name=target.name,
        actor=actor_of(request),
        user=request.user,
        client_ip=client_ip(request) or None,
        plan_hash=plan.plan_hash,
        planned=[change.version for change in plan.changes],
        action=ROLLBACK,
        action_args=[version],
    )
    response = redirect(reverse("console:run-progress", args=[run.pk]))
    response.status_code = 303
    return response
