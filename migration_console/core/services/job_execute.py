"""A worker executes a queued Run (the job of ``jobs.run_start``, see core/tasks.py)
through the same service entry points as ``migrate_sql``: ``run_execute`` for a run,
``maintenance_execute`` for rollback, baseline and repair.

Each execution is an attempt: it claims the Run (queued -> running, or takes over a
``running`` Run whose worker died, whose job was handed over as stalled) and counts
it in ``Run.attempts``. A later attempt resumes from the target's tracking table: it
applies what is still pending of the plan the first attempt worked on (the same
versions with the same checksums, kept in ``arguments["resume_plan"]``) and refuses
anything else, since nobody confirmed it. Refused, locked and failed outcomes are
recorded by the services; the job itself ends normally. A worker shutting down stops
the run before its next file (``RunInterrupted``): the Run goes back to ``queued``
and the job is retried, so another worker resumes it.
"""

import dataclasses
import logging
from collections.abc import Callable

from django.db import transaction
from django.utils import timezone

from migration_console.core.models import Run
from migration_console.core.services.approvals import request_end_stale
from migration_console.core.services.caller import Caller
from migration_console.core.services.errors import (
    MigrationConsoleError,
    RunRefused,
    UnknownTarget,
)
from migration_console.core.services.fleet import GROUP_KEY, group_advance, group_plan_hash
from migration_console.core.services.groups import group_get, group_members
from migration_console.core.services.jobs import (
    ERROR_KEY,
    SHUTDOWN_REASON,
    TOKEN_KEY,
    error_record,
    job_defer,
)
from migration_console.core.services.maintenance import maintenance_execute
from migration_console.core.services.run_reaper import _claimed_by_later_runs, run_account
from migration_console.core.services.runner import RUN_TAG, RunObserver, RunOptions
from migration_console.core.services.runs import run_execute
from migration_console.core.services.scheduling import next_opening
from migration_console.core.services.status import target_status
from migration_console.core.services.targets import target_get, target_read
from migration_console.core.services.tracking import tracking_rows

logger = logging.getLogger("migration_console.worker")

RESUME_KEY = "resume_plan"
# Run options a console or API run may carry in ``Run.arguments``.
RUN_OPTIONS = ("allow_out_of_order", "allow_drift", "backup_dir", "strict_lint")


class RunInterrupted(Exception):
    """The worker stopped the run between two files to shut down; it is queued again."""


class JobObserver(RunObserver):
    """Stops the run when the worker shuts down (or the run was cancelled while its
    last worker died), and binds a later attempt to the first attempt's plan."""

    def __init__(self, run: Run, stop_reason: Callable[[], str | None]):
        self.run = run
        self.stop_reason = stop_reason
        recorded = (run.arguments or {}).get(RESUME_KEY)
        self.resume_plan: dict[str, str] | None = (
            dict(recorded) if isinstance(recorded, dict) else None
        )

    def plan_ready(self, status, plan) -> None:
        found = {migration.version: migration.checksum for migration in plan}
        if self.resume_plan is None:
            # Written before the first file is touched: a later attempt finds it.
            self.run.arguments = {**self.run.arguments, RESUME_KEY: found}
            Run.objects.filter(pk=self.run.pk).update(arguments=self.run.arguments)
            return
        unconfirmed = sorted(
            v for v, checksum in found.items() if self.resume_plan.get(v) != checksum
        )
        if unconfirmed:
            raise RunRefused(
                f"resuming run #{self.run.pk}: {', '.join(unconfirmed)} changed or appeared "
                "since its first attempt planned it; nothing was run, review the new plan "
                "and start again",
                reason="plan_changed",
                versions=unconfirmed,
            )

    def stop_requested(self, *, certain: bool = False) -> str | None:
        if self.run.cancel_requested_by:
            return f"cancelled by {self.run.cancel_requested_by}"
        return self.stop_reason()


def run_claim(run_id: int) -> Run | None:
    """Take run ``run_id`` for this attempt: a queued one, or a running one whose
    worker died (its job was handed over). None when it has finished or was
    withdrawn meanwhile: then there is nothing to do."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.state not in (Run.State.QUEUED, Run.State.RUNNING):
            return None
        taken_over = run.state == Run.State.RUNNING
        run.attempts += 1
        run.state = Run.State.RUNNING
        run.save(update_fields=["attempts", "state"])
    if taken_over:
        _recover_unrecorded_steps(run)
    return Run.objects.select_related("user").get(pk=run_id)


def _recover_unrecorded_steps(run: Run) -> None:
    """Files the dead attempt applied in its last instant, before its progress reached
    the Run row, from the tracking table: the Run then lists every file it applied."""
    try:
        target = target_get(run.target)
        rows = target_read(target, lambda session: tracking_rows(session.conn, target.schema))
    except MigrationConsoleError as exc:
        logger.warning("run #%s: could not read %s's tracking table: %s", run.pk, run.target, exc)
        return
    account = run_account(run, rows, _claimed_by_later_runs(run))
    if account.steps:
        Run.objects.filter(pk=run.pk).update(steps=list(run.steps) + account.steps)


def run_still_applying(job_id: int) -> bool:
    """Whether the run of job ``job_id`` still has a session on its target: then its
    runner lives (a worker too busy or too cut off to beat its heart) and the job must
    not be handed over. An unreachable target counts as alive: better late than twice."""
    run = Run.objects.filter(job_id=job_id).first()
    if run is None or run.state != Run.State.RUNNING:
        return False
    try:
        target = target_get(run.target)
        return target_read(
            target,
            lambda session: (
                session.conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE starts_with(application_name, %s)",
                    [f"{RUN_TAG}{run.pk} "],
                ).fetchone()
                is not None
            ),
        )
    except UnknownTarget:
        return False  # gone from the configuration: the next attempt records why
    except MigrationConsoleError as exc:
        logger.warning("job %s: cannot tell whether run #%s lives: %s", job_id, run.pk, exc)
        return True


def run_hold(run_id: int) -> str:
    """Why run ``run_id`` must not start now ("" when it may): outside its target's
    window it is deferred to the next opening; an approved run whose plan changed
    since it was requested ends ``stale``. Only a run that has not started yet."""
    run = Run.objects.filter(pk=run_id, attempts=0).first()
    if run is None or run.state not in (Run.State.QUEUED, Run.State.SCHEDULED):
        return ""
    opening = next_opening(run.target)
    if opening is not None and opening > timezone.now():
        with transaction.atomic():
            locked = Run.objects.select_for_update().get(pk=run.pk)
            if locked.state not in (Run.State.QUEUED, Run.State.SCHEDULED):
                return ""
            job_defer(locked, opening)
            locked.message = (
                f"waiting for {run.target}'s window, which opens {opening:%Y-%m-%d %H:%M %Z}"
            )
            locked.save(update_fields=["state", "job_id", "run_at", "message"])
        return f"run #{run.pk}: outside {run.target}'s window; deferred to {opening.isoformat()}"
    if run.approvals_required and run.action == "run" and run.plan_hash:
        try:
            current = _current_plan_hash(run)
        except MigrationConsoleError:
            return ""  # the run itself will meet and record the trouble
        if current != run.plan_hash:
            request_end_stale(run, current)
            return f"run #{run.pk}: stale, its plan changed since it was requested"
    return ""


def _current_plan_hash(run: Run) -> str:
    if GROUP_KEY in (run.arguments or {}):
        group = group_get(run.arguments[GROUP_KEY])
        return group_plan_hash(group, group_members(group))
    return target_status(target_get(run.target), with_lock_holder=False).plan_hash


def _run_options(run: Run, later_attempt: bool) -> RunOptions:
    arguments = run.arguments or {}
    options = RunOptions(**{name: arguments[name] for name in RUN_OPTIONS if name in arguments})
    # A later attempt is bound by its first attempt's plan (JobObserver), not by the
    # hash, which the files the first attempt applied have changed.
    options.expected_plan_hash = None if later_attempt else (run.plan_hash or None)
    return options


def _execute(run: Run, observer: JobObserver):
    later_attempt = observer.resume_plan is not None
    token_prefix = str((run.arguments or {}).get(TOKEN_KEY, ""))
    caller = dataclasses.replace(Caller.of_run(run), token_prefix=token_prefix)
    if run.action == "run":
        return run_execute(
            target_name=run.target,
            caller=caller,
            options=_run_options(run, later_attempt),
            observer=observer,
            run=run,
        )
    arguments = run.arguments or {}
    return maintenance_execute(
        action=run.action,
        target_name=run.target,
        version=str(arguments.get("version", "")),
        caller=caller,
        mark_applied=bool(arguments.get("mark_applied", False)),
        expected_plan_hash=None if later_attempt else (run.plan_hash or None),
        observer=observer,
        run=run,
    )


def run_job_execute(*, run_id: int, stop_reason: Callable[[], str | None]) -> str:
    """One attempt at run ``run_id``; ``stop_reason`` says why the worker wants it to
    stop (None while it does not). Returns what happened, for the worker's log;
    raises RunInterrupted when the worker's shutdown stopped it (queued again)."""
    held = run_hold(run_id)
    if held:
        return held
    if GROUP_KEY in (
        Run.objects.filter(pk=run_id).values_list("arguments", flat=True).first() or {}
    ):
        group_advance(run_id)  # a group's parent: its members are the jobs
        return f"run #{run_id}: group started"
    run = run_claim(run_id)
    if run is None:
        return f"run #{run_id}: nothing to do (finished, withdrawn or gone)"
    try:
        return _attempt(run, stop_reason)
    finally:
        if run.parent_id:
            group_advance(run.parent_id)


def _attempt(run: Run, stop_reason: Callable[[], str | None]) -> str:
    observer = JobObserver(run, stop_reason)
    try:
        outcome = _execute(run, observer)
    except MigrationConsoleError as exc:  # recorded by the service (refused, locked, ...)
        arguments = {**run.arguments, ERROR_KEY: error_record(exc)}
        Run.objects.filter(pk=run.pk).update(arguments=arguments)
        return f"run #{run.pk} ({run.action} on {run.target}), attempt {run.attempts}: {exc}"
    if outcome.stopped == SHUTDOWN_REASON and _requeue(run, outcome):
        raise RunInterrupted(f"run #{run.pk} stopped for the shutdown, queued again")
    return f"run #{run.pk} ({run.action} on {run.target}), attempt {run.attempts}: {outcome.status}"


def _requeue(run: Run, outcome) -> bool:
    done = ", ".join(step.version for step in outcome.applied) or "none"
    return bool(
        Run.objects.filter(pk=run.pk, state=Run.State.CANCELLED, cancel_requested_by="").update(
            state=Run.State.QUEUED,
            finished_at=None,
            current_version="",
            message=(
                f"attempt {run.attempts} stopped because its worker shut down (applied: "
                f"{done}); waiting for another worker to resume it"
            ),
        )
    )
