"""Selectors: the state of every migration of a target, read-only."""

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from migration_console.core.services.discovery import MigrationFile, discover, version_key
from migration_console.core.services.locking import LockHolder, lock_holder
from migration_console.core.services.targets import Target, target_connect
from migration_console.core.services.tracking import TrackingRow, tracking_rows

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

    def with_state(self, *states: str) -> list[MigrationItem]:
        return [item for item in self.items if item.status in states]

    @property
    def pending(self) -> list[MigrationItem]:
        """What ``run`` would execute, in order (failed transactional files are retried)."""
        return self.with_state(*RUNNABLE_STATES)

    @property
    def applied(self) -> list[MigrationItem]:
        return self.with_state(*APPLIED_STATES)

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

            results = lint_files([item.file for item in self.pending])
            findings = {version: result.as_dict() for version, result in results.items()}

        def item_dict(item: MigrationItem) -> dict:
            data = item.as_dict()
            if item.version in findings and item.status in RUNNABLE_STATES:
                data["lint"] = findings[item.version]
            return data

        return {
            "database": self.target.name,
            "all_migrations": [item_dict(item) for item in self.items],
            "pending_migrations": [item_dict(item) for item in self.pending],
            "applied_migrations": [item.as_dict() for item in self.applied],
            "total": len(self.items),
            "pending_count": len(self.pending),
            "applied_count": len(self.applied),
            "lock_holder": self.lock_holder.as_dict() if self.lock_holder else None,
            "plan_hash": self.plan_hash,
        }


def build_status(
    target: Target, files: list[MigrationFile], rows: dict[str, TrackingRow]
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
    status = TargetStatus(target=target, items=items)
    status.plan_hash = plan_hash(items)
    return status


def plan_hash(items: list[MigrationItem]) -> str:
    """Binds a confirmation to exactly this plan: every file and every applied row."""
    digest = hashlib.sha256()
    for item in items:
        row = item.row
        digest.update(
            f"{item.version}\0{item.status}\0{item.file_checksum}\0"
            f"{row.checksum if row else ''}\0{row.status if row else ''}\n".encode()
        )
    return digest.hexdigest()[:32]


def target_status(target: Target, *, with_lock_holder: bool = True) -> TargetStatus:
    files = discover(target.path)
    with target_connect(target, application_name="migration-console status") as conn:
        status = build_status(target, files, tracking_rows(conn, target.schema))
        if with_lock_holder:
            status.lock_holder = lock_holder(conn, target.schema)
    return status
