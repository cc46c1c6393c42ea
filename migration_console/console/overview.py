"""One row of the targets overview, for the page and for its script (JSON)."""

from django.template.loader import render_to_string
from django.urls import reverse

from migration_console.console.advice import advise
from migration_console.console.rows import NoAnswer
from migration_console.console.words import state_word, when
from migration_console.core.models import Run
from migration_console.core.services.control import holder_run
from migration_console.core.services.errors import MigrationConsoleError
from migration_console.core.services.runs import runs_reap_abandoned
from migration_console.core.services.status import TargetStatus
from migration_console.core.services.targets import Target


def _next_step(name: str, status: TargetStatus, advice) -> tuple[str, str]:
    """The one link an operator wants from this row: (label, url)."""
    if advice.open_run is not None:
        run = advice.open_run
        return f"Follow run #{run.pk}", reverse("console:run-progress", args=[run.pk])
    if status.problems:
        return "See the file problems", reverse("console:target-status", args=[name])
    for banner in advice.banners:
        if banner.links:
            return banner.links[0]
    pending = len(status.pending)
    if pending:
        return f"Review plan ({pending} pending)", reverse("console:target-plan", args=[name])
    return "Status", reverse("console:target-status", args=[name])


def overview_row(
    request, target: Target, found: TargetStatus | MigrationConsoleError, *, with_html=False
) -> dict:
    name = target.name
    row = {
        "name": name,
        "display_dsn": target.display_dsn,
        "known": isinstance(found, TargetStatus),
        "still_trying": isinstance(found, NoAnswer),
        "error": None if isinstance(found, TargetStatus) else found.message,
        "summary_url": reverse("console:target-summary", args=[name]),
        "status_url": reverse("console:target-status", args=[name]),
        "history_url": reverse("console:target-history", args=[name]),
        "counts": [],
        "pending": None,
        "problems": [],
        "lock": None,
        "attention": not isinstance(found, TargetStatus),
    }
    lock_run = None
    if isinstance(found, TargetStatus):
        runs_reap_abandoned(target=target)
        advice = advise(found, may_run=True)
        holder = found.lock_holder
        lock_run = holder_run(holder)
        label, url = _next_step(name, found, advice)
        row.update(
            counts=[(state, state_word(state), n) for state, n in found.counts().items() if n],
            pending=len(found.pending),
            problems=[problem.as_dict() for problem in found.problems],
            lock=holder.as_dict() | {"since": when(holder.since)} if holder else None,
            attention=bool(found.problems or any(b.level == "error" for b in advice.banners)),
            next_label=label,
            next_url=url,
        )
    last = Run.objects.filter(target=name).first()
    row["last_run"] = (
        {
            "id": last.pk,
            "url": reverse("console:run-progress", args=[last.pk]),
            "state": last.state,
            "label": state_word(last.state),
            "action": last.action,
            "requested_by": last.requested_by,
            "channel": last.channel,
            "created_at": when(last.created_at),
        }
        if last
        else None
    )
    row["lock_run"] = (
        {"id": lock_run.pk, "url": reverse("console:run-progress", args=[lock_run.pk])}
        if lock_run
        else None
    )
    if with_html:
        row["row_html"] = render_to_string(
            "console/includes/overview_row.html", {"t": row}, request=request
        )
    return row
