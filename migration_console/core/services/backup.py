"""``pg_dump --format=custom`` of a target before the first change of a run.

The password never reaches the command line (``ps`` shows it) or a log: it
travels in ``PGPASSWORD``; the rest of the connection goes as separate
options. Restore with ``pg_restore --dbname=<fresh database> <file>``.
"""

import contextlib
import glob
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime

from django.conf import settings

from migration_console.core.services.errors import EXIT_BAD_INPUT, MigrationConsoleError
from migration_console.core.services.targets import Target

_CONNECTION_OPTIONS = {
    "host": "--host",
    "port": "--port",
    "user": "--username",
    "dbname": "--dbname",
}
# libpq settings pg_dump reads from the environment (everything else in a dsn).
_ENVIRONMENT = {
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "service": "PGSERVICE",
}


class BackupFailed(MigrationConsoleError):
    """The backup before a run failed; the run was refused before any change."""

    exit_code = EXIT_BAD_INPUT
    http_status = 500
    error = "backup failed"


def pg_dump_binary() -> str:
    """``PG_DUMP`` (setting or environment), else the newest server's own, else PATH."""
    configured = getattr(settings, "PG_DUMP", None) or os.environ.get("PG_DUMP")
    if configured:
        return configured
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_dump"),
        key=lambda path: int(path.split("/")[4]) if path.split("/")[4].isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    found = shutil.which("pg_dump")
    if not found:
        raise BackupFailed("pg_dump not found (set PG_DUMP to its path)")
    return found


def backup_filename(target: Target, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{target.name}-{now:%Y%m%dT%H%M%S}Z.dump"


def _reserve(directory: str, filename: str) -> str:
    """Create the (empty, owner-only) file, so a dump is never world-readable and
    two runs in the same second never write into one file."""
    base, ext = os.path.splitext(filename)
    for attempt in range(100):
        name = filename if attempt == 0 else f"{base}-{attempt}{ext}"
        path = os.path.join(directory, name)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            continue
        return path
    raise BackupFailed(f"cannot find a free file name for {filename} in {directory}")


def lock_wait_ms() -> int:
    """pg_dump's bound on waiting for each table's ACCESS SHARE lock: the run's own
    patience for the advisory lock, ``MIGRATION_LOCK_WAIT``. Without it a dump queued
    behind a long ALTER or an idle-in-transaction LOCK waits for ever, while the run
    holds the advisory lock and everyone else waits behind it."""
    return max(1, round(float(settings.MIGRATION_LOCK_WAIT) * 1000))


def pg_dump_command(target: Target, path: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment for pg_dump: the password only in the environment."""
    from psycopg.conninfo import conninfo_to_dict

    command = [
        pg_dump_binary(),
        "--format=custom",
        "--no-password",
        f"--lock-wait-timeout={lock_wait_ms()}",
        f"--file={path}",
    ]
    env = dict(os.environ)
    env["PGAPPNAME"] = f"migration-console backup {target.name}"[:63]
    for key, value in conninfo_to_dict(target.dsn).items():
        if key in _CONNECTION_OPTIONS:
            command.append(f"{_CONNECTION_OPTIONS[key]}={value}")
        elif key in _ENVIRONMENT:
            env[_ENVIRONMENT[key]] = str(value)
    return command, env


def backup_create(target: Target, directory: str) -> str:
    """Dump the whole target database into ``directory``; return the file's path.

    Raises BackupFailed (nothing is left behind) when the directory cannot be
    created or written, or pg_dump fails.
    """
    directory = os.path.abspath(directory)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = _reserve(directory, backup_filename(target))
    except OSError as exc:
        raise BackupFailed(
            f"cannot write a backup into {directory}: {exc.strerror or exc}"
        ) from None

    try:
        command, env = pg_dump_command(target, path)
    except BackupFailed:
        _discard(path)
        raise
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        _discard(path)
        raise BackupFailed(f"cannot start pg_dump ({command[0]}): {exc.strerror}") from None
    if result.returncode != 0:
        _discard(path)
        raise BackupFailed(_failure_message(target, result))
    return path


_LOCKED_TABLE = re.compile(r"LOCK TABLE (\S+) IN")


def _failure_message(target: Target, result: subprocess.CompletedProcess) -> str:
    output = result.stderr.strip()
    table = _LOCKED_TABLE.search(output)
    # pg_dump bounds its LOCK TABLE with a statement timeout.
    if table and "timeout" in output:
        seconds = f"{lock_wait_ms() / 1000:g}"
        return (
            f"pg_dump of {target.name} gave up after waiting {seconds}s for a lock on "
            f"{table.group(1)}: another session holds a conflicting lock (pg_dump "
            "--lock-wait-timeout, set by MIGRATION_LOCK_WAIT); nothing was changed"
        )
    reason = (output or f"exit status {result.returncode}").splitlines()[-1]
    return f"pg_dump of {target.name} failed: {reason}"


def _discard(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)
