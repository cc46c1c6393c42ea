"""Close the runs whose runner died without recording an outcome (SIGKILL, OOM, an
evicted pod, a console database that stayed away), telling what the target's
tracking table says the run did, never guessing."""

from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone

from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.audit import audit_record
from migration_console.core.services.caller import Caller
from migration_console.core.services.errors import MigrationConsoleError
from migration_console.core.services.runner import RUN_TAG
from migration_console.core.services.targets import Target, target_get, target_read
from migration_console.core.services.tracking import TrackingRow, tracking_rows

# A run older than this with no session left on its target has lost its runner.
ABANDONED_AFTER_SECONDS = 15.0
OPEN_STATES = (Run.State.QUEUED, Run.State.RUNNING)


@dataclass
class RunAccount:
    """What the tracking table says an abandoned run did."""

    action: str
    done: list[str] = field(default_factory=list)
    failed: list[TrackingRow] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)
    touched: list[str] = field(default_factory=list)  # done or failed, in plan order
    steps: list[dict] = field(default_factory=list)  # for files the Run row never heard of

    def message(self) -> str:
        verb, left = {
            "run": ("applied", ("was not applied", "were not applied")),
            "rollback": ("rolled back", ("is still applied", "are still applied")),
        }.get(self.action, ("recorded", ("was not changed", "were not changed")))
        parts = [f"per the tracking table it {verb} {', '.join(self.done) or 'nothing'}"]
        for row in self.failed:
            reason = (row.error or "").strip().splitlines()[0:1]
            if (row.error or "").startswith("interrupted"):
                parts.append(
                    f"{row.version}_{row.name} was interrupted outside a transaction and may "
                    f"have left the database half-changed (`migrate_sql repair {row.version}` "
                    "once checked)"
                )
            else:
                parts.append(f"{row.version}_{row.name} failed: {reason[0] if reason else '?'}")
        if self.untouched:
            phrase = left[0] if len(self.untouched) == 1 else left[1]
            parts.append(f"{', '.join(self.untouched)} {phrase}")
        return (
            "the runner vanished without recording an outcome (killed?); "
            + "; ".join(parts)
            + "; check the status"
        )


def run_account(run: Run, rows: dict[str, TrackingRow], claimed_later: set[str]) -> RunAccount:
    """Attribute tracking rows to ``run``: rows of its files written since it started,
    minus files a later run says it did itself."""
    account = RunAccount(action=run.action)
    known = {step.get("version") for step in run.steps}
    versions = list(run.planned) + [v for v in known if v and v not in run.planned]
    if not versions and run.started_at:
        # The plan never reached the console database: the runner's own rows.
        versions = sorted(
            v
            for v, row in rows.items()
            if row.applied_at >= run.started_at and row.applied_by == run.requested_by
        )

    def since_start(row: TrackingRow | None) -> bool:
        return bool(row and run.started_at and row.applied_at >= run.started_at)

    for version in versions:
        row = rows.get(version)
        if run.action == "rollback":
            gone = run.started_at is not None and row is None
            (account.done if gone else account.untouched).append(version)
            if gone:
                account.touched.append(version)
            continue
        if not since_start(row) or version in claimed_later:
            account.untouched.append(version)
            continue
        account.touched.append(version)
        if row.status == "completed":
            account.done.append(version)
        else:
            account.failed.append(row)
        if version not in known:
            account.steps.append(
                {
                    "version": row.version,
                    "name": row.name,
                    "status": row.status,
                    "duration": row.duration_ns,
                    "error": row.error,
                }
            )
    return account


def _claimed_by_later_runs(run: Run) -> set[str]:
    if run.started_at is None:
        return set()
    later = (
        Run.objects.filter(target=run.target, started_at__gt=run.started_at)
        .exclude(pk=run.pk)
        .values_list("steps", flat=True)
    )
    return {step.get("version") for steps in later for step in steps or []}


def _live_run_ids(session) -> set[int]:
    names = session.conn.execute(
        "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE %s",
        [RUN_TAG + "%"],
    )
    ids = set()
    for (name,) in names:
        number = name[len(RUN_TAG) :].split(" ", 1)[0]
        if number.isdigit():
            ids.add(int(number))
    return ids


def _jobs_in_hand():
    """Jobs waiting for a worker or held by one: their runs are the workers' (a dead
    worker's job is handed to another by core/tasks.py), never closed here."""
    from procrastinate.contrib.django.models import ProcrastinateJob

    return ProcrastinateJob.objects.filter(status__in=("todo", "doing")).values("id")


def runs_reap_abandoned(
    *, target: Target, older_than: float = ABANDONED_AFTER_SECONDS, run_id: int | None = None
) -> int:
    """Close the runs of ``target`` (or only run ``run_id``) whose runner died without
    recording an outcome: queued or running for a while, yet none of the sessions
    its runner tags with ``run#<id>`` is left in pg_stat_activity. The run gets state
    ``error``, a message saying what the tracking table shows it did, and the audit
    row its runner could not write. Returns how many were closed."""
    cutoff = timezone.now() - timedelta(seconds=older_than)
    candidates = Run.objects.filter(
        target=target.name, state__in=OPEN_STATES, created_at__lt=cutoff
    ).exclude(job_id__in=_jobs_in_hand())
    if run_id is not None:
        candidates = candidates.filter(pk=run_id)
    candidates = list(candidates)
    if not candidates:
        return 0
    alive, rows = target_read(
        target, lambda session: (_live_run_ids(session), tracking_rows(session.conn, target.schema))
    )
    closed = 0
    for run in candidates:
        if run.pk in alive:
            continue
        account = run_account(run, rows, _claimed_by_later_runs(run))
        message = account.message()
        updated = Run.objects.filter(pk=run.pk, state=run.state).update(
            state=Run.State.ERROR,
            message=message,
            finished_at=timezone.now(),
            current_version="",
            steps=list(run.steps) + account.steps,
        )
        if not updated:
            continue  # it finished meanwhile
        closed += 1
        audit_record(
            caller=Caller.of_run(run),
            action=run.action,
            outcome=AuditEvent.Outcome.ERROR,
            target=run.target,
            migrations=account.touched,
            message=message,
            run=run,
        )
    return closed


def run_close_if_dead(run: Run) -> Run:
    """For a page showing ``run``: close it when its runner is gone, so no page says
    ``running`` forever. Costs nothing for a finished run; an unreachable target
    leaves the run as it is."""
    if run.state not in OPEN_STATES:
        return run
    try:
        if runs_reap_abandoned(target=target_get(run.target), run_id=run.pk):
            run.refresh_from_db()
    except MigrationConsoleError:
        pass
    return run
