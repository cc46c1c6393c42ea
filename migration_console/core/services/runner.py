"""Apply pending migrations to one target under the advisory lock.

The lock is held by the very session that applies the files (Flyway's model):
whatever ends that session (an idle timeout, a proxy, ``pg_terminate_backend``,
a restart) ends the lock and the work together, so no second runner can take
the lock while this one is still applying a file, and this runner cannot
continue without it (it never reconnects mid-run).

Each transactional file travels to the server as one query string,
``BEGIN; SET LOCAL lock_timeout; <file>; <tracking insert>; COMMIT``: one round
trip, applied entirely or not at all together with its tracking row. The
insert is never an upsert, so a version recorded meanwhile by anyone else rolls
the file back. A no-transaction file is recorded ``failed``/interrupted before
its first statement and runs statement by statement in autocommit.
"""

import contextlib
import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings

from migration_console.core.services.backup import backup_create
from migration_console.core.services.batches import BatchOutcome, BatchSizer, batch_apply
from migration_console.core.services.blockers import BlockerWatch
from migration_console.core.services.discovery import MigrationFile, discover
from migration_console.core.services.errors import ConfigurationError, RunRefused
from migration_console.core.services.execute import (
    RecordedMeanwhile,
    ScriptFailed,
    SessionLost,
    cause_of,
    execute_in_transaction,
    execute_statements,
    session_gone,
)
from migration_console.core.services.lint import refuse_lint_errors
from migration_console.core.services.lock_retry import (
    LockWait,
    exhausted_message,
    lock_timed_out,
    retry_wait,
    wait_unless_stopped,
)
from migration_console.core.services.locking import lock_acquire, lock_release
from migration_console.core.services.status import (
    DRIFTED,
    FAILED,
    MISSING,
    OUT_OF_ORDER,
    TargetStatus,
    build_status,
)
from migration_console.core.services.steps import StepResult
from migration_console.core.services.targets import Target, target_connect
from migration_console.core.services.tracking import (
    completed_row_sql,
    is_duplicate_record,
    tracking_ensure,
    tracking_record_failure,
    tracking_record_finished,
    tracking_record_started,
    tracking_rows,
)
from migration_console.env import duration_seconds

SUCCESS = "success"
UP_TO_DATE = "up_to_date"
FAILED_OUTCOME = "failed"
CANCELLED = "cancelled"
# A step the run could not start because it lost its session after the previous
# file committed; it changed nothing.
NOT_STARTED = "not_started"


@dataclass
class RunOptions:
    allow_out_of_order: bool = False
    allow_drift: bool = False
    use_lock: bool = True
    lock_wait: float | None = None
    expected_plan_hash: str | None = None
    # pg_dump the target here before the first change (default MIGRATION_BACKUP_DIR).
    backup_dir: str | None = None
    # Refuse on error-level squawk findings in the plan.
    strict_lint: bool = False


@dataclass
class RunOutcome:
    status: str  # success | up_to_date | failed | cancelled
    target: str
    steps: list[StepResult] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)
    message: str = ""  # set by actions other than run (rollback, baseline, repair)
    backup_file: str = ""
    stopped: str = ""  # why the run stopped before its plan's end (a cancel, a shutdown)

    @property
    def applied(self) -> list[StepResult]:
        return [step for step in self.steps if step.status == "completed"]

    @property
    def failure(self) -> StepResult | None:
        return next((step for step in self.steps if step.status in (FAILED, NOT_STARTED)), None)


class RunObserver:
    """Hooks a channel implements to show progress; the default shows nothing."""

    def plan_ready(self, status: TargetStatus, plan: list[MigrationFile]) -> None:
        pass

    def migration_started(self, migration: MigrationFile) -> None:
        pass

    def migration_finished(self, step: StepResult) -> None:
        pass

    def backup_created(self, path: str) -> None:
        pass

    def lock_waiting(self, wait: LockWait) -> None:
        """A file waits for a table lock, or timed out and will be tried again."""

    def stop_requested(self, *, certain: bool = False) -> str | None:
        """Asked before each file: a reason (a cancel, a worker shutting down) makes
        the run stop there, starting no further file. ``certain``: asked after a
        statement was cancelled, so look it up now rather than from a cache."""
        return None


# The Run row a runner works for, set by runs.action_execute around the operation:
# its id goes into application_name, so a run whose sessions are all gone from
# pg_stat_activity is known to have died (runs.runs_reap_abandoned).
current_run_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "migration_console_run_id", default=None
)
RUN_TAG = "migration-console run#"


def application_name(channel: str, actor: str) -> str:
    run_id = current_run_id.get()
    prefix = f"{RUN_TAG}{run_id}" if run_id else "migration-console"
    return f"{prefix} {channel} {actor}"[:63]


@contextmanager
def target_session(
    target: Target, *, channel: str, actor: str, use_lock: bool, lock_wait: float | None
) -> Iterator:
    """The runner's one connection to ``target``, holding the advisory lock (unless
    ``use_lock`` is false) for as long as it lives."""
    wait = settings.MIGRATION_LOCK_WAIT if lock_wait is None else lock_wait
    with target_connect(target, application_name=application_name(channel, actor)) as conn:
        key = None
        if use_lock:
            key = lock_acquire(conn, target.schema, wait_seconds=wait, database_label=target.name)
        _check_lock_timeout(conn)
        yield conn
        if key is not None and not (conn.closed or conn.broken):
            # Closing the session frees it too; unlocking first keeps a pooled
            # or slow-closing session from holding it a moment longer.
            with contextlib.suppress(Exception):
                lock_release(conn, key)


def _check_lock_timeout(conn) -> None:
    """Refuse a bad MIGRATION_LOCK_TIMEOUT before any change, rather than record the
    first migration as failed for a setting's fault."""
    import psycopg
    from psycopg import sql

    value = settings.MIGRATION_LOCK_TIMEOUT
    try:
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(value)))
    except psycopg.DataError as exc:
        raise ConfigurationError(
            f"MIGRATION_LOCK_TIMEOUT={value!r} is not a PostgreSQL duration (e.g. 5s, 500ms): "
            f"{exc.diag.message_primary}"
        ) from None


def refuse_unsafe_run(status: TargetStatus, options: RunOptions) -> None:
    blocked = [i for i in status.with_state(FAILED) if i.no_transaction]
    if blocked:
        names = ", ".join(i.file.filename for i in blocked)
        raise RunRefused(
            f"{names} failed outside a transaction and may have left the database half-changed; "
            "check it by hand, then resolve it with `migrate_sql repair <version>` "
            "before running again",
            reason="failed_no_transaction",
            versions=[i.version for i in blocked],
        )
    drifted = status.with_state(DRIFTED, MISSING)
    if drifted and not options.allow_drift:
        names = ", ".join(f"{i.version}_{i.name} ({i.status})" for i in drifted)
        raise RunRefused(
            f"applied migrations changed since they ran: {names}; "
            "repair them or pass --allow-drift",
            reason="drift",
            versions=[i.version for i in drifted],
        )
    late = status.with_state(OUT_OF_ORDER)
    if late and not options.allow_out_of_order:
        names = ", ".join(i.file.filename for i in late)
        raise RunRefused(
            f"pending migrations older than the newest applied one: {names}; "
            "pass --allow-out-of-order to run them",
            reason="out_of_order",
            versions=[i.version for i in late],
        )


def _apply_transactional(
    conn, target: Target, migration: MigrationFile, applied_by: str, retry: bool
) -> None:
    record = completed_row_sql(
        conn,
        target.schema,
        version=migration.version,
        name=migration.name,
        checksum=migration.checksum,
        applied_by=applied_by,
        replaces_failure=retry,
    )
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


def apply_plan(
    conn,
    target: Target,
    plan: list[MigrationFile],
    *,
    applied_by: str,
    observer: RunObserver,
    watch: BlockerWatch,
    retried: frozenset[str] = frozenset(),
    batching: bool = False,
) -> tuple[list[StepResult], str]:
    """Apply ``plan`` in order, stopping at the first failure or when the observer asks
    to stop; returns the steps and why it stopped early ("" otherwise). ``retried``:
    versions whose tracking row is a ``failed`` attempt that this run replaces.
    ``batching``: quick files may travel several to a round trip (batches.py)."""
    steps: list[StepResult] = []
    sizer = BatchSizer()
    index = 0
    while index < len(plan):
        stop = observer.stop_requested()
        if stop:
            return steps, stop
        batch = sizer.next_batch(plan, index) if batching else plan[index : index + 1]
        carried: BatchOutcome | None = None
        if len(batch) > 1:
            started = time.perf_counter_ns()
            carried = batch_apply(
                conn,
                target,
                batch,
                applied_by=applied_by,
                retried=retried,
                watch=watch,
                observer=observer,
            )
            if carried.refused_at is not None:
                sizer.alone_through = index + carried.refused_at
                sizer.size = 1
                continue
            steps.extend(carried.completed)
            index += len(carried.completed)
            if carried.failure is None:
                sizer.finished(len(batch), time.perf_counter_ns() - started)
                continue
        migration = plan[index]
        if not (carried and carried.announced):
            observer.migration_started(migration)
        step, stop = _apply_one(
            conn,
            target,
            migration,
            applied_by,
            observer,
            watch,
            migration.version in retried,
            carried=carried,
        )
        steps.append(step)
        observer.migration_finished(step)
        index += 1
        if step.status == "completed" and not step.error:
            sizer.finished(1, step.duration_ns)
            continue
        following = plan[index : index + 1]
        if step.status == "completed" and following:
            # Its commit landed, but the session is gone: the run stops here, and the
            # first file it could not start is reported as the failure.
            steps.append(
                StepResult(following[0].version, following[0].name, NOT_STARTED, 0, step.error)
            )
        return steps, stop
    return steps, ""


def _wait_for_next_attempt(
    migration: MigrationFile,
    attempt: int,
    attempts_allowed: int,
    observer: RunObserver,
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


def _apply_one(
    conn,
    target: Target,
    migration: MigrationFile,
    applied_by: str,
    observer: RunObserver,
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


def migrations_apply(
    *,
    target: Target,
    actor: str,
    channel: str,
    options: RunOptions | None = None,
    observer: RunObserver | None = None,
) -> RunOutcome:
    """Apply every runnable migration of ``target``; the one code path for all channels."""
    options = options or RunOptions()
    observer = observer or RunObserver()
    files = discover(target.path)
    with target_session(
        target,
        channel=channel,
        actor=actor,
        use_lock=options.use_lock,
        lock_wait=options.lock_wait,
    ) as conn:
        status = build_status(target, files, tracking_rows(conn, target.schema))
        if options.expected_plan_hash and options.expected_plan_hash != status.plan_hash:
            raise RunRefused(
                "the migrations or the applied set changed since the plan was shown; "
                "review the new plan and confirm again",
                reason="plan_changed",
            )
        refuse_unsafe_run(status, options)
        plan = [item.file for item in status.pending]
        if plan and options.strict_lint:
            refuse_lint_errors(plan)
        observer.plan_ready(status, plan)
        if not plan:
            return RunOutcome(status=UP_TO_DATE, target=target.name)
        # Nothing has changed yet (not even the tracking table): a failed backup
        # aborts here.
        backup_dir = options.backup_dir or settings.MIGRATION_BACKUP_DIR
        backup_file = ""
        if backup_dir:
            backup_file = backup_create(target, backup_dir)
            observer.backup_created(backup_file)
        tracking_ensure(conn, target.schema)
        watch = BlockerWatch(target, conn.info.backend_pid)
        try:
            steps, stopped = apply_plan(
                conn,
                target,
                plan,
                applied_by=actor,
                observer=observer,
                watch=watch,
                retried=frozenset(item.version for item in status.with_state(FAILED)),
                batching=options.use_lock,
            )
        finally:
            watch.close()
    outcome = RunOutcome(
        status=SUCCESS,
        target=target.name,
        steps=steps,
        planned=[m.version for m in plan],
        backup_file=backup_file,
        stopped=stopped,
    )
    if stopped:  # a no-transaction file cut mid-way also shows as its failed step
        outcome.status = CANCELLED
    elif outcome.failure:
        outcome.status = FAILED_OUTCOME
    return outcome
