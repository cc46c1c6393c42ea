"""The session-level advisory lock that serialises runs against one tracking table.

Taken by polling ``pg_try_advisory_lock`` on a dedicated connection that lives
for the whole run: a killed runner's session ends and the lock goes with it.
Never a blocking ``pg_advisory_lock`` (it cannot time out cleanly or name the
holder) and never an ``_xact_`` lock (it would end with the first commit).
"""

import hashlib
import time
from dataclasses import asdict, dataclass
from datetime import datetime

from migration_console.core.services.errors import LockNotAcquired
from migration_console.core.services.tracking import TABLE

POLL_INTERVAL_SECONDS = 0.1


@dataclass(frozen=True)
class LockHolder:
    pid: int
    user: str
    application_name: str
    since: datetime | None

    def as_dict(self) -> dict:
        data = asdict(self)
        data["since"] = self.since.isoformat() if self.since else None
        return data

    def describe(self) -> str:
        since = self.since.isoformat(timespec="seconds") if self.since else "unknown"
        return (
            f"pid {self.pid}, user {self.user}, application_name "
            f"{self.application_name!r}, since {since}"
        )


def lock_key(database: str, schema: str) -> int:
    """A signed 64-bit key from database + schema + tracking table name."""
    digest = hashlib.sha256(f"{database}\0{schema}\0{TABLE}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _key_for(conn, schema: str) -> int:
    database = conn.execute("SELECT current_database()").fetchone()[0]
    return lock_key(database, schema)


_HOLDER_QUERY = """
SELECT a.pid, coalesce(a.usename, ''), coalesce(a.application_name, ''), a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = %(classid)s AND l.objid = %(objid)s AND l.objsubid = 1
LIMIT 1
"""


def lock_holder(conn, schema: str) -> LockHolder | None:
    key = _key_for(conn, schema)
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    row = conn.execute(
        _HOLDER_QUERY, {"classid": unsigned >> 32, "objid": unsigned & 0xFFFFFFFF}
    ).fetchone()
    return LockHolder(*row) if row else None


def lock_acquire(conn, schema: str, *, wait_seconds: float, database_label: str) -> int:
    """Poll until the lock is ours or ``wait_seconds`` pass; return the key."""
    key = _key_for(conn, schema)
    deadline = time.monotonic() + wait_seconds
    while True:
        if conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()[0]:
            return key
        if time.monotonic() >= deadline:
            holder = lock_holder(conn, schema)
            who = holder.describe() if holder else "holder already gone"
            raise LockNotAcquired(
                f"{database_label} is locked by another migration run ({who}); "
                f"gave up after {wait_seconds:g}s",
                holder=holder.as_dict() if holder else None,
            )
        time.sleep(min(POLL_INTERVAL_SECONDS, max(0.0, deadline - time.monotonic())))


def lock_release(conn, key: int) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", [key])
