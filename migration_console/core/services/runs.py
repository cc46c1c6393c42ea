"""Run records: every channel applies migrations through ``run_execute``.

It writes the Run row before the target is touched (so nothing changes
unrecorded), keeps the row's progress current for the console to poll, and
writes exactly one audit row with the outcome, whatever happens.
"""

import os
import threading
from collections.abc import Callable
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.audit import audit_record
from migration_console.core.services.caller import Caller
from migration_console.core.services.discovery import MigrationFile
from migration_console.core.services.errors import (
    InvalidRequest,
    LockNotAcquired,
    MigrationConsoleError,
    RunRefused,
)
from migration_console.core.services.runner import (
    RUN_TAG,
    RunObserver,
    RunOptions,
    RunOutcome,
    StepResult,
    current_run_id,
    migrations_apply,
)
from migration_console.core.services.targets import Target, target_get, target_read
from migration_console.ops.webhook import notify_run_finished

PROGRESS_FLUSH_SECONDS = 0.3
# A run older than this with no session left on its target has lost its runner.
ABANDONED_AFTER_SECONDS = 15.0


class RunProgress(RunObserver):
    """Mirrors progress into the Run row from a small flusher thread, so a run of a
    thousand quick files costs a few UPDATEs rather than two per file, while a long
    migration still shows as started within a fraction of a second."""

    def __init__(self, run: Run, inner: RunObserver | None = None):
        self.run = run
        self.inner = inner or RunObserver()
        self._lock = threading.Lock()
        self._dirty = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flush_loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
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
            self._dirty = True
        self.inner.migration_started(migration)

    def migration_finished(self, step: StepResult) -> None:
        with self._lock:
            self.run.steps.append(step.as_dict())
            self.run.current_version = ""
            self._dirty = True
        self.inner.migration_finished(step)

    def backup_created(self, path: str) -> None:
        with self._lock:
            self.run.backup_file = path
        # Recorded at once: the run may still fail or be killed after it.
        Run.objects.filter(pk=self.run.pk).update(backup_file=path)
        self.inner.backup_created(path)

    def flush(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            fields = {
                "planned": list(self.run.planned),
                "plan_hash": self.run.plan_hash,
                "steps": list(self.run.steps),
                "current_version": self.run.current_version,
            }
            self._dirty = False
        Run.objects.filter(pk=self.run.pk).update(**fields)

    def _flush_loop(self) -> None:
        try:
            while not self._stop.wait(PROGRESS_FLUSH_SECONDS):
                self.flush()
        finally:
            connection.close()


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
    raises a service error, which is recorded and re-raised.
    """
    if run is None:
        run = run_create(target_name=target_name, caller=caller, plan_hash=plan_hash, action=action)
    run.state = Run.State.RUNNING
    run.started_at = timezone.now()
    run.pid = os.getpid()
    run.save(update_fields=["state", "started_at", "pid"])

    def finish(state: str, outcome: str, message: str, migrations: list[str]) -> None:
        if run.backup_file:
            message = f"{message}; backup {run.backup_file}"
        run.state = state
        run.message = message
        run.finished_at = timezone.now()
        run.current_version = ""
        run.save(update_fields=["state", "message", "finished_at", "current_version"])
        audit_record(
            caller=caller,
            action=run.action,
            outcome=outcome,
            target=target_name,
            migrations=migrations,
            message=message,
            run=run,
        )
        notify_run_finished(run)  # MIGRATION_WEBHOOK_URL; bounded by a short timeout

    run_tag = current_run_id.set(run.pk)
    try:
        target = target_get(target_name, path=path)
        runs_reap_abandoned(target=target)
        with RunProgress(run, observer) as progress:
            outcome = operation(target, progress)
    except MigrationConsoleError as exc:
        state, audit_outcome = next(
            (found for kind, found in _OUTCOME_FOR.items() if isinstance(exc, kind)),
            (Run.State.ERROR, AuditEvent.Outcome.ERROR),
        )
        finish(state, audit_outcome, exc.message, getattr(exc, "versions", []))
        raise
    except BaseException as exc:
        finish(Run.State.ERROR, AuditEvent.Outcome.ERROR, f"{type(exc).__name__}: {exc}", [])
        raise
    finally:
        current_run_id.reset(run_tag)

    versions = [step.version for step in outcome.steps]
    if outcome.failure:
        failure = outcome.failure
        finish(
            Run.State.FAILED,
            AuditEvent.Outcome.FAILED,
            outcome.message or f"{failure.version}_{failure.name} failed: {failure.error}",
            versions,
        )
    elif outcome.status == "up_to_date":
        finish(
            Run.State.UP_TO_DATE,
            AuditEvent.Outcome.UP_TO_DATE,
            outcome.message or "no pending migrations",
            [],
        )
    else:
        finish(
            Run.State.SUCCESS,
            AuditEvent.Outcome.SUCCESS,
            outcome.message or f"applied {len(outcome.applied)} migration(s)",
            versions,
        )
    return outcome


def runs_reap_abandoned(*, target: Target, older_than: float = ABANDONED_AFTER_SECONDS) -> int:
    """Close the runs of ``target`` whose runner died without recording an outcome
    (SIGKILL, OOM, an evicted pod): queued or running for a while, yet none of the
    sessions their runner tags with ``run#<id>`` is left in pg_stat_activity. The
    target rolled back whatever was in flight when those sessions ended; the run
    gets state ``error`` and the audit row its runner could not write.
    Returns how many were closed."""
    cutoff = timezone.now() - timedelta(seconds=older_than)
    candidates = list(
        Run.objects.filter(
            target=target.name,
            state__in=(Run.State.QUEUED, Run.State.RUNNING),
            created_at__lt=cutoff,
        )
    )
    if not candidates:
        return 0

    def live_run_ids(session) -> set[int]:
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

    alive = target_read(target, live_run_ids)
    closed = 0
    message = (
        "the runner vanished without recording an outcome (killed?); whatever it had "
        "in flight was rolled back by PostgreSQL when its sessions ended: check the status"
    )
    for run in candidates:
        if run.pk in alive:
            continue
        updated = Run.objects.filter(pk=run.pk, state=run.state).update(
            state=Run.State.ERROR, message=message, finished_at=timezone.now(), current_version=""
        )
        if not updated:
            continue  # it finished meanwhile
        closed += 1
        audit_record(
            caller=Caller.of_run(run),
            action=run.action,
            outcome=AuditEvent.Outcome.ERROR,
            target=run.target,
            migrations=[step["version"] for step in run.steps],
            message=message,
            run=run,
        )
    return closed
