"""Quick files travel several to a round trip (``execute.execute_batch``).

A run starts with one file per round trip. While files come back quick (under
QUICK_NS each on average), the next batch doubles, up to MAX_FILES files or
MAX_BYTES of SQL; a slow file or batch sends the run back to one file at a time.
Only transactional files are batched, and only under the advisory lock.

Each file stays its own transaction with its tracking row, so exactly-once does
not depend on the batching: after a batch stops, the tracking table (which nobody
else writes while the lock is held) tells which files committed, and the file
that stopped it continues through the one-file path (``file_runner.apply_file``) with
the error it met: the same lock-timeout retries, cancel, failure record and
lost-session check as a file sent alone.
"""

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from migration_console.core.services.blockers import BlockerWatch
from migration_console.core.services.discovery import MigrationFile
from migration_console.core.services.execute import (
    BatchStopped,
    SessionLost,
    execute_batch,
    failure_of,
    session_gone,
)
from migration_console.core.services.lock_retry import LockWait
from migration_console.core.services.steps import StepResult
from migration_console.core.services.targets import Target, target_connect
from migration_console.core.services.tracking import completed_row_sql, tracking_completed_among
from migration_console.env import duration_seconds

MAX_FILES = 64
MAX_BYTES = 1 << 20
QUICK_NS = 10_000_000


class BatchSizer:
    """How many of the next files go together: doubles while files are quick."""

    def __init__(self) -> None:
        self.size = 1
        self.alone_through = -1  # plan index: files up to it go one at a time

    def next_batch(self, plan: list[MigrationFile], index: int) -> list[MigrationFile]:
        if index <= self.alone_through:
            return plan[index : index + 1]
        batch: list[MigrationFile] = []
        total = 0
        for migration in plan[index : index + self.size]:
            if migration.no_transaction:
                break
            total += len(migration.sql)
            if batch and total > MAX_BYTES:
                break
            batch.append(migration)
        return batch or plan[index : index + 1]

    def one_at_a_time_through(self, index: int) -> None:
        """Files up to plan ``index`` go alone (a batch holding it was refused)."""
        self.alone_through = index
        self.size = 1

    def finished(self, files: int, elapsed_ns: int) -> None:
        quick = files > 0 and elapsed_ns < QUICK_NS * files
        self.size = min(self.size * 2, MAX_FILES) if quick else 1


@dataclass
class BatchOutcome:
    completed: list[StepResult] = field(default_factory=list)
    # What the file after ``completed`` met (ScriptFailed, RecordedMeanwhile or
    # SessionLost): that file goes on through the one-file path.
    failure: Exception | None = None
    started_at: datetime | None = None
    # Whether the observer was already told that file started (a lock wait).
    announced: bool = False
    # The server refused the whole query string before running any of it (a syntax
    # error, in the file at this index): nothing ran, the files go one at a time.
    refused_at: int | None = None


class _Progress:
    """Tells the observer about a batch's files in order and once each, from the
    runner's thread when the batch returns, or from the watcher's thread while one
    of its files waits for a lock (the files before it have committed by then)."""

    def __init__(self, batch: list[MigrationFile], observer):
        self.batch = batch
        self.observer = observer
        self.lock = threading.RLock()
        self.steps: list[StepResult] = []  # of the files told finished, in order
        self.announced: str | None = None  # the version told started and not finished
        self.returned = False  # the batch came back: the watcher has nothing more to say

    def committed(self, durations: dict[str, int], upto: int) -> list[StepResult]:
        """The observer hears of the files up to ``upto`` it has not heard of as
        finished; returns the steps of all the files it heard of."""
        with self.lock:
            for migration in self.batch[len(self.steps) : upto]:
                if self.announced != migration.version:
                    self.observer.migration_started(migration)
                step = StepResult(
                    migration.version,
                    migration.name,
                    "completed",
                    durations.get(migration.version, 0),
                )
                self.observer.migration_finished(step)
                self.announced = None
                self.steps.append(step)
            return list(self.steps)

    def batch_returned(self) -> None:
        with self.lock:
            self.returned = True

    def waiting(self, durations: dict[str, int], found) -> None:
        """The batch's first uncommitted file waits for a lock held by ``found``."""
        upto = _leading(self.batch, durations)
        with self.lock:
            if self.returned or upto >= len(self.batch) or upto < len(self.steps):
                return
            self.committed(durations, upto)
            migration = self.batch[upto]
            if self.announced != migration.version:
                self.observer.migration_started(migration)
                self.announced = migration.version
            self.observer.lock_waiting(
                LockWait(
                    migration.version,
                    migration.filename,
                    1,
                    1 + migration.settings.lock_retries,
                    found,
                )
            )


def _leading(batch: list[MigrationFile], durations: dict[str, int]) -> int:
    """How many of the batch's files, from its start, are recorded completed."""
    count = 0
    for migration in batch:
        if migration.version not in durations:
            break
        count += 1
    return count


def completed_record(
    conn, target: Target, migration: MigrationFile, applied_by: str, *, retry: bool, in_batch=False
) -> str:
    """The tracking insert that travels with ``migration`` (``retry``: it replaces the
    failed row of an earlier attempt)."""
    return completed_row_sql(
        conn,
        target.schema,
        version=migration.version,
        name=migration.name,
        checksum=migration.checksum,
        applied_by=applied_by,
        replaces_failure=retry,
        in_batch=in_batch,
    )


def batch_apply(
    conn,
    target: Target,
    batch: list[MigrationFile],
    *,
    applied_by: str,
    retried: frozenset[str],
    watch: BlockerWatch,
    observer,
) -> BatchOutcome:
    """Send ``batch`` in one query string; the steps of the files that committed and,
    if it stopped, the file it stopped at with its failure."""
    versions = [migration.version for migration in batch]
    trailers = [
        completed_record(conn, target, m, applied_by, retry=m.version in retried, in_batch=True)
        for m in batch
    ]
    progress = _Progress(batch, observer)

    def report(found) -> None:
        durations = watch.side_query(
            lambda side: tracking_completed_among(side, target.schema, versions)
        )
        if durations is not None:
            progress.waiting(durations, found)

    lock_timeout = max(duration_seconds(m.settings.lock_timeout) or 0.0 for m in batch)
    started_at = datetime.now(UTC)
    try:
        with watch.watching(lock_timeout or None, report):
            execute_batch(conn, batch, trailers)
    except BatchStopped as stopped:
        progress.batch_returned()
        durations = _recorded(conn, target, versions)
        cause = stopped.cause
        erring = None if isinstance(cause, SessionLost) else stopped.file_at_error()
        if erring is not None and erring > 0 and not durations:
            # PostgreSQL parses a whole query string before it runs any statement of
            # it: an error that points past the first file, with no file committed,
            # is a syntax error that stopped the batch before anything ran.
            return BatchOutcome(started_at=started_at, refused_at=erring)
        if durations is None:  # the target is unreachable: nothing can be told
            durations = {}
            cause = SessionLost(
                f"{cause} (sent together with the files up to {batch[-1].filename}: "
                "check the status for which of them committed)"
            )
        # Every file committed and only then was the session lost: the last one
        # reports it (its commit landed), as a file sent alone would.
        upto = min(_leading(batch, durations), len(batch) - 1)
        steps = progress.committed(durations, upto)
        failure = (
            cause
            if isinstance(cause, SessionLost)
            else failure_of(cause, batch[upto], stopped.offsets[upto])
        )
        return BatchOutcome(
            steps,
            failure=failure,
            started_at=started_at,
            announced=progress.announced == batch[upto].version,
        )
    progress.batch_returned()
    durations = tracking_completed_among(conn, target.schema, versions)
    return BatchOutcome(progress.committed(durations, len(batch)), started_at=started_at)


def _recorded(conn, target: Target, versions: list[str]) -> dict[str, int] | None:
    """Which of ``versions`` are recorded completed: on the runner's session, or on a
    fresh one if that session is gone; None if neither answers."""
    if not session_gone(conn):
        try:
            return tracking_completed_among(conn, target.schema, versions)
        except Exception:
            if not session_gone(conn):
                raise
    for _ in range(2):
        try:
            with target_connect(target, application_name="migration-console check") as fresh:
                return tracking_completed_among(fresh, target.schema, versions)
        except Exception:
            time.sleep(0.2)
    return None
