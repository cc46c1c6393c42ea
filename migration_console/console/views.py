"""Console pages. Views only translate: requests to service calls, results to templates.

Nothing here opens a cursor on a target; status comes from
``services.status.target_status`` and runs are queued for the workers through
``services.jobs``.
"""

from django.contrib import admin
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from accounts.access import can_run
from accounts.ip import client_ip
from migration_console.console.advice import advise
from migration_console.console.charts import duration_chart
from migration_console.console.group_progress import parent_progress
from migration_console.console.group_rows import group_reads_start, group_rows_within
from migration_console.console.guards import (
    admin_context,
    audit_attempt,
    caller_of,
    guard_action,
    login_attempt,
    view_required,
)
from migration_console.console.overview import overview_row
from migration_console.console.plan_lint import lint_summary
from migration_console.console.progress import progress_extras, run_files
from migration_console.console.rows import (
    OVERVIEW_BUDGET_SECONDS,
    ROW_BUDGET_SECONDS,
    status_read,
    status_result,
    statuses_within,
)
from migration_console.console.schedule import posted_run_at, schedule_context
from migration_console.console.words import state_word, when
from migration_console.core.formatting import STATE_MARKS, format_duration
from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.approvals import request_open_count
from migration_console.core.services.control import holder_run
from migration_console.core.services.errors import MigrationConsoleError, UnknownTarget
from migration_console.core.services.jobs import run_start, runs_without_worker
from migration_console.core.services.lint import lint_files
from migration_console.core.services.runs import run_close_if_dead, runs_reap_abandoned
from migration_console.core.services.status import (
    TargetStatus,
    target_status,
)
from migration_console.core.services.targets import Target, target_get, target_names

_APPLIED = ("completed", "drifted")
RUNS_SHOWN = 50
PROBLEMS_REFUSE = "the migration files have problems (listed above); fix them first"
CHART_ROWS = 60


# --- helpers ------------------------------------------------------------------
def _target_or_404(name: str) -> Target:
    try:
        return target_get(name)
    except UnknownTarget:
        raise Http404(f"unknown database {name!r}") from None


def _duration_ns(start, end) -> int | None:
    if not start or not end:
        return None
    return int((end - start).total_seconds() * 1_000_000_000)


def _item_row(item) -> dict:
    return {
        "version": item.version,
        "name": item.name,
        "filename": item.file.filename if item.file else f"{item.version}_{item.name}.sql",
        "status": item.status,
        "mark": STATE_MARKS[item.status],
        "applied_at": item.applied_at,
        "duration": format_duration(item.duration_ns),
        "applied_by": item.applied_by or "",
        "checksum": item.checksum,
        "file_checksum": item.file_checksum,
        "error": item.error,
        "no_transaction": item.no_transaction,
        "mode": "no transaction" if item.no_transaction else "one transaction",
        "sql": item.file.sql if item.file else "",
        "has_down": bool(item.file and item.file.down_path),
        "file": item.file,
    }


def _run_row(run: Run) -> dict:
    return {
        "run": run,
        "duration": format_duration(_duration_ns(run.started_at, run.finished_at)),
        "url": reverse("console:run-progress", args=[run.pk]),
    }


def _status_soon(target: Target) -> TargetStatus:
    """The target's status, or NoAnswer (a MigrationConsoleError) once a page has
    waited ROW_BUDGET_SECONDS for a target that does not answer."""
    return status_result(status_read(target), target, ROW_BUDGET_SECONDS, ROW_BUDGET_SECONDS)


def _rollback_choices(rows: list[dict]) -> list[dict]:
    """Applied rows, newest first, down to the first without a down file: a rollback
    to anything older would be refused."""
    choices = []
    for row in reversed(rows):
        if row["status"] not in _APPLIED:
            continue
        if not row["has_down"]:
            break
        choices.append(row)
    return choices


def _run_permission(request) -> tuple[bool, str]:
    decision = can_run(request.user, client_ip(request))
    return decision.allowed, decision.reason


# --- overview -------------------------------------------------------------------
@require_GET
@view_required
def overview(request):
    """Every target's row within one short budget: a target that has not answered by
    then is shown unknown, and the page's script fetches its row on its own."""
    group_reads = group_reads_start()  # groups read meanwhile, within the same budget
    targets = [target_get(name) for name in target_names()]
    found = statuses_within(targets, OVERVIEW_BUDGET_SECONDS)
    rows = [overview_row(request, target, found[target.name]) for target in targets]
    context = admin_context(
        request,
        title="Migration console",
        rows=rows,
        groups=group_rows_within(request, group_reads),
        unknown=sum(1 for row in rows if not row["known"]),
        attention=sum(1 for row in rows if row["attention"]),
        runs_without_worker=runs_without_worker(),
        open_requests=request_open_count(),
    )
    return render(request, "console/overview.html", context)


@require_GET
@view_required
def target_summary(request, name):
    """One overview row, for the overview's script: facts and the row's HTML."""
    target = _target_or_404(name)
    try:
        found = status_result(status_read(target), target, ROW_BUDGET_SECONDS, ROW_BUDGET_SECONDS)
    except MigrationConsoleError as exc:
        found = exc
    return JsonResponse(overview_row(request, target, found, with_html=True))


# --- status of one target ------------------------------------------------------------
@require_GET
@view_required
def target_detail(request, name):
    target = _target_or_404(name)
    context = admin_context(
        request, title=f"{name}: status", target=target, schedule=schedule_context(target.name)
    )
    try:
        status = _status_soon(target)
        runs_reap_abandoned(target=target)
    except MigrationConsoleError as exc:
        context["error"] = exc.message
        return render(request, "console/status.html", context)
    may_run, run_reason = _run_permission(request)
    may_unlock = may_run  # a stuck lock can be broken whatever the files say
    if status.problems:
        may_run, run_reason = False, PROBLEMS_REFUSE
    advice = advise(status, may_run=may_run)
    rows = [_item_row(item) for item in status.items]
    context.update(
        may_unlock=may_unlock,
        lock_run=holder_run(status.lock_holder),
        status=status,
        problems=status.problems,
        rows=rows,
        rollback_choices=_rollback_choices(rows),
        counts=[(state, state_word(state), n) for state, n in status.counts().items() if n],
        pending_count=len(status.pending),
        may_run=may_run,
        run_reason=run_reason,
        advice=advice,
        last_run=Run.objects.filter(target=name).first(),
    )
    return render(request, "console/status.html", context)


# --- plan + confirm ------------------------------------------------------------------
def _plan_context(request, target: Target, status: TargetStatus | None, **extra) -> dict:
    may_run, run_reason = _run_permission(request)
    context = admin_context(
        request,
        title=f"{target.name}: plan",
        target=target,
        may_run=may_run,
        run_reason=run_reason,
        confirm_action=reverse("console:target-run", args=[target.name]),
        confirm_label="Run",
        schedule=schedule_context(target.name),
        **extra,
    )
    if status is not None:
        pending = status.pending
        lint = lint_files([item.file for item in pending])
        advice = advise(status, may_run=may_run)
        context.update(
            status=status,
            advice=advice,
            lock_run=holder_run(status.lock_holder),
            plan=[{**_item_row(item), "lint": lint[item.version]} for item in pending],
            plan_hash=status.plan_hash,
            lint_summary=lint_summary(lint.values()),
            has_out_of_order=advice.needs_allow_out_of_order,
            has_drift=advice.needs_allow_drift,
            problems=status.problems,
        )
        if status.problems:  # no confirmation: the runner would refuse the set
            context.update(may_run=False, run_reason=PROBLEMS_REFUSE)
    return context


@require_GET
@view_required
def target_plan(request, name):
    target = _target_or_404(name)
    try:
        status = target_status(target)
    except MigrationConsoleError as exc:
        return render(
            request, "console/plan.html", _plan_context(request, target, None, error=exc.message)
        )
    return render(request, "console/plan.html", _plan_context(request, target, status))


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def target_run(request, name):
    """Confirmed run: check access, confirmation and the exact plan, then queue it.
    A GET (a reload of a refused confirmation) goes back to the plan."""
    if request.method != "POST":
        return redirect(reverse("console:target-plan", args=[name]))
    refused = guard_action(request, action="run", target=name)
    if refused is not None:
        return refused
    target = _target_or_404(name)

    def refuse(status, message, code, outcome=AuditEvent.Outcome.REFUSED, **field_error):
        audit_attempt(request, action="run", outcome=outcome, target=name, message=message)
        if field_error:  # the error goes beside its field, what was typed stays
            context = _plan_context(request, target, status, typed=typed, **field_error)
        else:
            context = _plan_context(request, target, status, error=message)
        return render(request, "console/plan.html", context, status=code)

    try:
        status = target_status(target)
    except MigrationConsoleError as exc:
        return refuse(None, exc.message, 503, AuditEvent.Outcome.ERROR)
    if status.problems:
        first = status.problems[0]
        return refuse(status, f"{first.file}: {first.message}; nothing was run.", 409)

    posted_hash = request.POST.get("plan_hash", "")
    typed = request.POST.get("confirm_database", "").strip()
    if typed != target.name:
        message = f"Confirmation did not match: type the database name {target.name!r}."
        return refuse(status, message, 400, confirm_error=message)
    advice = advise(status, may_run=True)
    if advice.open_run is not None:
        run = advice.open_run
        return refuse(
            status,
            f"{run.action.capitalize()} #{run.pk} by {run.requested_by} is in progress on "
            f"{target.name}; nothing was run. Follow it, then review the plan again.",
            409,
            AuditEvent.Outcome.LOCKED,
        )
    try:
        run_at = posted_run_at(request.POST)
    except ValueError as exc:
        return refuse(
            status,
            f"Refused: {exc}",
            400,
            run_at_error=f"Not before: {exc}.",
            posted_run_at=request.POST.get("run_at", "")[:40],
        )
    options = {
        "allow_out_of_order": bool(request.POST.get("allow_out_of_order")),
        "allow_drift": bool(request.POST.get("allow_drift")),
    }
    if advice.needs_allow_drift and not options["allow_drift"]:
        message = "Tick this to run despite drift, or repair the drifted migrations first."
        return refuse(status, f"Refused: {message}", 400, drift_error=message)
    if advice.needs_allow_out_of_order and not options["allow_out_of_order"]:
        message = "Tick this to run the out-of-order migrations too."
        return refuse(status, f"Refused: {message}", 400, out_of_order_error=message)
    if posted_hash != status.plan_hash:
        return refuse(
            status,
            "The plan changed since the page was drawn (files or applied migrations differ); "
            "nothing was run. Review the new plan below and confirm again.",
            409,
        )
    if status.lock_holder is not None:
        return refuse(
            status,
            f"Another run holds the lock on {target.name}: {status.lock_holder.describe()}.",
            409,
            AuditEvent.Outcome.LOCKED,
        )
    run = run_start(
        target_name=target.name,
        caller=caller_of(request),
        plan_hash=status.plan_hash,
        planned=[item.version for item in status.pending],
        arguments=options,
        run_at=run_at,
    )
    page = "console:request" if run.state == Run.State.AWAITING_APPROVAL else "console:run-progress"
    response = redirect(reverse(page, args=[run.pk]))
    response.status_code = 303  # See Other: the progress page is fetched with GET
    return response


# --- run progress ----------------------------------------------------------------------
def run_progress_data(run: Run, filenames: dict[str, str] | None = None) -> dict:
    files = run_files(run) if filenames is None else {}
    filenames = filenames if filenames is not None else {v: m.filename for v, m in files.items()}
    steps = [
        {**step, "duration_display": format_duration(step.get("duration"))} for step in run.steps
    ]
    done = {step["version"]: step for step in steps}
    rows = []
    for version in run.planned:
        step = done.get(version)
        if step is not None:
            state = step["status"]
        elif version == run.current_version:
            state = "running"
        elif run.finished:
            state = "not_run"
        else:
            state = "waiting"
        rows.append(
            {
                "version": version,
                "filename": filenames.get(version, version),
                "state": state,
                "duration": step["duration_display"] if step else "",
                "error": step.get("error") if step else None,
                "attempts": step.get("attempts") if step else None,
            }
        )
    for step in steps:  # anything the runner did that was not in the queued plan
        if step["version"] not in run.planned:
            rows.append(
                {
                    "version": step["version"],
                    "filename": filenames.get(step["version"], step["version"]),
                    "state": step["status"],
                    "duration": step["duration_display"],
                    "error": step.get("error"),
                    "attempts": step.get("attempts"),
                }
            )
    data = {
        "id": run.pk,
        "target": run.target,
        "action": run.action,
        "channel": run.channel,
        "requested_by": run.requested_by,
        "state": run.state,
        "finished": run.finished,
        "message": run.message,
        "current_version": run.current_version,
        "plan_hash": run.plan_hash,
        "planned": list(run.planned),
        "steps": steps,
        "rows": rows,
        "created_at": when(run.created_at),
        "started_at": when(run.started_at),
        "finished_at": when(run.finished_at),
        "attempts": run.attempts,
        "lock_wait": run.lock_wait,
        "blockers": (run.lock_wait or {}).get("blockers", []),
        "duration": format_duration(_duration_ns(run.started_at, run.finished_at)),
    }
    data.update(progress_extras(run, data, files))
    data.update(parent_progress(run))  # a group's members, or a member's parent
    return data


@require_GET
@view_required
def run_progress(request, run_id):
    run = run_close_if_dead(get_object_or_404(Run, pk=run_id))
    data = run_progress_data(run)
    context = admin_context(
        request,
        title=f"{run.action} #{run.pk} on {run.target}",
        tab_title=data["title"],
        run=run,
        data=data,
        poll_url=reverse("console:run-progress-json", args=[run.pk]),
        may_cancel=not run.finished and _run_permission(request)[0],
        no_worker=bool(runs_without_worker(run)),
    )
    return render(request, "console/progress.html", context)


@require_GET
@view_required
def run_progress_json(request, run_id):
    run = run_close_if_dead(get_object_or_404(Run, pk=run_id))
    return JsonResponse(run_progress_data(run))


# --- history ------------------------------------------------------------------------------
@require_GET
@view_required
def target_history(request, name):
    target = _target_or_404(name)
    context = admin_context(request, title=f"{name}: history", target=target)
    try:
        status = target_status(target, with_lock_holder=False)
    except MigrationConsoleError as exc:
        context["error"] = exc.message
        status = None
    if status is not None:
        recorded = [item for item in status.items if item.row is not None]
        newest_first = sorted(recorded, key=lambda item: item.applied_at, reverse=True)
        charted = sorted(newest_first[:CHART_ROWS], key=lambda item: item.applied_at)
        context.update(
            problems=status.problems,
            applied=[_item_row(item) for item in newest_first],
            chart=duration_chart(
                [(f"{i.version}_{i.name}", i.duration_ns or 0, i.row.status) for i in charted]
            ),
            total_duration=format_duration(sum(i.duration_ns or 0 for i in recorded)),
        )
    context["runs"] = [_run_row(run) for run in Run.objects.filter(target=name)[:RUNS_SHOWN]]
    return render(request, "console/history.html", context)


# --- login (rate limited) --------------------------------------------------------------------
@never_cache
def login(request, **kwargs):
    """The admin login, with POSTs counted per client IP and answered 429 over the
    limit, and every refused attempt audited (guards.login_attempt)."""
    return login_attempt(request, admin.site.login, **kwargs)
