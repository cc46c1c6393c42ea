"""Console rollback, baseline and repair: review exactly what will change
(``maintenance_plan``), then confirm by typing the database name and the version.
The action runs like a console run: a queued Run row (a job, ``services.jobs``)
that a worker executes, bound to the reviewed plan's hash. One pair of views serves
the three actions; ``PAGES`` holds what differs.
"""

from dataclasses import dataclass

from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from accounts.access import can_run
from accounts.ip import client_ip
from migration_console.console.guards import (
    actor_of,
    admin_context,
    audit_attempt,
    caller_of,
    guard_action,
    view_required,
)
from migration_console.core.models import AuditEvent
from migration_console.core.services.errors import MigrationConsoleError, UnknownTarget
from migration_console.core.services.jobs import run_start
from migration_console.core.services.maintenance import (
    BASELINE,
    REPAIR,
    ROLLBACK,
    MaintenancePlan,
    maintenance_plan,
    maintenance_preview,
)
from migration_console.core.services.status import (
    COMPLETED,
    DRIFTED,
    FAILED,
    PENDING,
    target_status,
)
from migration_console.core.services.targets import Target, target_get

TEMPLATE = "console/maintenance.html"


@dataclass(frozen=True)
class ActionPage:
    """What the review and confirm pages of one maintenance action say and offer."""

    action: str
    title: str  # "roll back": page title and the "... needs" note
    verb: str  # the submit button: "Roll back 2 migration(s) on db_main"
    param: str  # the GET parameter naming the version
    pick_label: str
    pick_states: tuple[str, ...]  # states whose versions the picker offers
    newest_first: bool
    intro: str  # above the changes; {n} = how many
    consequence: str  # in the confirmation, after "exactly as listed above"
    nothing: str  # when the plan is empty; {version}
    show_sql: bool  # rollback runs the down files; baseline and repair run no file


PAGES = {
    ROLLBACK: ActionPage(
        action=ROLLBACK,
        title="roll back",
        verb="Roll back",
        param="to",
        pick_label="Roll back down to and including version",
        pick_states=(COMPLETED, DRIFTED),
        newest_first=True,
        intro="{n} migration(s) would be rolled back, newest first: each down file runs "
        "together with the deletion of its tracking row.",
        consequence="Objects these migrations created, and their data, are dropped.",
        nothing="Nothing to roll back at or above {version}.",
        show_sql=True,
    ),
    BASELINE: ActionPage(
        action=BASELINE,
        title="baseline",
        verb="Baseline",
        param="to",
        pick_label="Record as completed, without running them, every file up to and including",
        pick_states=(PENDING,),
        newest_first=False,
        intro="{n} file(s) would be recorded as completed without running them (the "
        "checksum of today's file, applied_by baseline:{actor}), all in one transaction.",
        consequence="These files will never be run here: use this only when the database "
        "already has their schema.",
        nothing="Nothing to baseline up to {version}: every file is recorded.",
        show_sql=False,
    ),
    REPAIR: ActionPage(
        action=REPAIR,
        title="repair",
        verb="Repair",
        param="version",
        pick_label="Resolve the failed or drifted migration",
        pick_states=(FAILED, DRIFTED),
        newest_first=False,
        intro="{n} tracking row(s) would change; no migration file runs.",
        consequence="Only the tracking table changes: check the database itself first.",
        nothing="Nothing to repair.",
        show_sql=False,
    ),
}


def _target_or_404(name: str) -> Target:
    try:
        return target_get(name)
    except UnknownTarget:
        raise Http404(f"unknown database {name!r}") from None


def _choices(page: ActionPage, items: list) -> list[tuple[str, str]]:
    """(version, label) the picker offers: only versions the action can carry out. A
    rollback down to a version needs a down file for it and for every newer one."""
    choices = []
    for item in items:
        if item.status not in page.pick_states:
            continue
        if page.action == ROLLBACK and not (item.file and item.file.down_path):
            break  # newest first: nothing older can be reached past this one
        choices.append((item.version, item.file.filename if item.file else item.version))
    return choices


def _flag(data) -> bool:
    return data.get("mark_applied", "") in ("1", "on", "true")


def _context(
    request,
    page: ActionPage,
    target: Target,
    version: str,
    mark_applied: bool,
    *,
    plan: MaintenancePlan | None = None,
    error=None,
) -> dict:
    decision = can_run(request.user, client_ip(request))
    context = admin_context(
        request,
        title=f"{target.name}: {page.title}",
        page=page,
        target=target,
        version=version,
        mark_applied=mark_applied,
        may_run=decision.allowed,
        run_reason=decision.reason,
        error=error,
        choices=[],
        review_url=reverse(f"console:target-{page.action}", args=[target.name]),
        confirm_url=reverse(f"console:target-{page.action}-confirm", args=[target.name]),
    )
    try:
        status = plan.status if plan else target_status(target, with_lock_holder=True)
        items = reversed(status.items) if page.newest_first else status.items
        context["choices"] = _choices(page, list(items))
        context["lock_holder"] = status.lock_holder
        if plan is None and version:
            plan = maintenance_plan(
                action=page.action, target=target, version=version, mark_applied=mark_applied
            )
    except MigrationConsoleError as exc:
        context["error"] = error or exc.message
    if plan is not None:
        context.update(
            plan=plan,
            plan_hash=plan.plan_hash,
            intro=page.intro.format(n=len(plan.changes), actor=actor_of(request)),
            nothing=page.nothing.format(version=version),
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
def maintenance_review(request, name, action):
    """The plan of ``action`` for the picked version (or only the picker), nothing executed."""
    page = PAGES[action]
    target = _target_or_404(name)
    version = request.GET.get(page.param, "").strip()[:64]
    mark_applied = action == REPAIR and _flag(request.GET)
    return render(request, TEMPLATE, _context(request, page, target, version, mark_applied))


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def maintenance_confirm(request, name, action):
    """Confirmed action: access, both typed confirmations, the exact plan, then queue it.
    A GET (a reload of a refused confirmation) goes back to the review."""
    if request.method != "POST":
        return redirect(reverse(f"console:target-{action}", args=[name]))
    refused = guard_action(request, action=action, target=name)
    if refused is not None:
        return refused
    page = PAGES[action]
    target = _target_or_404(name)
    version = request.POST.get("version", "").strip()[:64]
    mark_applied = action == REPAIR and _flag(request.POST)
    caller = caller_of(request)

    typed_database = request.POST.get("confirm_database", "").strip()
    typed_version = request.POST.get("confirm_version", "").strip()

    def refuse(message: str, code: int, plan=None, **field_errors):
        audit_attempt(
            request, action=action, outcome=AuditEvent.Outcome.REFUSED, target=name, message=message
        )
        context = _context(
            request,
            page,
            target,
            version,
            mark_applied,
            plan=plan,
            error=None if field_errors else message,
        )
        if field_errors:  # beside their fields; what was typed stays
            context.update(typed_database=typed_database, typed_version=typed_version)
            context.update(field_errors)
        return render(request, TEMPLATE, context, status=code)

    if not version or typed_database != target.name or typed_version != version:
        errors = {}
        if typed_database != target.name:
            errors["database_error"] = (
                f"Confirmation did not match: type the database name {target.name!r}."
            )
        if not version or typed_version != version:
            errors["version_error"] = f"Confirmation did not match: type the version {version!r}."
        return refuse(
            f"Confirmation did not match: type the database name {target.name!r} and the "
            f"version {version!r}. Nothing was changed.",
            400,
            **errors,
        )
    try:
        # A refusal found here (missing down file, unknown version, ...) is recorded.
        plan = maintenance_preview(
            action=action,
            target_name=target.name,
            version=version,
            mark_applied=mark_applied,
            caller=caller,
        )
    except MigrationConsoleError as exc:
        context = _context(request, page, target, version, mark_applied, error=exc.message)
        return render(request, TEMPLATE, context, status=exc.http_status)
    if plan.plan_hash != request.POST.get("plan_hash", ""):
        return refuse(
            f"The {action} plan changed since the page was drawn (files or applied migrations "
            "differ); nothing was changed. Review the new plan below and confirm again.",
            409,
            plan,
        )
    if not plan.changes:
        return refuse(page.nothing.format(version=version), 409, plan)
    run = run_start(
        target_name=target.name,
        caller=caller,
        plan_hash=plan.plan_hash,
        planned=[change.version for change in plan.changes],
        action=action,
        arguments={"version": version, "mark_applied": mark_applied},
    )
    response = redirect(reverse("console:run-progress", args=[run.pk]))
    response.status_code = 303
    return response
