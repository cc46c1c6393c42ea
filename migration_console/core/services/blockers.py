"""Who blocks the runner: the sessions ``pg_blocking_pids()`` names for its backend.

The runner's own session is busy waiting for the lock, so a second, read-only
session asks on its behalf. It is opened only when a file has been running for a
moment (a quick file costs nothing) and kept for the rest of the run.
"""

import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from migration_console.core.services.targets import Target, target_connect

QUERY_PREFIX_CHARS = 200
FIRST_LOOK_AFTER = 0.2  # seconds into an attempt, at most (sooner for a short lock_timeout)
LOOK_EVERY = 0.25

_BLOCKERS_SQL = """
SELECT a.pid, coalesce(a.usename, ''), coalesce(a.application_name, ''),
       coalesce(a.state, ''),
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8,
       left(coalesce(a.query, ''), %s), a.xact_start
  FROM pg_stat_activity a
 WHERE a.pid = ANY(pg_blocking_pids(%s))
 ORDER BY a.xact_start NULLS LAST, a.pid
"""


@dataclass(frozen=True)
class Blocker:
    pid: int
    user: str
    application_name: str
    state: str
    xact_age_seconds: float | None
    query: str
    xact_start: object = field(default=None, compare=False)  # tells one transaction from the next

    def as_dict(self) -> dict:
        return {
            "pid": self.pid,
            "user": self.user,
            "application_name": self.application_name,
            "state": self.state,
            "xact_age_seconds": (
                None if self.xact_age_seconds is None else round(self.xact_age_seconds, 1)
            ),
            "query": self.query,
        }

    def describe(self) -> str:
        age = ""
        if self.xact_age_seconds is not None:
            age = f", transaction open {self.xact_age_seconds:.0f} s"
        query = " ".join(self.query.split())[:80]
        return (
            f"pid {self.pid} (user {self.user or '?'}, application_name "
            f"{self.application_name or '(none)'!r}, {self.state or 'unknown state'}{age})"
            + (f": {query}" if query else "")
        )


def blockers_of(conn, pid: int) -> list[Blocker]:
    rows = conn.execute(_BLOCKERS_SQL, (QUERY_PREFIX_CHARS, pid)).fetchall()
    return [Blocker(*row) for row in rows]


def describe_blockers(blockers: list[Blocker]) -> str:
    return "; ".join(blocker.describe() for blocker in blockers)


class BlockerWatch:
    """Looks, from a side session, for the sessions blocking ``runner_pid`` while an
    attempt runs (``watching``), and passes what it sees to that attempt's ``report``."""

    def __init__(self, target: Target, runner_pid: int):
        self.target = target
        self.runner_pid = runner_pid
        self._report: Callable[[list[Blocker]], None] = lambda blockers: None
        self.latest: list[Blocker] = []
        self._conn = None
        self._since: float | None = None
        self._first_look = FIRST_LOOK_AFTER
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        # When the watcher thread wakes on its own (inf: only when notified); None
        # while it is awake. A quick file then costs no wake-up of that thread.
        self._asleep_until: float | None = None

    @contextlib.contextmanager
    def watching(self, lock_timeout_seconds: float | None, report):
        """Around one attempt: blockers seen during it end up in ``latest``."""
        with self._wake:
            self._report = report
            self.latest = []
            self._since = time.monotonic()
            self._first_look = min(FIRST_LOOK_AFTER, (lock_timeout_seconds or 1.0) / 2)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="blocker-watch", daemon=True
                )
                self._thread.start()
            asleep_until = self._asleep_until
            if asleep_until is not None and self._since + self._first_look < asleep_until:
                self._wake.notify()
        try:
            yield self
        finally:
            with self._wake:
                self._since = None

    def released(self, blockers: list[Blocker]) -> bool:
        """Whether every one of ``blockers`` has ended the transaction it blocked in
        (or its session): then the next attempt need not wait out its back-off."""
        return self._still_open(blockers) is False

    def still_blocking(self, blockers: list[Blocker]) -> bool:
        """Whether one of ``blockers`` is seen still in the transaction it blocked in:
        it still holds its lock, so another attempt could only time out again."""
        return self._still_open(blockers) is True

    def _still_open(self, blockers: list[Blocker]) -> bool | None:
        """None when it cannot be told (nothing seen, or the side session failed)."""
        blockers = [blocker for blocker in blockers if blocker.xact_start]
        if not blockers or self._conn is None or self._conn.closed or self._conn.broken:
            return None
        try:
            rows = self._conn.execute(
                "SELECT pid, xact_start FROM pg_stat_activity WHERE pid = ANY(%s)",
                [[blocker.pid for blocker in blockers]],
            ).fetchall()
        except Exception:
            return None
        still = {(pid, start) for pid, start in rows}
        return any((blocker.pid, blocker.xact_start) in still for blocker in blockers)

    def side_query(self, query: Callable):
        """``query(connection)`` on the watch's own session, from a ``report`` callback
        (the watcher thread); None if it fails: a side view only."""
        try:
            return query(self._conn)
        except Exception:
            return None

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(2)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()

    def _sleep(self, seconds: float | None) -> None:
        """Wait on the condition (its lock held) for ``seconds`` (None: until notified)."""
        self._asleep_until = math.inf if seconds is None else time.monotonic() + seconds
        try:
            self._wake.wait(seconds)
        finally:
            self._asleep_until = None

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._closed and self._since is None:
                    self._sleep(None)
                if self._closed:
                    return
                due = self._since + self._first_look - time.monotonic()
                if due > 0:
                    self._sleep(due)
                    continue
            self._look()
            with self._wake:
                if not self._closed:
                    self._sleep(LOOK_EVERY)

    def _look(self) -> None:
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = target_connect(
                    self.target, application_name="migration-console blockers", read_only=True
                )
            found = blockers_of(self._conn, self.runner_pid)
        except Exception:
            return  # a side view only: the run itself never depends on it
        with self._wake:
            if self._since is None or not found:
                return
            self.latest = found
            report = self._report
        report(found)
