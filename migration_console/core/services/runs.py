"""Run records: every channel applies migrations through ``run_execute``.

It writes the Run row before the target is touched (so nothing changes
unrecorded), keeps the row's progress current for the console to poll, and
writes exactly one audit row with the outcome, whatever happens. Once the target
has been worked on, the console database may come and go (``run_records``): the
target's outcome decides. Runs whose runner died are closed by ``run_reaper``.
"""

import logging
import os
import threading
from collections.abc import Callable

from django.db import DatabaseError
from django.utils import timezone

from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.caller import Caller
from migration_console.core.services.discovery import MigrationFile
from migration_console.core.services.errors import (
    InvalidRequest,
    LockNotAcquired,
    MigrationConsoleError,
    RunRefused,
)
from migration_console.core.services.run_reaper import (  # noqa: F401 - re-exported
    run_close_if_dead,
    runs_reap_abandoned,
)
from migration_console.core.services.run_records import (
    RunRecorder,
    console_connection_reset,
    describe,
)
from migration_console.core.services.runner import (
    RunObserver,
    RunOptions,
    RunOutcome,
    current_run_id,
    migrations_apply,
)
from migration_console.core.services.steps import StepResult
from migration_console.core.services.targets import Target, target_get

logger = logging.getLogger("migration_console.runs")

PROGRESS_FLUSH_SECONDS = 0.3
# A flusher stuck connecting to an unreachable console database must not hold the
# run's end; whatever it had not written goes into the final record anyway.
FLUSHER_JOIN_SECONDS = 5.0


class RunProgress(RunObserver):
    """Mirrors progress into the Run row from a small flusher thread, so a run of a
    thousand quick files costs a few UPDATEs rather than two per file, while a long
    migration still shows as started within a fraction of a second.

    The console database may go away mid-run: a failed flush is logged once per
    outage, keeps the latest state and is tried again on the next tick over a fresh
    connection; the run itself never notices."""

    def __init__(self, run: Run, inner: RunObserver | None = None):
        self.run = run
        self.inner = inner or RunObserver()
        self._cancelled_by = ""  # read from the Run row by the flusher (a cancel request)
        self._lock = threading.Lock()
        self._dirty = False
        self._failing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._flush_loop, name=f"run-progress-{run.pk}", daemon=True
        )

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(FLUSHER_JOIN_SECONDS)
        self.flush()

    def plan_ready(self, status, plan: list[MigrationFile]) -> None:
        with self._lock:
            self.run.planned = [m.version for m in plan]
            self.run.plan_hash = status.plan_hash
            self._dirty = True
        self.inner.plan_ready(status, plan)

    def migration_started(self, migration: MigrationFile) -> None:
        with self._lock:
            self.run.current_version = migration.version
            self.run.lock_wait = None
            self._dirty = True
        self.inner.migration_started(migration)

    def migration_finished(self, step: StepResult) -> None:
        with self._lock:
            self.run.steps.append(step.as_dict())
            self.run.current_version = ""
            if step.status == "completed":
                self.run.lock_wait = None
            self._dirty = True
        self.inner.migration_finished(step)

    def backup_created(self, path: str) -> None:
        with self._lock:
            self.run.backup_file = path
            self._dirty = True
        # Recorded at once: the run may still fail or be killed after it.
        self.flush()
        self.inner.backup_created(path)

    def lock_waiting(self, wait) -> None:
        with self._lock:
            self.run.lock_wait = wait.as_dict()
            self._dirty = True
        self.inner.lock_waiting(wait)

    def stop_requested(self, *, certain: bool = False) -> str | None:
        reason = self.inner.stop_requested(certain=certain)
        if reason:
            return reason
        if certain and not self._cancelled_by:
            self._read_cancel_request()
        return f"cancelled by {self._cancelled_by}" if self._cancelled_by else None

    def _read_cancel_request(self) -> None:
        try:
            requested = (
                Run.objects.filter(pk=self.run.pk)
                .values_list("cancel_requested_by", flat=True)
                .first()
            )
        except DatabaseError:
            console_connection_reset()
            return
        if requested:
            self._cancelled_by = requested

    def flush(self) -> bool:
        """Write the latest progress; False (and still dirty) when the console
        database did not take it."""
        with self._lock:
            if not self._dirty:
                return True
            fields = {
                "planned": list(self.run.planned),
                "plan_hash": self.run.plan_hash,
                "steps": list(self.run.steps),
                "current_version": self.run.current_version,
                "backup_file": self.run.backup_file,
                "lock_wait": self.run.lock_wait,
            }
            self._dirty = False
        try:
            # A flush that arrives after the final record (a flusher that outlived its
            # join) finds the run closed and changes nothing.
            Run.objects.filter(pk=self.run.pk, state=Run.State.RUNNING).update(**fields)
        except DatabaseError as exc:
            with self._lock:
                self._dirty = True
            console_connection_reset()
            if not self._failing:
                self._failing = True
                logger.warning(
                    "console database unreachable while recording progress of run %s (%s); "
                    "the run goes on, progress is retried",
                    self.run.pk,
                    describe(exc),
                )
            return False
        if self._failing:
            self._failing = False
            logger.info("recording progress of run %s again", self.run.pk)
        return True

    def _flush_loop(self) -> None:
        try:
            while not self._stop.wait(PROGRESS_FLUSH_SECONDS):
                self.flush()
                if not self._cancelled_by:
                    self._read_cancel_request()
        finally:
            console_connection_reset()


def run_create(
    *,
    target_name: str,
    caller: Caller,
    plan_hash: str = "",
    action: str = "run",
) -> Run:
    """The Run row of ``action`` on ``target_name`` asked for by ``caller`` (queued)."""
    return Run.objects.create(
        target=target_name,
        action=action,
        channel=caller.channel,
        requested_by=caller.actor[:150],
        user=caller.user if getattr(caller.user, "pk", None) else None,
        client_ip=caller.client_ip or None,
        plan_hash=plan_hash,
        break_glass=caller.break_glass,
    )


_OUTCOME_FOR = {
    LockNotAcquired: (Run.State.LOCKED, AuditEvent.Outcome.LOCKED),
    RunRefused: (Run.State.REFUSED, AuditEvent.Outcome.REFUSED),
    InvalidRequest: (Run.State.REFUSED, AuditEvent.Outcome.REFUSED),
}


def run_execute(
    *,
    target_name: str,
    caller: Caller,
    options: RunOptions | None = None,
    observer: RunObserver | None = None,
    path: str | None = None,
    run: Run | None = None,
) -> RunOutcome:
    """Apply pending migrations of one target for ``caller`` and record the run and
    its audit row (``run``: a queued Run row to use instead of creating one).

    Raises the service errors (refused, locked, bad files, unknown target) after
    recording them, so each channel maps them to its own exit code or status.
    """
    options = options or RunOptions()

    def operation(target: Target, progress: RunObserver) -> RunOutcome:
        return migrations_apply(
            target=target,
            actor=caller.actor,
            channel=caller.channel,
            options=options,
            observer=progress,
        )

    return action_execute(
        action="run",
        operation=operation,
        target_name=target_name,
        caller=caller,
        observer=observer,
        path=path,
        run=run,
        plan_hash=options.expected_plan_hash or "",
    )


def action_execute(
    *,
    action: str,
    operation: Callable[[Target, RunObserver], RunOutcome],
    target_name: str,
    caller: Caller,
    observer: RunObserver | None = None,
    path: str | None = None,
    run: Run | None = None,
    plan_hash: str = "",
) -> RunOutcome:
    """Record one action on a target (run, rollback, baseline, repair) by ``caller``:
    the Run row before the target is touched, its progress while
    ``operation(target, progress)`` works, and exactly one audit row with the
    outcome, whatever happens.

    ``operation`` returns a RunOutcome (its ``message``, when set, is recorded) or
    raises a service error, which is recorded and re-raised. Once the target has been
    worked on, the console database being away never turns the target's outcome
    into an error: the records are retried, and failing that the audit line goes to
    stderr (``run_records``).
    """
    # Nothing touches the target unrecorded: a console database that is down here
    # refuses the run (django.db errors reach the channel).
    if run is None:
        run = run_create(target_name=target_name, caller=caller, plan_hash=plan_hash, action=action)
    run.state = Run.State.RUNNING
    run.started_at = timezone.now()
    run.pid = os.getpid()
    run.save(update_fields=["state", "started_at", "pid"])
    recorder = RunRecorder(run, caller, target_name)

    run_tag = current_run_id.set(run.pk)
    try:
        target = target_get(target_name, path=path)
        runs_reap_abandoned(target=target)
        recorder.target = target
        with RunProgress(run, observer) as progress:
            outcome = operation(target, progress)
    except MigrationConsoleError as exc:
        state, audit_outcome = next(
            (found for kind, found in _OUTCOME_FOR.items() if isinstance(exc, kind)),
            (Run.State.ERROR, AuditEvent.Outcome.ERROR),
        )
        recorder.finish(state, audit_outcome, exc.message, getattr(exc, "versions", None))
        raise
    except BaseException as exc:
        recorder.finish(Run.State.ERROR, AuditEvent.Outcome.ERROR, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        current_run_id.reset(run_tag)

    versions = [step.version for step in outcome.steps]
    if outcome.status == "cancelled":
        applied = ", ".join(step.version for step in outcome.applied) or "none"
        recorder.finish(
            Run.State.CANCELLED,
            AuditEvent.Outcome.CANCELLED,
            f"{outcome.stopped}; applied before it: {applied}; no further file was started",
            versions,
        )
    elif outcome.failure:
        failure = outcome.failure
        recorder.finish(
            Run.State.FAILED,
            AuditEvent.Outcome.FAILED,
            outcome.message or f"{failure.version}_{failure.name} failed: {failure.error}",
            versions,
        )
    elif outcome.status == "up_to_date":
        recorder.finish(
            Run.State.UP_TO_DATE,
            AuditEvent.Outcome.UP_TO_DATE,
            outcome.message or "no pending migrations",
            [],
        )
    else:
        recorder.finish(
            Run.State.SUCCESS,
            AuditEvent.Outcome.SUCCESS,
            outcome.message or f"applied {len(outcome.applied)} migration(s)",
            versions,
        )
    return outcome
