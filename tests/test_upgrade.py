"""An installation of 0.2.0 upgrades in place: `manage.py migrate` brings the console's
tables forward (Run gains change-management, lock-wait and group columns, Approval
appears) with the rows, the append-only audit table and its triggers intact, and the
upgraded console runs migrations against targets' tracking tables as they were."""

import os

import psycopg
import pytest
from django.db import connection

from tests.conftest import run_manage
from tests.test_hardening_audit_table import _console_dsn, app_role_database  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

RELEASE_0_2_0 = "0004_run_jobs"  # the console's last migration in 0.2.0


def test_a_0_2_0_console_database_upgrades_in_place_and_keeps_its_rows(
    app_role_database,  # noqa: F811 - fixture
    target,
):
    role, dbname = app_role_database
    settings = connection.settings_dict
    host = str(settings["HOST"]).replace("/", "%2F")
    env = dict(
        os.environ,
        DATABASE_URL=f"postgres://{role}@{host}:{settings['PORT']}/{dbname}",
        DB_DSN=target.dsn,
        MIGRATIONS_PATH=str(target.path),
        DJANGO_DEBUG="1",
        DJANGO_SECRET_KEY="test-only-secret",
    )
    env.pop("MIGRATION_TARGETS_FILE", None)
    before = run_manage(env, "migrate", "--no-input", "core", RELEASE_0_2_0)
    assert before.returncode == 0, before.stderr
    app_dsn = _console_dsn(dbname, user=role)
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO core_run (target, action, channel, requested_by, plan_hash, planned,"
            " steps, state, message, current_version, backup_file, arguments, attempts,"
            " cancel_requested_by, created_at)"
            " VALUES ('db_main', 'run', 'cli', 'ops', '', '[\"001\"]',"
            ' \'[{"version": "001", "name": "t1", "status": "completed",'
            " \"duration\": 5, \"error\": null}]', 'success', 'applied 1', '', '', '{}', 1, '',"
            " now())"
        )
        conn.execute(
            "INSERT INTO core_auditevent (created_at, actor, channel, target, action, outcome,"
            " migrations, message, token_prefix)"
            " VALUES (now(), 'ops', 'cli', 'db_main', 'run', 'success', '[\"001\"]', '', '')"
        )
    # A target applied by 0.2.0: its tracking table is used as it is.
    target.write("001_t1.sql", "CREATE TABLE t1 (id int);\n")
    target.write("002_t2.sql", "-- migrate:lock-timeout 2s\nCREATE TABLE t2 (id int);\n")
    old = run_manage(env, "migrate_sql", "run", "--yes")
    assert old.returncode != 0, old.stdout  # 0.2.0 tables lack the new columns
    assert "run `python manage.py migrate` first" in old.stderr, old.stderr

    upgrade = run_manage(env, "migrate", "--no-input")
    assert upgrade.returncode == 0, upgrade.stderr
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        run = conn.execute(
            "SELECT state, approvals_required, break_glass, lock_wait, run_at, parent_id, steps"
            " FROM core_run"
        ).fetchone()
        assert run[:6] == ("success", 0, False, None, None, None)
        assert run[6][0]["version"] == "001"
        assert conn.execute("SELECT count(*) FROM core_approval").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM core_auditevent").fetchone()[0] == 1
        with pytest.raises(psycopg.errors.RaiseException, match="DELETE refused"):
            conn.execute("DELETE FROM core_auditevent")
    ran = run_manage(env, "migrate_sql", "run", "--yes")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert target.table_exists("t1") and target.table_exists("t2")
    assert set(target.tracking()) == {"001", "002"}
