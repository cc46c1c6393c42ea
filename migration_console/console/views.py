"""Console pages. Views only translate: requests to service calls, results to templates.

Nothing here opens a cursor on a target; status comes from
``services.status.target_status`` and runs are queued for the workers through
``services.jobs``.
"""

import csv
from datetime import datetime

from django import forms
from django.contrib import admin
from django.core.paginator import Paginator
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from accounts.access import can_run
from accounts.ip import client_ip
from migration_console.console.charts import duration_chart
from migration_console.console.guards import (
    admin_context,
    audit_attempt,
    audit_view_required,
    caller_of,
    guard_action,
    login_attempt,
    view_required,
)
from migration_console.core.formatting import STATE_MARKS, format_duration
from migration_console.core.models import AuditEvent, Channel, Run
from migration_console.core.services.control import holder_run
from migration_console.core.services.discovery import discover_set
from migration_console.core.services.errors import MigrationConsoleError, UnknownTarget
from migration_console.core.services.jobs import run_start, runs_without_worker
from migration_console.core.services.lint import lint_files
from migration_console.core.services.runs import run_close_if_dead, runs_reap_abandoned
from migration_console.core.services.status import (
    DRIFTED,
    FAILED,
    MISSING,
    OUT_OF_ORDER,
    TargetStatus,
    target_status,
)
from migration_console.core.services.targets import Target, target_get, target_names

RUNS_SHOWN = 50
PROBLEMS_REFUSE = "the migration files have problems (listed above); fix them first"
CHART_ROWS = 60
AUDIT_PAGE_SIZE = 50


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


def _when(moment) -> str | None:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z") if moment else None


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
    }


def _run_row(run: Run) -> dict:
    return {
        "run": run,
        "duration": format_duration(_duration_ns(run.started_at, run.finished_at)),
        "url": reverse("console:run-progress", args=[run.pk]),
    }


def _run_permission(request) -> tuple[bool, str]:
    decision = can_run(request.user, client_ip(request))
    return decision.allowed, decision.reason


def _blockers(status: TargetStatus) -> list[str]:
    """Why ``run`` would refuse as things stand (the runner decides; this only warns)."""
    notes = []
    failed_no_tx = [i for i in status.with_state(FAILED) if i.no_transaction]
    if failed_no_tx:
        names = ", ".join(i.file.filename for i in failed_no_tx)
        notes.append(
            f"{names} failed outside a transaction: check the database by hand and resolve it "
            "with `migrate_sql repair <version>` first."
        )
    drifted = status.with_state(DRIFTED, MISSING)
    if drifted:
        names = ", ".join(f"{i.version}_{i.name} ({i.status})" for i in drifted)
        notes.append(f"Applied migrations changed since they ran: {names}.")
    late = status.with_state(OUT_OF_ORDER)
    if late:
        names = ", ".join(i.file.filename for i in late)
        notes.append(f"Pending migrations older than the newest applied one: {names}.")
    return notes


# --- overview -------------------------------------------------------------------
@require_GET
@view_required
def overview(request):
    targets = []
    for name in target_names():
        entry = {"name": name, "counts": None, "error": None, "lock_holder": None}
        try:
            target = target_get(name)
            entry["display_dsn"] = target.display_dsn
            runs_reap_abandoned(target=target)
            status = target_status(target)
            entry["counts"] = [(state, n) for state, n in status.counts().items() if n]
            entry["total"] = len(status.items)
            entry["pending"] = len(status.pending)
            entry["lock_holder"] = status.lock_holder
            entry["problems"] = status.problems
        except MigrationConsoleError as exc:
            entry["error"] = exc.message
        entry["last_run"] = Run.objects.filter(target=name).first()
        targets.append(entry)
    context = admin_context(
        request,
        title="Migration console",
        targets=targets,
        runs_without_worker=runs_without_worker(),
    )
    return render(request, "console/overview.html", context)


# --- status of one target ------------------------------------------------------------
@require_GET
@view_required
def target_detail(request, name):
    target = _target_or_404(name)
    context = admin_context(request, title=f"{name}: status", target=target)
    try:
        runs_reap_abandoned(target=target)
        status = target_status(target)
    except MigrationConsoleError as exc:
        context["error"] = exc.message
        return render(request, "console/status.html", context)
    may_run, run_reason = _run_permission(request)
    may_unlock = may_run  # a stuck lock can be broken whatever the files say
    if status.problems:
        may_run, run_reason = False, PROBLEMS_REFUSE
    context.update(
        may_unlock=may_unlock,
        lock_run=holder_run(status.lock_holder),
        status=status,
        problems=status.problems,
        rows=[_item_row(item) for item in status.items],
        counts=[(state, n) for state, n in status.counts().items() if n],
        pending_count=len(status.pending),
        may_run=may_run,
        run_reason=run_reason,
        blockers=_blockers(status),
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
        **extra,
    )
    if status is not None:
        pending = status.pending
        lint = lint_files([item.file for item in pending])
        context.update(
            status=status,
            plan=[{**_item_row(item), "lint": lint[item.version]} for item in pending],
            plan_hash=status.plan_hash,
            blockers=_blockers(status),
            has_out_of_order=bool(status.with_state(OUT_OF_ORDER)),
            has_drift=bool(status.with_state(DRIFTED, MISSING)),
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
@require_POST
def target_run(request, name):
    """Confirmed run: check access, confirmation and the exact plan, then queue it."""
    refused = guard_action(request, action="run", target=name)
    if refused is not None:
        return refused
    target = _target_or_404(name)

    def refuse(status, message, code, outcome=AuditEvent.Outcome.REFUSED):
        audit_attempt(request, action="run", outcome=outcome, target=name, message=message)
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
        return refuse(
            status, f"Confirmation did not match: type the database name {target.name!r}.", 400
        )
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
        arguments={
            "allow_out_of_order": bool(request.POST.get("allow_out_of_order")),
            "allow_drift": bool(request.POST.get("allow_drift")),
        },
    )
    response = redirect(reverse("console:run-progress", args=[run.pk]))
    response.status_code = 303  # See Other: the progress page is fetched with GET
    return response


# --- run progress ----------------------------------------------------------------------
def _filenames(run: Run) -> dict[str, str]:
    try:
        files = discover_set(target_get(run.target).path).files  # a read: never refused
        return {m.version: m.filename for m in files}
    except MigrationConsoleError:
        return {}


def run_progress_data(run: Run, filenames: dict[str, str] | None = None) -> dict:
    filenames = filenames if filenames is not None else _filenames(run)
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
                }
            )
    return {
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
        "created_at": _when(run.created_at),
        "started_at": _when(run.started_at),
        "finished_at": _when(run.finished_at),
        "attempts": run.attempts,
        "duration": format_duration(_duration_ns(run.started_at, run.finished_at)),
    }


@require_GET
@view_required
def run_progress(request, run_id):
    run = run_close_if_dead(get_object_or_404(Run, pk=run_id))
    data = run_progress_data(run)
    context = admin_context(
        request,
        title=f"{run.action} #{run.pk} on {run.target}",
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


# --- audit review ------------------------------------------------------------------------------
class AuditFilterForm(forms.Form):
    user = forms.CharField(required=False, label="User")
    action = forms.ChoiceField(required=False)
    outcome = forms.ChoiceField(
        required=False, choices=[("", "any"), *list(AuditEvent.Outcome.choices)]
    )
    channel = forms.ChoiceField(required=False, choices=[("", "any"), *list(Channel.choices)])
    target = forms.CharField(required=False)
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        actions = AuditEvent.objects.order_by("action").values_list("action", flat=True)
        self.fields["action"].choices = [("", "any")] + [(a, a) for a in actions.distinct()]

    def filter(self, queryset):
        if not self.is_valid():
            return queryset.none()
        data = self.cleaned_data
        if data["user"]:
            queryset = queryset.filter(actor__icontains=data["user"])
        for field in ("action", "outcome", "channel", "target"):
            if data[field]:
                queryset = queryset.filter(**{field: data[field]})
        if data["date_from"]:
            queryset = queryset.filter(created_at__date__gte=data["date_from"])
        if data["date_to"]:
            queryset = queryset.filter(created_at__date__lte=data["date_to"])
        return queryset


def _filtered_audit(request) -> tuple[AuditFilterForm, object]:
    """The filter form bound to the query string, and the events it selects."""
    form = AuditFilterForm(request.GET or None)
    events = AuditEvent.objects.all()
    return form, (form.filter(events) if request.GET else events)


@require_GET
@audit_view_required
def audit_review(request):
    form, events = _filtered_audit(request)
    page = Paginator(events, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = admin_context(
        request,
        title="Audit review",
        form=form,
        page=page,
        query=query.urlencode(),
        total=page.paginator.count,
    )
    return render(request, "console/audit.html", context)


AUDIT_COLUMNS = (
    "id",
    "created_at",
    "actor",
    "client_ip",
    "channel",
    "target",
    "action",
    "outcome",
    "migrations",
    "message",
    "token_prefix",
    "run_id",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value) -> str:
    """Plain text for spreadsheets: a cell that would start a formula is quoted."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


class _Echo:
    def write(self, value):
        return value


@require_GET
@audit_view_required
def audit_export(request):
    _, events = _filtered_audit(request)
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(AUDIT_COLUMNS)
        for event in events.iterator(chunk_size=1000):
            yield writer.writerow([_csv_cell(getattr(event, column)) for column in AUDIT_COLUMNS])

    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
    return response


# --- login (rate limited) --------------------------------------------------------------------
@never_cache
def login(request, **kwargs):
    """The admin login, with POSTs counted per client IP and answered 429 over the
    limit, and every refused attempt audited (guards.login_attempt)."""
    return login_attempt(request, admin.site.login, **kwargs)
