"""Console pages of a group of targets (a fleet): its members with their state counts,
filtered and paged; one plan and one typed confirmation (the group's name) for the
whole group, queued as a parent run whose members the workers execute.

The members' status comes from ``services.groups.group_status`` (one connection
per group, whatever the number of members); runs start through
``services.fleet.group_run_start``, which refuses a plan that changed since the page
showed it.
"""

from collections import namedtuple

from django.core.paginator import Paginator
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from accounts.access import can_run
from accounts.ip import client_ip
from migration_console.console.group_rows import (
    group_read,
    group_result,
    group_row,
    needs_attention,
)
from migration_console.console.guards import (
    admin_context,
    audit_attempt,
    caller_of,
    guard_action,
    view_required,
)
from migration_console.console.rows import ROW_BUDGET_SECONDS
from migration_console.console.schedule import posted_run_at, schedule_context
from migration_console.console.words import state_word, when
from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.discovery import discover_set
from migration_console.core.services.errors import MigrationConsoleError, RunRefused
from migration_console.core.services.fleet import group_plan_hash, group_run_start
from migration_console.core.services.groups import UnknownGroup, group_get, group_status
from migration_console.target_groups import GroupConfig

PER_PAGE = 50
# (value of ?state=, label): what an operator looks for in a large group.
FILTERS = (
    ("", "All"),
    ("attention", "Needs attention"),
    ("pending", "Pending"),
    ("failed", "Failed"),
    ("drifted", "Drifted"),
    ("current", "Up to date"),
)
_KEEPS = {
    "": lambda m: True,
    "attention": needs_attention,
    "pending": lambda m: m["pending_count"] > 0,
    "failed": lambda m: m["failed_count"] > 0,
    "drifted": lambda m: m["drifted_count"] > 0,
    "current": lambda m: not m["pending_count"] and not needs_attention(m),
}
# group_plan_hash reads only each member's name: the plan is hashed over exactly the
# members this page lists, not over a second reading of the query.
_Named = namedtuple("_Named", "name")


def _group_or_404(name: str) -> GroupConfig:
    try:
        return group_get(name)
    except UnknownGroup as exc:
        raise Http404(exc.message) from None


def _member_state(member: dict) -> str:
    if member["failed_count"]:
        return "failed"
    if member["drifted_count"]:
        return "drifted"
    if member["problems"]:
        return "error"
    if member["pending_count"]:
        return "pending"
    return "up_to_date"


def _last_runs(names: list[str]) -> dict[str, Run]:
    """Each listed member's latest run, in one query."""
    runs = Run.objects.filter(target__in=names).order_by("target", "-created_at").distinct("target")
    return {run.target: run for run in runs}


def _open_run(group: GroupConfig) -> Run | None:
    return (
        Run.objects.filter(target=group.name, parent__isnull=True)
        .exclude(state__in=Run.FINISHED_STATES)
        .first()
    )


def _files(group: GroupConfig) -> tuple[list[dict], list[dict]]:
    """A schema group's files (every member runs the same ones) and their problems."""
    if not group.path:
        return [], []
    found = discover_set(group.path)
    files = [
        {
            "filename": migration.filename,
            "version": migration.version,
            "checksum": migration.checksum,
            "mode": "no transaction" if migration.no_transaction else "one transaction",
        }
        for migration in found.files
    ]
    return files, [problem.as_dict() for problem in found.problems]


def _page_url(base: str, state: str, page: int | None = None) -> str:
    query = [f"state={state}"] if state else []
    if page and page > 1:
        query.append(f"page={page}")
    return base + ("?" + "&".join(query) if query else "")


def _members_context(request, group: GroupConfig, summaries) -> dict:
    members = []
    for summary in summaries:
        member = summary.as_dict()
        member["state"] = _member_state(member)
        member["label"] = state_word(member["state"])
        members.append(member)
    chosen = request.GET.get("state", "")
    if chosen not in _KEEPS:
        chosen = ""
    base = reverse("console:group", args=[group.name])
    filters = [
        {
            "value": value,
            "label": label,
            "count": sum(1 for m in members if _KEEPS[value](m)),
            "url": _page_url(base, value),
            "current": value == chosen,
        }
        for value, label in FILTERS
    ]
    page = Paginator([m for m in members if _KEEPS[chosen](m)], PER_PAGE).get_page(
        request.GET.get("page")
    )
    shown = list(page.object_list)
    last = _last_runs([m["database"] for m in shown])
    for member in shown:
        member["status_url"] = reverse("console:target-status", args=[member["database"]])
        run = last.get(member["database"])
        member["last_run"] = (
            {
                "id": run.pk,
                "url": reverse("console:run-progress", args=[run.pk]),
                "state": run.state,
                "label": state_word(run.state),
                "created_at": when(run.created_at),
            }
            if run
            else None
        )
    return {
        "members": shown,
        "member_total": len(members),
        "filters": filters,
        "state_filter": chosen,
        "page": page,
        "previous_url": _page_url(base, chosen, page.previous_page_number())
        if page.has_previous()
        else "",
        "next_url": _page_url(base, chosen, page.next_page_number()) if page.has_next() else "",
        "attention_count": filters[1]["count"],
        "pending_members": filters[2]["count"],
        "pending_total": sum(m["pending_count"] for m in members),
        "plan_hash": group_plan_hash(group, [_Named(m["database"]) for m in members]),
    }


def _group_page(request, group: GroupConfig, *, status: int = 200, **extra):
    decision = can_run(request.user, client_ip(request))
    context = admin_context(
        request,
        title=f"{group.name}: group",
        group=group,
        may_run=bool(decision),
        run_reason=decision.reason,
        open_run=_open_run(group),
        schedule=schedule_context(group.name),
        confirm_action=reverse("console:group-run", args=[group.name]),
        **extra,
    )
    try:
        summaries = group_status(group)
        files, problems = _files(group)
    except MigrationConsoleError as exc:
        context["error"] = exc.message
        return render(request, "console/group.html", context, status=status)
    context.update(_members_context(request, group, summaries), files=files, problems=problems)
    return render(request, "console/group.html", context, status=status)


@require_GET
@view_required
def group_detail(request, name):
    return _group_page(request, _group_or_404(name))


@require_GET
@view_required
def group_summary(request, name):
    """One overview row, for the overview's script: facts and the row's HTML."""
    group = _group_or_404(name)
    found = group_result(group_read(group), group, ROW_BUDGET_SECONDS, ROW_BUDGET_SECONDS)
    return JsonResponse(group_row(request, group, found, with_html=True))


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def group_run(request, name, action="run"):
    """The whole group's confirmed run: access, the typed group name and the exact plan
    shown (its members and files), then the parent run, queued for the workers. A GET
    (a reload of a refused confirmation) goes back to the group's page."""
    if request.method != "POST":
        return redirect(reverse("console:group", args=[name]))
    refused = guard_action(request, action="run", target=name)
    if refused is not None:
        return refused
    try:
        group = group_get(name)
    except UnknownGroup as exc:
        audit_attempt(
            request, action="run", outcome=AuditEvent.Outcome.REFUSED, target=name, message=str(exc)
        )
        raise Http404(exc.message) from None
    typed = request.POST.get("confirm_group", "").strip()
    posted_hash = request.POST.get("plan_hash", "")

    def refuse(message, code, outcome=AuditEvent.Outcome.REFUSED, **shown):
        audit_attempt(request, action="run", outcome=outcome, target=name, message=message)
        shown.setdefault("plan_error", message)
        return _group_page(request, group, status=code, typed=typed, **shown)

    if typed != group.name:
        message = f"Confirmation did not match: type the group name {group.name!r}."
        return refuse(message, 400, confirm_error=message, plan_error="")
    open_run = _open_run(group)
    if open_run is not None:
        return refuse(
            f"Group run #{open_run.pk} by {open_run.requested_by} is {state_word(open_run.state)} "
            f"on {group.name}; nothing was run. Follow it, then review the plan again.",
            409,
            AuditEvent.Outcome.LOCKED,
        )
    try:
        run_at = posted_run_at(request.POST)
    except ValueError as exc:
        return refuse(
            f"Refused: {exc}",
            400,
            run_at_error=f"Not before: {exc}.",
            posted_run_at=request.POST.get("run_at", "")[:40],
            plan_error="",
        )
    try:
        _, problems = _files(group)
    except MigrationConsoleError as exc:
        return refuse(exc.message, 503, AuditEvent.Outcome.ERROR)
    if problems:
        first = problems[0]
        return refuse(f"{first['file']}: {first['message']}; nothing was run.", 409)
    if not posted_hash:
        return refuse("No plan was confirmed; review the plan below and confirm it.", 400)
    try:
        parent = group_run_start(
            group=group, caller=caller_of(request), run_at=run_at, expected_plan_hash=posted_hash
        )
    except RunRefused as exc:
        return refuse(f"Nothing was run: {exc.message}.", 409)
    except MigrationConsoleError as exc:
        return refuse(exc.message, 503, AuditEvent.Outcome.ERROR)
    page = (
        "console:request" if parent.state == Run.State.AWAITING_APPROVAL else "console:run-progress"
    )
    response = redirect(reverse(page, args=[parent.pk]))
    response.status_code = 303  # See Other: the next page is fetched with GET
    return response
