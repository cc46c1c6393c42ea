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


def tracking_completed_among(conn, schema: str, versions: list[str]) -> dict[str, int]:
    """Which of ``versions`` are recorded ``completed``, with their durations."""
    cursor = conn.execute(
        sql.SQL(
            "SELECT version, duration_ns FROM {} WHERE version = ANY(%s) AND status = 'completed'"
        ).format(table_identifier(schema)),
        [versions],
    )
    return dict(cursor.fetchall())


# Measured by the server from the receipt of the query string that carries both
# the migration and this insert, so it costs no extra round trip.
_SERVER_DURATION_TEXT = (
    "(extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000000000)::bigint"
)
_SERVER_DURATION = sql.SQL(_SERVER_DURATION_TEXT)
# In a batch (several files in one query string) each file's transaction first sets
# migration_console.file_started (execute._FILE_STARTED).
_BATCH_DURATION_TEXT = (
    "((extract(epoch FROM clock_timestamp())"
    " - current_setting('migration_console.file_started')::numeric) * 1000000000)::bigint"
)


@functools.lru_cache(maxsize=64)  # immutable, and composed once per file otherwise
def insert_statement(
    schema: str, *, server_duration: bool = False, in_batch: bool = False
) -> sql.Composed:
    if server_duration:
        duration = sql.SQL(_BATCH_DURATION_TEXT if in_batch else _SERVER_DURATION_TEXT)
    else:
        duration = sql.SQL("%(duration_ns)s")
    return sql.SQL(
        "INSERT INTO {table}"
        " (version, name, checksum, status, applied_at, duration_ns, applied_by, error)"
        " VALUES (%(version)s, %(name)s, %(checksum)s, %(status)s, clock_timestamp(),"
        " {duration_ns}, %(applied_by)s, %(error)s)"
    ).format(table=table_identifier(schema), duration_ns=duration)


@functools.lru_cache(maxsize=64)
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
    conn,
    schema: str,
    *,
    version: str,
    name: str,
    checksum: str,
    applied_by: str,
    replaces_failure: bool,
    in_batch: bool = False,
) -> str:
    """The tracking insert as literal SQL, to travel in the same query string
    (and so the same transaction and round trip) as the migration itself.
    ``in_batch``: the file travels with others (execute.execute_batch), so its
    duration is measured from its own start rather than the query string's.

    A plain INSERT, never an upsert: if another runner recorded the version
    meanwhile, the primary key refuses it and the whole file rolls back, instead
    of this runner overwriting that row after applying the file a second time.
    ``replaces_failure``: a ``failed`` row of an earlier attempt goes first (only
    a failed one: a completed row still makes the INSERT fail).
    """
    fast = _completed_row_fast(
        conn,
        schema,
        (version, name, checksum, applied_by),
        replaces_failure=replaces_failure,
        in_batch=in_batch,
    )
    if fast is not None:
        return fast
    from psycopg import ClientCursor

    params = {
        "version": version,
        "name": name,
        "checksum": checksum,
        "status": "completed",
        "applied_by": applied_by,
        "error": None,
    }
    cursor = ClientCursor(conn)
    insert = cursor.mogrify(
        insert_statement(schema, server_duration=True, in_batch=in_batch), params
    )
    if not replaces_failure:
        return insert
    delete = cursor.mogrify(_DELETE_FAILED.format(table_identifier(schema)), params)
    return f"{delete};\n{insert}"


_DELETE_FAILED = sql.SQL("DELETE FROM {} WHERE version = %(version)s AND status = 'failed'")


def _plain_literal(value: str) -> str | None:
    """``'value'`` with quotes doubled: what psycopg's literal is for a string without
    a backslash or NUL (read the same under either ``standard_conforming_strings``)."""
    if "\\" in value or "\x00" in value:
        return None
    return "'" + value.replace("'", "''") + "'"


_table_text: dict[tuple[str, str], str] = {}


def _completed_row_fast(
    conn, schema: str, values: tuple[str, ...], *, replaces_failure: bool, in_batch: bool
) -> str | None:
    """``completed_row_sql`` without a cursor and a mogrify per file (a run of 1,000
    quick files pays it 1,000 times): the same text, byte for byte, for values that
    need no escaping beyond doubled quotes; None for anything else."""
    literals = [_plain_literal(value) for value in values]
    if None in literals:
        return None
    key = (schema, conn.info.encoding)
    table = _table_text.get(key)
    if table is None:
        table = _table_text[key] = table_identifier(schema).as_string(conn)
    version, name, checksum, applied_by = literals
    insert = (
        f"INSERT INTO {table}"
        " (version, name, checksum, status, applied_at, duration_ns, applied_by, error)"
        f" VALUES ({version}, {name}, {checksum}, 'completed', clock_timestamp(),"
        f" {_BATCH_DURATION_TEXT if in_batch else _SERVER_DURATION_TEXT}, {applied_by}, NULL)"
    )
    if not replaces_failure:
        return insert
    return f"DELETE FROM {table} WHERE version = {version} AND status = 'failed';\n{insert}"


def is_duplicate_record(exc: Exception) -> bool:
    """The error of a tracking INSERT refused because the version is recorded already."""
    diag = getattr(exc, "diag", None)
    return (
        getattr(exc, "sqlstate", None) == "23505" and diag is not None and diag.table_name == TABLE
    )


def tracking_record_failure(
    conn,
    schema: str,
    *,
    version: str,
    name: str,
    checksum: str,
    duration_ns: int,
    applied_by: str,
    error: str,
) -> bool:
    """Record a failed attempt in its own transaction; a ``completed`` row (another
    runner's) is never overwritten. Returns whether a row was written."""
    with conn.transaction():
        cursor = conn.execute(
            _FAILURE_UPSERT.format(table=table_identifier(schema)),
            {
                "version": version,
                "name": name,
                "checksum": checksum,
                "status": "failed",
                "duration_ns": duration_ns,
                "applied_by": applied_by,
                "error": error,
            },
        )
        return cursor.rowcount == 1


_FAILURE_UPSERT = sql.SQL(
    "INSERT INTO {table}"
    " (version, name, checksum, status, applied_at, duration_ns, applied_by, error)"
    " VALUES (%(version)s, %(name)s, %(checksum)s, %(status)s, clock_timestamp(),"
    " %(duration_ns)s, %(applied_by)s, %(error)s)"
    " ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name,"
    " checksum = EXCLUDED.checksum, status = EXCLUDED.status,"
    " applied_at = EXCLUDED.applied_at, duration_ns = EXCLUDED.duration_ns,"
    " applied_by = EXCLUDED.applied_by, error = EXCLUDED.error"
    " WHERE {table}.status = 'failed'"
)


def interrupted_message(applied_by: str) -> str:
    return (
        f"interrupted: {applied_by} started this file outside a transaction and did not "
        "finish it (runner killed, connection lost or target restarted); the database may "
        "be half-changed (e.g. an INVALID index from CREATE INDEX CONCURRENTLY): check it "
        "by hand, then resolve it with `migrate_sql repair <version>`"
    )


def tracking_record_started(
    conn, schema: str, *, version: str, name: str, checksum: str, applied_by: str
) -> None:
    """Record a no-transaction file as ``failed``/interrupted before its first
    statement, so a runner that dies inside it leaves a row that blocks the next
    run until ``repair`` instead of the file being run again from the start.
    Raises the unique violation (``is_duplicate_record``) when another runner
    recorded the version meanwhile."""
    table = table_identifier(schema)
    params = {
        "version": version,
        "name": name,
        "checksum": checksum,
        "status": "failed",
        "duration_ns": 0,
        "applied_by": applied_by,
        "error": interrupted_message(applied_by),
    }
    with conn.transaction():
        conn.execute(_DELETE_FAILED.format(table), params)
        conn.execute(insert_statement(schema), params)


def tracking_record_finished(
    conn, schema: str, *, version: str, duration_ns: int, error: str | None
) -> None:
    """Close the row ``tracking_record_started`` wrote: ``completed``, or still
    ``failed`` with the database's message instead of "interrupted"."""
    status = "failed" if error else "completed"
    with conn.transaction():
        cursor = conn.execute(
            sql.SQL(
                "UPDATE {} SET status = %s, error = %s, duration_ns = %s,"
                " applied_at = clock_timestamp() WHERE version = %s AND status = 'failed'"
            ).format(table_identifier(schema)),
            [status, error, duration_ns, version],
        )
        if cursor.rowcount != 1:
            raise RuntimeError(f"the tracking row of {version} changed while it ran")


def tracking_delete(conn, schema: str, version: str) -> None:
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE version = %s").format(table_identifier(schema)), [version]
    )
