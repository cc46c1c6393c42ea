"""Apply one file on the runner's session: in its transaction with its tracking row,
or statement by statement when it is a no-transaction file; retried while it times
out on a lock; and what each failure becomes (a failed, cancelled or completed
step, with the message an operator needs). ``runner.apply_plan`` calls it for every
file sent alone, and for the file a batch stopped at (``carried``).
"""

import time
from datetime import UTC, datetime

from migration_console.core.services.batches import BatchOutcome, completed_record
from migration_console.core.services.blockers import BlockerWatch
from migration_console.core.services.discovery import MigrationFile
from migration_console.core.services.execute import (
    RecordedMeanwhile,
    ScriptFailed,
    SessionLost,
    cause_of,
    execute_in_transaction,
    execute_statements,
    session_gone,
)
from migration_console.core.services.lock_retry import (
    LockWait,
    exhausted_message,
    lock_timed_out,
    retry_wait,
    wait_unless_stopped,
)
from migration_console.core.services.status import FAILED
from migration_console.core.services.steps import CANCELLED, StepResult
from migration_console.core.services.targets import Target, target_connect
from migration_console.core.services.tracking import (
    is_duplicate_record,
    tracking_record_failure,
    tracking_record_finished,
    tracking_record_started,
    tracking_rows,
)
from migration_console.env import duration_seconds


def _apply_transactional(
    conn, target: Target, migration: MigrationFile, applied_by: str, retry: bool
) -> None:
    record = completed_record(conn, target, migration, applied_by, retry=retry)
    execute_in_transaction(conn, migration, record)


def _apply_without_transaction(
    conn, target: Target, migration: MigrationFile, applied_by: str, started: int
) -> None:
    try:
        tracking_record_started(
            conn,
            target.schema,
            version=migration.version,
            name=migration.name,
            checksum=migration.checksum,
            applied_by=applied_by,
        )
    except Exception as exc:
        if session_gone(conn):
            raise SessionLost(cause_of(exc)) from exc
        if is_duplicate_record(exc):
            raise RecordedMeanwhile(str(exc)) from exc
        raise
    try:
        execute_statements(conn, migration)
    except ScriptFailed as failure:
        tracking_record_finished(
            conn,
            target.schema,
            version=migration.version,
            duration_ns=time.perf_counter_ns() - started,
            error=str(failure),
        )
        raise
    try:
        tracking_record_finished(
            conn,
            target.schema,
            version=migration.version,
            duration_ns=time.perf_counter_ns() - started,
            error=None,
        )
    except Exception as exc:
        if session_gone(conn):
            raise SessionLost(cause_of(exc)) from exc
        raise


def _in_flight_state(target: Target, migration: MigrationFile, since) -> str:
    """What the tracking table says of the file that was in flight when the session
    was lost, read on a fresh session: its commit may or may not have landed."""
    try:
        with target_connect(target, application_name="migration-console check") as conn:
            row = tracking_rows(conn, target.schema).get(migration.version)
    except Exception as exc:
        return f"unknown ({target.name} unreachable: {cause_of(exc)}); check the status"
    if row is None:
        return "not recorded: its transaction was rolled back"
    if row.status == "completed" and row.checksum == migration.checksum and row.applied_at >= since:
        return "completed: its commit landed before the session ended"
    if row.status == "failed" and (row.error or "").startswith("interrupted"):
        return "recorded failed (interrupted): resolve it with `migrate_sql repair` after a check"
    return f"recorded {row.status} by {row.applied_by} at {row.applied_at:%Y-%m-%d %H:%M:%S%z}"


def _wait_for_next_attempt(
    migration: MigrationFile,
    attempt: int,
    attempts_allowed: int,
    observer,
    watch: BlockerWatch,
) -> tuple[int, str | None]:
    """Back off after ``attempt`` timed out; returns the last attempt spent and the stop
    reason, if any. An attempt is passed over (not made) while a blocker seen before is
    still in its transaction: it still holds its lock, so the attempt could only queue
    the application behind it for another lock_timeout. The last one is always made."""
    seen = list(watch.latest)
    passed_over = False
    while True:
        pause = retry_wait(attempt)
        observer.lock_waiting(
            LockWait(
                migration.version,
                migration.filename,
                attempt,
                attempts_allowed,
                seen,
                next_attempt_in_seconds=pause,
                passed_over=passed_over,
            )
        )
        stop = wait_unless_stopped(
            pause, observer.stop_requested, ready=lambda: watch.released(seen)
        )
        if stop or attempt + 1 >= attempts_allowed or not watch.still_blocking(seen):
            return attempt, stop
        attempt += 1
        passed_over = True


def apply_file(
    conn,
    target: Target,
    migration: MigrationFile,
    applied_by: str,
    observer,
    watch: BlockerWatch,
    retry: bool,
    carried: BatchOutcome | None = None,
) -> tuple[StepResult, str]:
    """Apply one file: its step (an ``error`` on a completed step means the run must
    stop anyway) and the stop reason, if a stop was requested. ``carried``: a batch
    stopped at this file, and its failure counts as the file's first attempt."""
    started = time.perf_counter_ns()
    started_at = carried.started_at if carried else datetime.now(UTC)
    first_failure = carried.failure if carried else None
    effective = migration.settings
    attempts_allowed = 1 + effective.lock_retries
    attempt = passed_over = 0

    def step(status: str, error: str | None = None) -> StepResult:
        return StepResult(
            migration.version,
            migration.name,
            status,
            time.perf_counter_ns() - started,
            error,
            max(attempt, 1),
        )

    def report(blockers) -> None:
        observer.lock_waiting(
            LockWait(migration.version, migration.filename, attempt, attempts_allowed, blockers)
        )

    try:
        while True:
            attempt += 1
            try:
                if first_failure is not None:
                    failure, first_failure = first_failure, None
                    raise failure
                with watch.watching(duration_seconds(effective.lock_timeout), report):
                    if migration.no_transaction:
                        _apply_without_transaction(conn, target, migration, applied_by, started)
                    else:
                        _apply_transactional(conn, target, migration, applied_by, retry)
                break
            except ScriptFailed as failure:
                if not lock_timed_out(failure):
                    raise
                if attempt >= attempts_allowed:
                    raise ScriptFailed(
                        exhausted_message(
                            failure, attempt, effective.lock_timeout, watch.latest, passed_over
                        )
                    ) from failure.__cause__
                # Rolled back whole: wait, then try the file again.
                made = attempt
                attempt, stop = _wait_for_next_attempt(
                    migration, attempt, attempts_allowed, observer, watch
                )
                passed_over += attempt - made
                if stop:
                    return step(CANCELLED, stop), stop
    except ScriptFailed as failure:
        stop = observer.stop_requested(certain=True) if _cancelled(failure) else None
        if stop and not migration.no_transaction:
            # Cancelled on purpose: rolled back whole, so it stays plainly pending.
            return step(CANCELLED, stop), stop
        if not migration.no_transaction:  # a no-transaction file's row is closed already
            tracking_record_failure(
                conn,
                target.schema,
                version=migration.version,
                name=migration.name,
                checksum=migration.checksum,
                duration_ns=time.perf_counter_ns() - started,
                applied_by=applied_by,
                error=str(failure),
            )
        return step(FAILED, str(failure)), stop or ""
    except RecordedMeanwhile:
        return step(
            FAILED,
            f"{migration.filename} was recorded by another runner while this one applied it "
            "(was a run started with --no-lock?); this runner's changes were rolled back and "
            "no further file was started",
        ), ""
    except SessionLost as lost:
        state = _in_flight_state(target, migration, started_at)
        message = (
            f"lost the session to {target.name} while applying {migration.filename}: "
            f"{lost}. The advisory lock went with it, so this runner stopped and started "
            f"no further file. {migration.filename}: {state}"
        )
        return step("completed" if state.startswith("completed") else FAILED, message), ""
    return step("completed"), ""


def _cancelled(failure: ScriptFailed) -> bool:
    """The statement was cancelled (pg_cancel_backend), not failed on its own."""
    return getattr(failure.__cause__, "sqlstate", None) == "57014"
