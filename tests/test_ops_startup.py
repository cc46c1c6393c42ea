"""Serving start-up: SKIP_MIGRATIONS=false migrates every target (channel startup);
production refuses to serve without REDIS_URL; management commands need neither."""

import subprocess
import sys

import pytest

from migration_console.core.models import AuditEvent, Run
from migration_console.ops import startup
from tests.conftest import ROOT, run_manage


@pytest.fixture
def fresh_startup(monkeypatch):
    monkeypatch.setattr(startup, "_migrated", False)


@pytest.mark.django_db(transaction=True)
def test_skip_migrations_false_applies_every_target_through_the_runner(
    make_target, settings, fresh_startup
):
    main = make_target("db_main")
    other = make_target("db_other")
    main.write("001_a.sql", "CREATE TABLE a (id int);\n")
    other.write("001_b.sql", "CREATE TABLE b (id int);\n")
    other.write("002_c.sql", "CREATE TABLE c (id int);\n")
    settings.SKIP_MIGRATIONS = False

    assert startup.migrate_on_startup() == {"db_main": "success", "db_other": "success"}
    assert main.table_exists("a") and other.table_exists("c")
    runs = Run.objects.order_by("target")
    assert [(r.target, r.channel, r.state) for r in runs] == [
        ("db_main", "startup", "success"),
        ("db_other", "startup", "success"),
    ]
    assert AuditEvent.objects.filter(channel="startup", outcome="success").count() == 2
    assert main.query("SELECT applied_by FROM schema_migrations") == [("startup",)]
    # Once per process: a second call does nothing.
    assert startup.migrate_on_startup() == {}
    assert Run.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_failing_startup_migration_is_recorded_and_does_not_stop_the_console(
    target, settings, fresh_startup, caplog
):
    target.write("001_bad.sql", "SELECT * FROM missing_table;\n")
    settings.SKIP_MIGRATIONS = False
    assert startup.migrate_on_startup() == {"db_main": "failed"}
    assert Run.objects.get().state == Run.State.FAILED
    assert "missing_table" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_skip_migrations_true_the_default_applies_nothing(target, settings, fresh_startup):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    assert settings.SKIP_MIGRATIONS is True
    assert startup.migrate_on_startup() == {}
    assert not target.table_exists("a") and Run.objects.count() == 0


def production(env: dict, **extra) -> dict:
    env = dict(
        env, DJANGO_DEBUG="false", DJANGO_SECRET_KEY="x" * 20 + "production-secret-key-0123456789"
    )
    env.pop("REDIS_URL", None)
    env.update(extra)
    return env


def test_serving_in_production_without_redis_fails_with_a_clear_message(target, cli_env):
    result = subprocess.run(
        [sys.executable, "-c", "import migration_console.wsgi"],
        env=production(cli_env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "REDIS_URL is required to serve the console with DJANGO_DEBUG off" in result.stderr


def test_management_commands_need_neither_redis_nor_trigger_startup_migrations(target, cli_env):
    target.write("001_a.sql", "CREATE TABLE a (id int);\n")
    env = production(cli_env, SKIP_MIGRATIONS="false")
    result = run_manage(env, "migrate_sql", "status")
    assert result.returncode == 0, result.stderr
    assert not target.table_exists("a")
    assert Run.objects.count() == 0
