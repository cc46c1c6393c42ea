"""The target's tracking table is the truth: an outage of the console database during
a CLI run neither fails the run nor leaves false records.

The console database here is a second throw-away cluster, so it can be restarted
or stopped while ``migrate_sql run`` works on a target of the suite's cluster.
"""

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta

import psycopg
import pytest
from django.test import Client
from django.utils import timezone

from tests.conftest import ROOT, run_manage
from tests.test_console_support import make_user

SLOW_002 = "INSERT INTO effects VALUES ('002');\nSELECT pg_sleep(2);\n"


@pytest.fixture(scope="module")
def console_cluster(second_cluster):
    return second_cluster


@pytest.fixture
def outage_env(console_cluster, target):
    """A fresh, migrated console database on the second cluster, and the CLI's env."""
    if not console_cluster.running:
        console_cluster.pg_ctl("start")
    dbname = f"console_{uuid.uuid4().hex[:12]}"
    console_cluster.psql(f'CREATE DATABASE "{dbname}"')
    env = {
        **os.environ,
        "DATABASE_URL": console_cluster.url(dbname),
        "DB_DSN": target.dsn,
        "MIGRATIONS_PATH": str(target.path),
        "MIGRATION_LOCK_WAIT": "10",
    }
    env.pop("MIGRATION_TARGETS_FILE", None)
    migrated = run_manage(env, "migrate", "--no-input", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
    env["CONSOLE_TEST_DSN"] = console_cluster.dsn(dbname)
    return env


def console_rows(env: dict, sql: str) -> list[tuple]:
    with psycopg.connect(env["CONSOLE_TEST_DSN"], autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def write_files(target) -> None:
    target.write("001_effects.sql", "CREATE TABLE effects (v text);\n")
    target.write("002_slow.sql", SLOW_002)
    target.write("003_more.sql", "INSERT INTO effects VALUES ('003');\n")


class Runner:
    """``migrate_sql run --yes`` in a child process, its stderr readable while it runs."""

    def __init__(self, env: dict):
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "migrate_sql", "run", "--yes"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.err_lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.err_lines.append(line)

    @property
    def err(self) -> str:
        return "".join(self.err_lines)

    def running(self) -> bool:
        return self.process.poll() is None

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) once it ended."""
        code = self.process.wait(timeout)
        out = self.process.stdout.read()
        self._reader.join(10)
        return code, out, self.err


def start_run(env: dict, target) -> Runner:
    runner = Runner(env)
    deadline = time.monotonic() + 30
    while not target.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
        " AND state = 'active' AND query LIKE '%pg_sleep(2)%'"
    ):
        if not runner.running() or time.monotonic() > deadline:
            code, out, err = runner.finish()
            pytest.fail(f"002 never started (exit {code}):\n{out}\n{err}")
        time.sleep(0.05)
    return runner


def assert_target_right(target) -> None:
    assert target.query("SELECT v FROM effects ORDER BY v") == [("002",), ("003",)]
    assert {v: row[0] for v, row in target.tracking().items()} == {
        "001": "completed",
        "002": "completed",
        "003": "completed",
    }


def test_it_survives_a_console_database_restart_mid_run_and_records_the_run_once(
    outage_env, target, console_cluster
):
    write_files(target)
    runner = start_run(outage_env, target)

    console_cluster.pg_ctl("restart", "-m", "fast")
    assert runner.running(), "the run ended before the console database was back"
    code, out, err = runner.finish()

    assert code == 0, f"{out}\n{err}"
    assert "Traceback" not in err, err
    assert "console database unreachable while recording" in err, err  # the outage hit it
    assert_target_right(target)
    runs = console_rows(outage_env, "SELECT id, state, steps, message FROM core_run")
    assert len(runs) == 1
    run_id, state, steps, message = runs[0]
    assert state == "success", message
    assert [step["version"] for step in steps] == ["001", "002", "003"]
    events = console_rows(
        outage_env, f"SELECT outcome, migrations FROM core_auditevent WHERE run_id = {run_id}"
    )
    assert events == [("success", ["001", "002", "003"])]


def test_it_records_the_run_once_the_console_database_is_back_within_the_retry_window(
    outage_env, target, console_cluster
):
    write_files(target)
    runner = start_run(outage_env, target)

    console_cluster.pg_ctl("stop", "-m", "fast")
    deadline = time.monotonic() + 30
    while "console database unreachable while recording run" not in runner.err:
        assert runner.running() and time.monotonic() < deadline, runner.err
        time.sleep(0.1)
    while not target.scalar(  # no reaper takes the waiting run for a dead one
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
        ["migration-console run#% recording"],
    ):
        assert time.monotonic() < deadline, "the run's id left the target while it waits"
        time.sleep(0.05)
    console_cluster.pg_ctl("start")
    code, out, err = runner.finish()

    assert code == 0, f"{out}\n{err}"
    assert "Traceback" not in err, err
    assert '"outcome"' not in err  # no fallback audit line: the row was written
    assert_target_right(target)
    runs = console_rows(outage_env, "SELECT id, state FROM core_run")
    assert [state for _, state in runs] == ["success"]
    events = console_rows(
        outage_env, f"SELECT outcome, migrations FROM core_auditevent WHERE run_id = {runs[0][0]}"
    )
    assert events == [("success", ["001", "002", "003"])]


def test_it_writes_the_audit_line_to_stderr_when_the_console_database_stays_down(
    outage_env, target, console_cluster
):
    outage_env["MIGRATION_RECORD_RETRY_SECONDS"] = "3"
    write_files(target)
    runner = start_run(outage_env, target)

    console_cluster.pg_ctl("stop", "-m", "fast")
    started = time.monotonic()
    code, out, err = runner.finish()
    elapsed = time.monotonic() - started

    assert code == 0, f"{out}\n{err}"
    assert "Traceback" not in err, err
    assert elapsed < 20, f"gave up recording after {elapsed:.1f}s, not after ~3s"
    assert_target_right(target)
    lines = [line for line in err.splitlines() if line.startswith("{")]
    audit = next(json.loads(line) for line in lines if '"outcome"' in line)
    assert audit["outcome"] == "success"
    assert audit["migrations"] == ["001", "002", "003"]
    assert audit["action"] == "run" and audit["channel"] == "cli" and audit["target"] == "db_main"
    assert audit["who"] and isinstance(audit["run"], int)
    assert err.count("console database unreachable while recording progress") <= 1


@pytest.mark.django_db
def test_a_dead_runs_page_closes_it_with_what_the_tracking_table_says_it_applied(target):
    from migration_console.core.models import AuditEvent, Run
    from migration_console.core.services.targets import target_connect, target_get
    from migration_console.core.services.tracking import tracking_ensure

    started = timezone.now() - timedelta(seconds=60)
    with target_connect(target_get("db_main"), application_name="test") as conn:
        tracking_ensure(conn, "public")
        for version, status, applied_at, error in (
            ("000", "completed", started - timedelta(hours=1), None),  # before the run
            ("001", "completed", started + timedelta(seconds=1), None),
            ("002", "completed", started + timedelta(seconds=2), None),
            ("003", "failed", started + timedelta(seconds=3), "interrupted: killed mid-way"),
        ):
            conn.execute(
                "INSERT INTO schema_migrations VALUES (%s, %s, 'x', %s, %s, 1000, 'someone', %s)",
                [version, f"m{version}", status, applied_at, error],
            )
    run = Run.objects.create(
        target="db_main",
        channel="cli",
        requested_by="someone",
        state=Run.State.RUNNING,
        planned=["001", "002", "003", "004"],
        steps=[],
        current_version="002",
    )
    Run.objects.filter(pk=run.pk).update(created_at=started, started_at=started)
    client = Client()
    client.force_login(make_user("superuser", username="root"))

    data = client.get(f"/admin/console/runs/{run.pk}/progress.json").json()

    run.refresh_from_db()
    assert run.state == "error"
    assert "vanished" in run.message and "rolled back" not in run.message
    assert "applied 001, 002" in run.message
    assert "003" in run.message and "interrupted" in run.message
    assert "004 was not applied" in run.message
    assert "000" not in run.message
    assert data["state"] == "error"
    event = AuditEvent.objects.get(run=run)
    assert event.outcome == "error"
    assert event.migrations == ["001", "002", "003"]
    page = client.get(f"/admin/console/runs/{run.pk}/").content.decode()
    assert "004 was not applied" in page
    assert AuditEvent.objects.filter(run=run).count() == 1


@pytest.mark.django_db
def test_a_running_runs_page_leaves_a_live_or_young_run_alone(target):
    from migration_console.core.models import AuditEvent, Run

    run = Run.objects.create(
        target="db_main", channel="cli", requested_by="someone", state=Run.State.RUNNING
    )
    client = Client()
    client.force_login(make_user("superuser", username="root"))

    assert client.get(f"/admin/console/runs/{run.pk}/progress.json").json()["state"] == "running"
    run.refresh_from_db()
    assert run.state == "running"
    assert not AuditEvent.objects.filter(run=run).exists()


def tracking_row(version: str, status: str, applied_at, error=None):
    from migration_console.core.services.tracking import TrackingRow

    return TrackingRow(version, f"m{version}", "x", status, applied_at, 1000, "someone", error)


def test_a_reaped_run_is_not_credited_with_files_a_later_run_applied():
    from migration_console.core.models import Run
    from migration_console.core.services.run_reaper import run_account

    started = timezone.now() - timedelta(minutes=5)
    run = Run(action="run", planned=["001", "002"], steps=[], started_at=started)
    rows = {
        "001": tracking_row("001", "completed", started + timedelta(seconds=1)),
        "002": tracking_row("002", "completed", started + timedelta(seconds=90)),
    }

    account = run_account(run, rows, claimed_later={"002"})

    assert account.touched == ["001"]
    assert "it applied 001; 002 was not applied" in account.message()


def test_a_reaped_rollback_names_what_it_rolled_back():
    from migration_console.core.models import Run
    from migration_console.core.services.run_reaper import run_account

    started = timezone.now() - timedelta(minutes=5)
    run = Run(action="rollback", planned=["003", "002"], steps=[], started_at=started)
    rows = {"002": tracking_row("002", "completed", started - timedelta(days=1))}

    account = run_account(run, rows, claimed_later=set())

    assert account.touched == ["003"]
    assert "it rolled back 003; 002 is still applied" in account.message()
