"""The tracking table ``<schema>.schema_migrations`` in a target database."""

import functools
from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

TABLE = "schema_migrations"


@dataclass(frozen=True)
class TrackingRow:
    version: str
    name: str
    checksum: str
    status: str
    applied_at: datetime
    duration_ns: int
    applied_by: str
    error: str | None


def table_identifier(schema: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(TABLE))


def tracking_ensure(conn, schema: str) -> None:
    """Create the schema and table when missing (call under the advisory lock).

    Existence is checked first because ``CREATE SCHEMA IF NOT EXISTS`` still
    demands CREATE on the database, which a least-privilege migration role lacks.
    """
    schema_exists, table_exists = conn.execute(
        "SELECT to_regnamespace(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
        [f'"{schema}"', f'"{schema}".{TABLE}'],
    ).fetchone()
    if table_exists:
        return
    if not schema_exists:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {table} ("
            " version text PRIMARY KEY,"
            " name text NOT NULL,"
            " checksum text NOT NULL,"
            " status text NOT NULL CHECK (status IN ('completed', 'failed')),"
            " applied_at timestamptz NOT NULL,"
            " duration_ns bigint NOT NULL,"
            " applied_by text NOT NULL,"
            " error text)"
        ).format(table=table_identifier(schema))
    )


def tracking_rows(conn, schema: str) -> dict[str, TrackingRow]:
    """All rows by version; an absent table reads as no rows (status never creates it)."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f'"{schema}".{TABLE}']).fetchone()[
        0
    ]
    if not exists:
        return {}
    cursor = conn.execute(
        sql.SQL(
            "SELECT version, name, checksum, status, applied_at, duration_ns, applied_by, error"
            " FROM {}"
        ).format(table_identifier(schema))
    )
    return {row[0]: TrackingRow(*row) for row in cursor}


# Measured by the server from the receipt of the query string that carries both
# the migration and this insert, so it costs no extra round trip.
_SERVER_DURATION = sql.SQL(
    "(extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000000000)::bigint"
)


@functools.lru_cache(maxsize=64)  # immutable, and composed once per file otherwise
def upsert_statement(schema: str, *, server_duration: bool = False) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {table}"
        " (version, name, checksum, status, applied_at, duration_ns, applied_by, error)"
        " VALUES (%(version)s, %(name)s, %(checksum)s, %(status)s, clock_timestamp(),"
        " {duration_ns}, %(applied_by)s, %(error)s)"
        " ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name,"
        " checksum = EXCLUDED.checksum, status = EXCLUDED.status,"
        " applied_at = EXCLUDED.applied_at, duration_ns = EXCLUDED.duration_ns,"
        " applied_by = EXCLUDED.applied_by, error = EXCLUDED.error"
    ).format(
        table=table_identifier(schema),
        duration_ns=_SERVER_DURATION if server_duration else sql.SQL("%(duration_ns)s"),
    )


def completed_row_sql(
    conn, schema: str, *, version: str, name: str, checksum: str, applied_by: str
) -> str:
    """The tracking insert as literal SQL, to travel in the same query string
    (and so the same transaction and round trip) as the migration itself."""
    from psycopg import ClientCursor

    params = {
        "version": version,
        "name": name,
        "checksum": checksum,
        "status": "completed",
        "applied_by": applied_by,
        "error": None,
    }
    return ClientCursor(conn).mogrify(upsert_statement(schema, server_duration=True), params)


def tracking_record(
    conn,
    schema: str,
    *,
    version: str,
    name: str,
    checksum: str,
    status: str,
    duration_ns: int,
    applied_by: str,
    error: str | None = None,
) -> None:
    """Insert or replace one row in its own transaction (failures, no-transaction files)."""
    with conn.transaction():
        conn.execute(
            upsert_statement(schema),
            {
                "version": version,
                "name": name,
                "checksum": checksum,
                "status": status,
                "duration_ns": duration_ns,
                "applied_by": applied_by,
                "error": error,
            },
        )


def tracking_delete(conn, schema: str, version: str) -> None:
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE version = %s").format(table_identifier(schema)), [version]
    )
