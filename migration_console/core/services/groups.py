"""Groups of targets (fleets): resolving members, and the status of a whole group.

A schema group's members are found by its ``schemas:`` query when asked (a run
binds the list it found into its plan hash); each is an ordinary Target named
``<group>/<schema>`` with its own tracking table and advisory lock. The status of a
group is read over one connection per database, whatever the number of members.
"""

import re
from dataclasses import dataclass, field

from django.conf import settings
from psycopg import sql

from migration_console.core.services.discovery import discover_set
from migration_console.core.services.errors import (
    EXIT_BAD_INPUT,
    MigrationConsoleError,
    UnknownTarget,
)
from migration_console.core.services.status import COMPLETED, DRIFTED, FAILED, MISSING, build_status
from migration_console.core.services.targets import (
    MEMBER_SEPARATOR,
    Target,
    target_connect,
    target_get,
)
from migration_console.core.services.tracking import TABLE, TrackingRow
from migration_console.target_groups import GroupConfig

_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
ROWS_PER_QUERY = 200  # members' tracking tables read per UNION ALL


class UnknownGroup(MigrationConsoleError):
    exit_code = EXIT_BAD_INPUT
    http_status = 404
    error = "unknown group"


class GroupQueryFailed(MigrationConsoleError):
    """The group's ``schemas:`` query could not be run or returned something unusable."""

    exit_code = 1
    http_status = 500
    error = "group query failed"


def group_names() -> list[str]:
    return list(getattr(settings, "MIGRATION_GROUPS", {}))


def group_get(name: str) -> GroupConfig:
    group = getattr(settings, "MIGRATION_GROUPS", {}).get(name)
    if group is None:
        raise UnknownGroup(f"unknown group {name!r}")
    return group


def _member(group: GroupConfig, schema: str, path: str | None = None) -> Target:
    return Target(
        name=f"{group.name}{MEMBER_SEPARATOR}{schema}",
        dsn=group.dsn,
        schema=schema,
        path=path or group.path,
        search_path=f"{schema},public",
        group=group.name,
    )


def member_target(name: str, *, path: str | None = None) -> Target:
    """The Target of member ``<group>/<schema>`` of a schema group."""
    group_name, _, schema = name.partition(MEMBER_SEPARATOR)
    group = getattr(settings, "MIGRATION_GROUPS", {}).get(group_name)
    if group is None or not group.schemas_query or not _SCHEMA.match(schema):
        raise UnknownTarget(f"unknown database {name!r}")
    return _member(group, schema, path)


def _group_session_target(group: GroupConfig) -> Target:
    return Target(name=group.name, dsn=group.dsn, schema="public", path=group.path)


def group_members(group: GroupConfig) -> list[Target]:
    """The members as they are now: the query's schemas, or the listed targets."""
    if not group.schemas_query:
        return [target_get(name) for name in group.targets]
    with target_connect(
        _group_session_target(group), application_name="migration-console group", read_only=True
    ) as conn:
        try:
            rows = conn.execute(group.schemas_query).fetchall()
        except Exception as exc:
            raise GroupQueryFailed(
                f"group {group.name}: its schemas query failed: {' '.join(str(exc).split())}"
            ) from None
    schemas = []
    for row in rows:
        schema = str(row[0]) if row else ""
        if not _SCHEMA.match(schema):
            raise GroupQueryFailed(
                f"group {group.name}: the schemas query returned {schema!r}, "
                "which is not a plain schema name"
            )
        schemas.append(schema)
    return [_member(group, schema) for schema in dict.fromkeys(schemas)]


@dataclass
class MemberSummary:
    database: str
    counts: dict[str, int]
    problems: list[dict] = field(default_factory=list)
    error: str = ""  # the member could not be read

    def as_dict(self) -> dict:
        return {
            "database": self.database,
            "pending_count": self.counts.get("pending", 0) + self.counts.get("out_of_order", 0),
            "applied_count": self.counts.get(COMPLETED, 0),
            "failed_count": self.counts.get(FAILED, 0),
            "drifted_count": self.counts.get(DRIFTED, 0) + self.counts.get(MISSING, 0),
            "problems": self.problems
            + ([{"file": "", "message": self.error}] if self.error else []),
        }


def _read_rows(conn, schemas: list[str]) -> dict[str, dict[str, TrackingRow]]:
    """Every member schema's tracking rows, in a few queries."""
    found = {schema: {} for schema in schemas}
    existing = [
        row[0]
        for row in conn.execute(
            "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relname = %s AND c.relkind IN ('r', 'p') AND n.nspname = ANY(%s)",
            [TABLE, schemas],
        )
    ]
    columns = sql.SQL("version, name, checksum, status, applied_at, duration_ns, applied_by, error")
    for start in range(0, len(existing), ROWS_PER_QUERY):
        chunk = existing[start : start + ROWS_PER_QUERY]
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}, {} FROM {}.{}").format(
                sql.Literal(schema), columns, sql.Identifier(schema), sql.Identifier(TABLE)
            )
            for schema in chunk
        )
        for row in conn.execute(query):
            found[row[0]][row[1]] = TrackingRow(*row[1:])
    return found


def group_status(group: GroupConfig) -> list[MemberSummary]:
    """One summary per member; a member that cannot be read says why."""
    members = group_members(group)
    if not group.schemas_query:
        from migration_console.core.services.status import target_status

        summaries = []
        for member in members:
            try:
                status = target_status(member, with_lock_holder=False)
            except MigrationConsoleError as exc:
                summaries.append(MemberSummary(member.name, {}, error=exc.message))
                continue
            summaries.append(
                MemberSummary(member.name, status.counts(), [p.as_dict() for p in status.problems])
            )
        return summaries
    found = discover_set(group.path)
    problems = [p.as_dict() for p in found.problems]
    with target_connect(
        _group_session_target(group), application_name="migration-console status", read_only=True
    ) as conn:
        rows = _read_rows(conn, [member.schema for member in members])
    return [
        MemberSummary(
            member.name,
            build_status(member, list(found.files), rows[member.schema], found.problems).counts(),
            problems,
        )
        for member in members
    ]
