"""Apply pending migrations to one target under the advisory lock.

The lock is held by the very session that applies the files (Flyway's model):
whatever ends that session (an idle timeout, a proxy, ``pg_terminate_backend``,
a restart) ends the lock and the work together, so no second runner can take
the lock while this one is still applying a file, and this runner cannot
continue without it (it never reconnects mid-run).

Each transactional file travels to the server in one query string with its
tracking insert, ``BEGIN; SET LOCAL lock_timeout; <file>; <tracking insert>;
COMMIT``, applied entirely or not at all; quick files share a query string, each
still its own transaction (``batches.py``). The insert is never an upsert, so a
version recorded meanwhile by anyone else rolls the file back. A no-transaction
file is recorded ``failed``/interrupted before its first statement and runs
statement by statement in autocommit (``file_runner.py``).
"""

import contextlib
import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings

from migration_console.core.services.backup import backup_create
from migration_console.core.services.batches import (
    BatchOutcome,
    BatchSizer,
    batch_apply,
)
from migration_console.core.services.blockers import BlockerWatch
from migration_console.core.services.discovery import MigrationFile, discover
from migration_console.core.services.errors import ConfigurationError, RunRefused
from migration_console.core.services.file_runner import apply_file
from migration_console.core.services.lint import refuse_lint_errors
from migration_console.core.services.lock_retry import (
    LockWait,
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
from migration_console.core.services.steps import CANCELLED, NOT_STARTED, StepResult
from migration_console.core.services.targets import Target, target_connect
from migration_console.core.services.tracking import (
    tracking_ensure,
    tracking_rows,
)

SUCCESS = "success"
UP_TO_DATE = "up_to_date"
FAILED_OUTCOME = "failed"


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
                sizer.one_at_a_time_through(index + carried.refused_at)
                continue
            steps.extend(carried.completed)
            index += len(carried.completed)
            if carried.failure is None:
                sizer.finished(len(batch), time.perf_counter_ns() - started)
                continue
        migration = plan[index]
        if not (carried and carried.announced):
            observer.migration_started(migration)
        step, stop = apply_file(
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
