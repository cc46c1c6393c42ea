"""Selectors: the state of every migration of a target, read-only."""

import functools
import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime

import psycopg
from psycopg import sql

from migration_console.core.services.discovery import (
    MigrationFile,
    SetProblem,
    discover_set,
    version_key,
)
from migration_console.core.services.locking import _HOLDER_QUERY, LockHolder, lock_key
from migration_console.core.services.targets import SharedReadConnection, Target, target_read
from migration_console.core.services.tracking import (
    TrackingRow,
    table_identifier,
    tracking_rows,
)

COMPLETED = "completed"
PENDING = "pending"
FAILED = "failed"
DRIFTED = "drifted"
MISSING = "missing"
OUT_OF_ORDER = "out_of_order"
STATES = (COMPLETED, PENDING, FAILED, DRIFTED, MISSING, OUT_OF_ORDER)
APPLIED_STATES = (COMPLETED, DRIFTED, MISSING)
RUNNABLE_STATES = (PENDING, FAILED, OUT_OF_ORDER)


@dataclass(frozen=True)
class MigrationItem:
    version: str
    name: str
    status: str
    file: MigrationFile | None
    row: TrackingRow | None

    @property
    def checksum(self) -> str:
        """The recorded checksum once applied, else the file's."""
        if self.row and self.row.status == COMPLETED:
            return self.row.checksum
        return self.file.checksum if self.file else self.row.checksum

    @property
    def file_checksum(self) -> str | None:
        return self.file.checksum if self.file else None

    @property
    def applied_at(self) -> datetime | None:
        return self.row.applied_at if self.row else None

    @property
    def duration_ns(self) -> int | None:
        return self.row.duration_ns if self.row else None

    @property
    def applied_by(self) -> str | None:
        return self.row.applied_by if self.row else None

    @property
    def error(self) -> str | None:
        return self.row.error if self.row and self.row.status == FAILED else None

    @property
    def no_transaction(self) -> bool:
        return bool(self.file and self.file.no_transaction)

    def as_dict(self) -> dict:
        """SPEC's API item, plus fields the console and CLI show."""
        return {
            "version": self.version,
            "name": self.name,
            "status": self.status,
            "applied_at": self.applied_at.isoformat() if self.applied_at else None,
            "duration": self.duration_ns,
            "checksum": self.checksum,
            "file_checksum": self.file_checksum,
            "applied_by": self.applied_by,
            "error": self.error,
            "no_transaction": self.no_transaction,
        }


@dataclass
class TargetStatus:
    target: Target
    items: list[MigrationItem]
    lock_holder: LockHolder | None = None
    plan_hash: str = field(default="")
    # Why the file set would be refused (``run`` and friends refuse while any is
    # listed); the items show what could be read despite them.
    problems: list[SetProblem] = field(default_factory=list)

    def with_state(self, *states: str) -> list[MigrationItem]:
        return [item for item in self.items if item.status in states]

    @property
    def pending(self) -> list[MigrationItem]:
        """What ``run`` would execute, in order (failed transactional files are retried)."""
        return self.with_state(*RUNNABLE_STATES)

    @property
    def applied(self) -> list[MigrationItem]:
        return self.with_state(*APPLIED_STATES)

    def refuse_problems(self) -> None:
        """Raise ``MigrationSetError`` for the first problem of the file set, if any:
        what an action that changes the target does before anything else."""
        if self.problems:
            raise self.problems[0].as_error()

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for item in self.items:
            counts[item.status] += 1
        return counts

    def as_dict(self, *, lint: bool = False) -> dict:
        """SPEC's ``GET /admin/migrations/status`` shape; ``lint``: each pending item
        also carries its squawk findings (``"lint"``)."""
        findings = {}
        if lint:
            from migration_console.core.services.lint import lint_files

            results = lint_files([item.file for item in self.pending], stored=True)
            findings = {version: result.as_dict() for version, result in results.items()}

        # The three lists share their items: each item's dict is built once and the
        # same object is listed again (the answer is only encoded, never changed).
        all_items, pending, applied = [], [], []
        for item in self.items:
            data = item.as_dict()
            all_items.append(data)
            if item.status in RUNNABLE_STATES:
                if item.version in findings:
                    data["lint"] = findings[item.version]
                pending.append(data)
            elif item.status in APPLIED_STATES:
                applied.append(data)

        return {
            "database": self.target.name,
            "all_migrations": all_items,
            "pending_migrations": pending,
            "applied_migrations": applied,
            "total": len(self.items),
            "pending_count": len(pending),
            "applied_count": len(applied),
            "lock_holder": self.lock_holder.as_dict() if self.lock_holder else None,
            "plan_hash": self.plan_hash,
            "problems": [problem.as_dict() for problem in self.problems],
        }


def build_status(
    target: Target,
    files: list[MigrationFile],
    rows: dict[str, TrackingRow],
    problems: tuple[SetProblem, ...] | list[SetProblem] = (),
) -> TargetStatus:
    completed_versions = [v for v, row in rows.items() if row.status == COMPLETED]
    highest_applied = max(map(version_key, completed_versions), default=None)
    items: list[MigrationItem] = []
    seen: set[str] = set()
    for migration in files:
        row = rows.get(migration.version)
        seen.add(migration.version)
        if row is None:
            late = highest_applied is not None and migration.sort_key < highest_applied
            state = OUT_OF_ORDER if late else PENDING
        elif row.status == FAILED:
            state = FAILED
        elif row.checksum != migration.checksum:
            state = DRIFTED
        else:
            state = COMPLETED
        items.append(MigrationItem(migration.version, migration.name, state, migration, row))
    for version, row in rows.items():
        if version not in seen:
            items.append(MigrationItem(version, row.name, MISSING, None, row))
    items.sort(key=lambda item: version_key(item.version))
    status = TargetStatus(target=target, items=items, problems=list(problems))
    status.plan_hash = plan_hash(items, problems)
    return status


def plan_hash(
    items: list[MigrationItem], problems: tuple[SetProblem, ...] | list[SetProblem] = ()
) -> str:
    """Binds a confirmation to exactly this plan: every file, every applied row and
    every problem of the set (none: the same hash the runner computes)."""
    digest = hashlib.sha256()
    for item in items:
        row = item.row
        digest.update(
            f"{item.version}\0{item.status}\0{item.file_checksum}\0"
            f"{row.checksum if row else ''}\0{row.status if row else ''}\n".encode()
        )
    for problem in sorted(problems, key=lambda problem: (problem.file, problem.message)):
        digest.update(f"!{problem.file}\0{problem.message}\n".encode())
    return digest.hexdigest()[:32]


def target_status(target: Target, *, with_lock_holder: bool = True) -> TargetStatus:
    """The state of every migration of ``target``, and the problems of its file set
    (a bad set is shown as far as it can be read, never refused).

    Read on this thread's reusable read-only session (``target_read``), with one
    query per call when nothing changed: the tracking table's fingerprint and the
    lock holder. The built status is cached per target under the files'
    generation (discovery) and that fingerprint, so a polled page or API pays
    neither the full read nor the build again until a file or a row changes.
    """
    snapshot = _snapshot(target)
    return replace(
        snapshot.status,
        items=list(snapshot.status.items),
        problems=list(snapshot.status.problems),
        lock_holder=snapshot.holder if with_lock_holder else None,
    )


class StatusAnswer:
    """The encoded status answer, its ``ETag`` (a strong validator: the SHA-256 of
    the body) and its gzip form, compressed on first demand, once per answer."""

    def __init__(self, body: bytes):
        self.body = body
        self.etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        self._gzipped: bytes | None = None

    def gzipped(self) -> bytes:
        if self._gzipped is None:
            import gzip

            # mtime=0: the same body always compresses to the same bytes.
            self._gzipped = gzip.compress(self.body, compresslevel=6, mtime=0)
        return self._gzipped


def target_status_json(target: Target, *, lint: bool = False) -> bytes:
    """``target_status(target).as_dict(lint=lint)`` encoded as the API sends it
    (Django's JSON encoder, ``default=str``), cached per target with the status
    and the lock holder it was built from; an answer whose lint could not run
    (squawk missing or failing) is never cached."""
    return target_status_answer(target, lint=lint).body


def target_status_answer(target: Target, *, lint: bool = False) -> StatusAnswer:
    """``target_status_json`` with its ETag and gzip form (see ``StatusAnswer``)."""
    from django.core.serializers.json import DjangoJSONEncoder

    snapshot = _snapshot(target)
    key = (snapshot.key, snapshot.holder, lint)
    slot = (target.name, "json")
    cached = _cache.get(slot)
    if cached is not None and cached[0] == key:
        return cached[1]
    data = replace(snapshot.status, lock_holder=snapshot.holder).as_dict(lint=lint)
    answer = StatusAnswer(json.dumps(data, cls=DjangoJSONEncoder, default=str).encode())
    if not any(item.get("lint", {}).get("unavailable") for item in data["pending_migrations"]):
        _cache[slot] = (key, answer)
    return answer


@dataclass(frozen=True)
class _Snapshot:
    key: tuple  # (target, files generation, rows fingerprint)
    status: TargetStatus  # shared: callers get copies
    holder: LockHolder | None


# Latest entry per (target name, kind): ((key...), value). Bounded by the number of targets.
_cache: dict[tuple[str, str], tuple[tuple, object]] = {}

_NO_TABLE = (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName)


@functools.lru_cache(maxsize=64)
def _fingerprint_query(schema: str) -> sql.Composed:
    """Row count and a 64-bit hash sum over the identity of every visible row version
    (xmin, ctid), and the lock holder (or NULLs), in one round trip.

    Any insert, update or delete leaves a row version with a new (xmin, ctid), or
    one fewer: the sum changes (a rewrite such as VACUUM FULL or freezing changes it
    too, which costs one rebuild, never a stale answer). Cheaper for the server than
    hashing every row's text: 0.2 ms instead of 1.3 ms per request at 900 rows."""
    return sql.SQL(
        "SELECT f.n, f.h, h.* FROM (SELECT count(*),"
        " sum(hashtextextended(xmin::text || ctid::text, 0))::text FROM {table}) AS f(n, h)"
        " LEFT JOIN LATERAL ({holder}) AS h ON true"
    ).format(table=table_identifier(schema), holder=sql.SQL(_HOLDER_QUERY.strip()))


_HOLDER_ONLY = sql.SQL(
    "SELECT NULL::bigint, NULL::text, h.* FROM (SELECT 1) AS one"
    " LEFT JOIN LATERAL ({holder}) AS h ON true"
).format(holder=sql.SQL(_HOLDER_QUERY.strip()))


def _snapshot(target: Target) -> _Snapshot:
    found = discover_set(target.path)  # its generation covers the files and the problems

    def read(session: SharedReadConnection) -> _Snapshot:
        conn = session.conn
        if "database" not in session.facts:
            session.facts["database"] = conn.execute("SELECT current_database()").fetchone()[0]
        unsigned = lock_key(session.facts["database"], target.schema) & 0xFFFFFFFFFFFFFFFF
        params = {"classid": unsigned >> 32, "objid": unsigned & 0xFFFFFFFF}
        try:
            row = conn.execute(_fingerprint_query(target.schema), params).fetchone()
        except _NO_TABLE:
            row = conn.execute(_HOLDER_ONLY, params).fetchone()
        holder = LockHolder(*row[2:]) if row[2] is not None else None
        key = (target, found.generation, row[0], row[1])
        slot = (target.name, "status")
        cached = _cache.get(slot)
        if cached is not None and cached[0] == key:
            return _Snapshot(key, cached[1], holder)
        # Read after the fingerprint: rows changing in between are cached under the
        # older fingerprint, which the next call no longer matches (so: rebuilt).
        rows = tracking_rows(conn, target.schema)
        status = build_status(target, list(found.files), rows, found.problems)
        _cache[slot] = (key, status)
        return _Snapshot(key, status, holder)

    return target_read(target, read)
