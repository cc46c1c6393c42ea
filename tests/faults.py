"""Helpers for fault-injection tests: runners as real processes, and ways to hurt them."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent


def start_runner(env: dict, *args: str) -> subprocess.Popen:
    """``manage.py migrate_sql run --yes`` as a separate process (killable)."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "migrate_sql", "run", "--yes", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def runner_pids(dsn: str) -> list[int]:
    """Backends of migration runners (not status readers) on the target's database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'migration-console%%'"
            " AND application_name NOT LIKE 'migration-console status%%'"
            " AND application_name NOT LIKE 'migration-console check%%'"
            " AND application_name NOT LIKE 'migration-console blockers%%'"
            " ORDER BY backend_start"
        ).fetchall()
    return [row[0] for row in rows]


def wait_for_query(dsn: str, fragment: str, timeout: float = 60) -> int:
    """Wait until a runner backend is executing a query that contains ``fragment``;
    return its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'active' AND application_name LIKE 'migration-console%%'"
                " AND position(%s in query) > 0 LIMIT 1",
                [fragment],
            ).fetchone()
        if row:
            return row[0]
        time.sleep(0.05)
    raise AssertionError(f"no runner ran a query with {fragment!r} within {timeout}s")


def wait_for_lock_waiter(dsn: str, count: int = 2, timeout: float = 60) -> None:
    """Wait until ``count`` runner sessions exist (the second polls for the lock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(runner_pids(dsn)) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} runner sessions within {timeout}s")


def terminate_backend(dsn: str, pid: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", [pid])


def kill_runner(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def wait_sessions_gone(dsn: str, timeout: float = 30) -> None:
    """A killed runner's backends notice the closed socket within
    client_connection_check_interval; wait for that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not runner_pids(dsn):
            return
        time.sleep(0.1)
    raise AssertionError("runner sessions still alive")
