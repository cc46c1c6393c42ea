"""Send a migration or down file to a target: in one transaction with its tracking
change (one query string, one round trip), or statement by statement outside one.

Failures come back as one of three exceptions the runner tells apart: the file's
own error (``ScriptFailed``, with its line), the session lost under it
(``SessionLost``: the server rolled its transaction back and the lock went with
it), or the tracking row recorded meanwhile by another runner (``RecordedMeanwhile``).
"""

import bisect

from migration_console.core.services.discovery import MigrationFile
from migration_console.core.services.sqlsplit import statement_spans
from migration_console.core.services.tracking import is_duplicate_record


def _error_text(
    exc: Exception, migration: MigrationFile, offset: int, statement_start: int | None = None
) -> str:
    """The database's message with the file's line: ``offset`` is where the file's
    text starts in the query string sent (negative: the query is a statement that
    starts ``-offset`` characters into the file)."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag else None
    if not primary:
        return str(exc).strip() or exc.__class__.__name__
    text = primary
    position = getattr(diag, "statement_position", None)
    if position and int(position) > offset:
        line = migration.sql.count("\n", 0, int(position) - 1 - offset) + 1
        text += f" (line {line} of {migration.filename})"
    elif statement_start is not None:
        rest = migration.sql[statement_start:]
        first = statement_start + len(rest) - len(rest.lstrip())
        line = migration.sql.count("\n", 0, first) + 1
        text += f" (statement starting on line {line} of {migration.filename})"
    for label, value in (("DETAIL", diag.message_detail), ("HINT", diag.message_hint)):
        if value:
            text += f"\n{label}: {value}"
    return text


_prefixes: dict[tuple[str, str | None, bool], str] = {}

# In a batch every file starts its own clock: the server's statement_timestamp() is
# the same for all statements of one query string. See tracking.completed_row_sql.
_FILE_STARTED = (
    "SELECT set_config('migration_console.file_started',"
    " extract(epoch FROM clock_timestamp())::text, true);"
)


def _transaction_prefix(conn, script: MigrationFile, *, in_batch: bool = False) -> str:
    """``BEGIN; SET LOCAL lock_timeout = '1s';`` (and the file's statement_timeout),
    composed once per pair of values."""
    effective = script.settings
    key = (effective.lock_timeout, effective.statement_timeout, in_batch)
    prefix = _prefixes.get(key)
    if prefix is None:
        from psycopg import sql

        parts = [sql.SQL("BEGIN; SET LOCAL lock_timeout = {};").format(sql.Literal(key[0]))]
        if key[1] is not None:
            parts.append(sql.SQL(" SET LOCAL statement_timeout = {};").format(sql.Literal(key[1])))
        if in_batch:
            parts.append(sql.SQL(" " + _FILE_STARTED))
        prefix = _prefixes[key] = sql.Composed([*parts, sql.SQL("\n")]).as_string(conn)
    return prefix


class ScriptFailed(Exception):
    """A migration or down file failed; the message is the database's, with its line."""


class SessionLost(Exception):
    """The runner's session ended under it (terminated, timed out, target restarted):
    its open transaction was rolled back by the server and its lock is gone."""


class RecordedMeanwhile(Exception):
    """The version was recorded by another runner while this one applied it; this
    runner's transaction was rolled back."""


def session_gone(conn) -> bool:
    return conn.closed or conn.broken


def cause_of(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{text} (SQLSTATE {sqlstate})" if sqlstate else text


def execute_in_transaction(conn, script: MigrationFile, trailer: str) -> None:
    """Run ``script`` and the ``trailer`` SQL (its tracking change) as one transaction,
    sent as one query string: one round trip, applied entirely or not at all."""
    prefix = _transaction_prefix(conn, script)
    try:
        conn.execute(_transaction_text(prefix, script, trailer).encode())
    except Exception as exc:
        _roll_back(conn, exc)
        raise failure_of(exc, script, len(prefix)) from exc


def _transaction_text(prefix: str, script: MigrationFile, trailer: str) -> str:
    # The newline ends a trailing "--" comment in the file before our statements.
    return f"{prefix}{script.sql}\n;\n{trailer};\nCOMMIT;"


def _roll_back(conn, exc: Exception) -> None:
    """After a failed transaction string: end the aborted transaction, or raise
    SessionLost when the session went with it."""
    if session_gone(conn):
        raise SessionLost(cause_of(exc)) from exc
    try:
        conn.execute("ROLLBACK")
    except Exception:
        if session_gone(conn):
            raise SessionLost(cause_of(exc)) from exc
        raise


def failure_of(exc: Exception, script: MigrationFile, offset: int) -> Exception:
    """What ``script``'s rolled-back transaction failed with; ``offset`` is where its
    text starts in the query string sent. Its cause is ``exc``, as if raised from it."""
    failure = (
        RecordedMeanwhile(str(exc))
        if is_duplicate_record(exc)
        else ScriptFailed(_error_text(exc, script, offset))
    )
    failure.__cause__ = exc
    return failure


class BatchStopped(Exception):
    """A batch stopped at one of its files (which one, the tracking table tells):
    ``cause`` is the database's error (the transaction rolled back) or SessionLost."""

    def __init__(self, cause: Exception, offsets: list[int]):
        super().__init__(str(cause))
        self.cause = cause
        self.offsets = offsets  # where each file's text starts in the query string

    def file_at_error(self) -> int | None:
        """The index of the file whose text the error's position points into, if
        the error has one."""
        diag = getattr(self.cause, "diag", None)
        position = getattr(diag, "statement_position", None) if diag else None
        if not position:
            return None
        return max(bisect.bisect_right(self.offsets, int(position) - 1) - 1, 0)


def execute_batch(conn, scripts: list[MigrationFile], trailers: list[str]) -> None:
    """Run several files, each with its trailer as its own transaction, in one query
    string: PostgreSQL commits each at its COMMIT and skips the rest of the string at
    the first error, so the files before a failure stay applied and recorded, the
    failing one is rolled back whole, and the ones after it are not started."""
    parts, offsets, length = [], [], 0
    for script, trailer in zip(scripts, trailers, strict=True):
        prefix = _transaction_prefix(conn, script, in_batch=True)
        text = _transaction_text(prefix, script, trailer) + "\n"
        offsets.append(length + len(prefix))
        parts.append(text)
        length += len(text)
    try:
        conn.execute("".join(parts).encode())
    except Exception as exc:
        try:
            _roll_back(conn, exc)
        except SessionLost as lost:
            raise BatchStopped(lost, offsets) from exc
        raise BatchStopped(exc, offsets) from exc


def execute_statements(conn, script: MigrationFile) -> None:
    """Run a no-transaction file statement by statement in autocommit (PostgreSQL runs
    a multi-statement string as one implicit transaction, which CONCURRENTLY refuses)."""
    from psycopg import sql

    effective = script.settings
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(effective.lock_timeout)))
    if effective.statement_timeout is not None:
        timeout = sql.Literal(effective.statement_timeout)
        conn.execute(sql.SQL("SET statement_timeout = {}").format(timeout))
    try:
        for start, end in statement_spans(script.sql):
            try:
                conn.execute(script.sql[start:end].encode())
            except Exception as exc:
                if session_gone(conn):
                    raise SessionLost(cause_of(exc)) from exc
                raise ScriptFailed(_error_text(exc, script, -start, statement_start=start)) from exc
    finally:
        # The session runs further files (and its tracking writes) after this one.
        if effective.statement_timeout is not None and not session_gone(conn):
            conn.execute("RESET statement_timeout")
