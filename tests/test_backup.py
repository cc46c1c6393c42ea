"""--backup DIR / MIGRATION_BACKUP_DIR: a pg_dump before the first change of a run."""

import os
import subprocess
import threading
import time

import psycopg
import pytest

from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.backup import pg_dump_command
from migration_console.core.services.targets import Target
from tests.conftest import _server_dsn, create_database, drop_database, migrate_sql

pytestmark = pytest.mark.django_db

PG_RESTORE = "/usr/lib/postgresql/15/bin/pg_restore"


@pytest.fixture
def one_applied(target):
    """001 applied with a row of data; 002 and 003 pending."""
    target.write("001_t1.sql", "CREATE TABLE t1 (id int);\nINSERT INTO t1 VALUES (42);\n")
    assert migrate_sql("run", "--yes")[0] == 0
    target.write("002_t2.sql", "CREATE TABLE t2 (id int);\n")
    target.write("003_t1_more.sql", "ALTER TABLE t1 ADD COLUMN note text;\n")
    return target


@pytest.fixture
def fresh_database():
    name = create_database("restore")
    yield name
    drop_database(name)


def test_the_dump_restores_into_a_fresh_database_with_the_pre_run_schema(
    one_applied, tmp_path, fresh_database
):
    backups = tmp_path / "backups"
    code, out = migrate_sql("run", "--yes", "--backup", str(backups))
    assert code == 0, out
    assert one_applied.table_exists("t2")
    dumps = list(backups.iterdir())
    assert len(dumps) == 1
    dump = dumps[0]
    assert dump.name.startswith("db_main-") and dump.name.endswith(".dump")
    assert oct(dump.stat().st_mode & 0o777) == "0o600"
    assert str(dump) in out

    socket_dir, port = os.environ["PGTEST_SOCKET_DIR"], os.environ["PGTEST_PORT"]
    subprocess.run(
        [
            PG_RESTORE,
            f"--host={socket_dir}",
            f"--port={port}",
            "--username=postgres",
            f"--dbname={fresh_database}",
            "--exit-on-error",
            str(dump),
        ],
        check=True,
        capture_output=True,
    )
    with psycopg.connect(_server_dsn(fresh_database)) as conn:
        assert conn.execute("SELECT id FROM t1").fetchall() == [(42,)]
        assert conn.execute("SELECT to_regclass('t2')").fetchone()[0] is None
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 't1'"
        ).fetchall()
        assert columns == [("id",)]
        versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
        assert versions == [("001",)]

    run = Run.objects.filter(action="run").order_by("-pk").first()
    assert run.backup_file == str(dump)
    event = AuditEvent.objects.get(run=run)
    assert str(dump) in event.message


def test_a_backup_to_an_unwritable_directory_aborts_with_no_change(target, tmp_path):
    target.write("001_t1.sql", "CREATE TABLE t1 (id int);\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, out = migrate_sql("run", "--yes", "--backup", str(blocker / "backups"))
    assert code == 2
    assert "cannot write a backup" in out
    assert not target.table_exists("t1")
    assert not target.table_exists("schema_migrations")
    run = Run.objects.get(action="run")
    assert run.state == "error" and run.backup_file == ""
    event = AuditEvent.objects.get(run=run)
    assert event.outcome == "error" and "backup" in event.message


def test_a_failing_pg_dump_aborts_with_no_change_and_leaves_no_file(target, tmp_path, settings):
    target.write("001_t1.sql", "CREATE TABLE t1 (id int);\n")
    settings.PG_DUMP = "/bin/false"
    backups = tmp_path / "backups"
    code, out = migrate_sql("run", "--yes", "--backup", str(backups))
    assert code == 2
    assert "pg_dump of db_main failed" in out
    assert not target.table_exists("t1")
    assert list(backups.iterdir()) == []


def test_a_backup_behind_a_table_lock_fails_fast_naming_the_lock_wait_and_changes_nothing(
    one_applied, tmp_path, settings
):
    settings.MIGRATION_LOCK_WAIT = 1
    holder = psycopg.connect(one_applied.dsn)
    holder.execute("LOCK TABLE t1 IN ACCESS EXCLUSIVE MODE")
    holder_pid = holder.info.backend_pid
    # Without a bound pg_dump would wait for ever: end the holder, so the test fails
    # (too slow) rather than hangs.
    watchdog = threading.Timer(
        30, one_applied.query, ["SELECT pg_terminate_backend(%s)", [holder_pid]]
    )
    watchdog.start()
    try:
        started = time.monotonic()
        code, out = migrate_sql("run", "--yes", "--backup", str(tmp_path / "backups"))
        elapsed = time.monotonic() - started
    finally:
        watchdog.cancel()
        holder.close()

    assert code == 2, out
    assert elapsed < 15, f"pg_dump waited {elapsed:.1f}s behind the lock"
    assert "waiting 1s for a lock on public.t1" in out and "MIGRATION_LOCK_WAIT" in out
    assert not one_applied.table_exists("t2")
    assert set(one_applied.tracking()) == {"001"}
    assert list((tmp_path / "backups").iterdir()) == []
    run = Run.objects.filter(action="run").order_by("-pk").first()
    assert run.state == "error" and run.backup_file == ""
    event = AuditEvent.objects.get(run=run)
    assert event.outcome == "error" and "lock" in event.message


def test_the_backup_setting_applies_without_the_flag(target, tmp_path, settings):
    settings.MIGRATION_BACKUP_DIR = str(tmp_path / "configured")
    target.write("001_t1.sql", "CREATE TABLE t1 (id int);\n")
    assert migrate_sql("run", "--yes")[0] == 0
    assert len(list((tmp_path / "configured").iterdir())) == 1


def test_no_backup_is_taken_when_nothing_is_pending(target, tmp_path):
    target.write("001_t1.sql", "CREATE TABLE t1 (id int);\n")
    assert migrate_sql("run", "--yes")[0] == 0
    code, out = migrate_sql("run", "--yes", "--backup", str(tmp_path / "b"))
    assert code == 0 and "up to date" in out
    assert not (tmp_path / "b").exists()


def test_the_password_goes_to_the_environment_never_to_the_command_line(tmp_path):
    target = Target(
        name="db_x",
        dsn="host=db.internal port=5433 user=app password=s3cret dbname=app sslmode=require",
        schema="public",
        path=str(tmp_path),
    )
    command, env = pg_dump_command(target, "/backups/x.dump")
    assert not any("s3cret" in arg for arg in command)
    assert env["PGPASSWORD"] == "s3cret" and env["PGSSLMODE"] == "require"
    assert "--host=db.internal" in command and "--dbname=app" in command
    assert "--format=custom" in command and "--no-password" in command
    assert any(arg.startswith("--lock-wait-timeout=") for arg in command)


def test_the_api_answers_500_json_when_the_backup_fails_and_changes_nothing(
    target, tmp_path, settings, client, django_user_model, start_worker
):
    from django.core.cache import cache

    from accounts.tokens import token_create

    cache.clear()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    settings.MIGRATION_BACKUP_DIR = str(blocker / "backups")
    start_worker(MIGRATION_BACKUP_DIR=settings.MIGRATION_BACKUP_DIR)  # the worker runs it
    target.write("001_t1.sql", "CREATE TABLE t1 (id int);\n")
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-1")
    response = client.post(
        "/admin/migrations/run",
        data='{"confirm": true}',
        content_type="application/json",
        headers={"authorization": f"Bearer {token_create(user=root).raw}"},
    )
    cache.clear()
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    data = response.json()
    assert data["error"] == "backup failed" and "cannot write a backup" in data["message"]
    assert not target.table_exists("t1")
    assert AuditEvent.objects.get(action="run", channel="api").outcome == "error"
