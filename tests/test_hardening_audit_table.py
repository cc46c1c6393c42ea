"""Audit rows cannot be changed, deleted or truncated (SPEC: Audit), also on an
install upgraded in place from before the TRUNCATE guard (core migration 0003).

The suite's own test database has the TRUNCATE guard disabled (Django empties
tables with TRUNCATE between tests, see tests/conftest.py), so the first tests
turn it back on inside a transaction that is rolled back.
"""

import os
import uuid

import psycopg
import pytest
from django.db import connection

from migration_console.core.models import AuditEvent
from tests.conftest import run_manage

GUARD = "core_auditevent_no_truncate"


def _console_dsn(dbname: str | None = None, user: str | None = None) -> str:
    settings = connection.settings_dict
    return psycopg.conninfo.make_conninfo(
        host=str(settings["HOST"]),
        port=str(settings["PORT"]),
        user=user or settings["USER"],
        dbname=dbname or settings["NAME"],
    )


def _row() -> AuditEvent:
    return AuditEvent.objects.create(
        actor="ops", channel="cli", action="run", outcome="success", target="db_main"
    )


def _refused(conn, sql: str) -> str:
    """Run ``sql`` in a transaction with the TRUNCATE guard on; the error it raised."""
    with pytest.raises(psycopg.errors.RaiseException) as raised, conn.transaction():
        conn.execute(f"ALTER TABLE core_auditevent ENABLE TRIGGER {GUARD}")
        conn.execute(sql)
    return str(raised.value)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "sql",
    [
        "TRUNCATE core_auditevent",
        "TRUNCATE core_auditevent RESTART IDENTITY CASCADE",
        "TRUNCATE ONLY core_auditevent, core_run, core_approval",
        "UPDATE core_auditevent SET actor = 'mallory'",
        "DELETE FROM core_auditevent",
    ],
)
def test_it_refuses_to_change_delete_or_truncate_audit_rows(sql):
    kept = _row()

    with psycopg.connect(_console_dsn()) as conn:
        message = _refused(conn, sql)

    assert "append-only" in message
    assert sql.split()[0] in message
    assert list(AuditEvent.objects.values_list("pk", "actor")) == [(kept.pk, "ops")]


@pytest.fixture
def app_role_database():
    """A console database owned by a login role that is not a superuser (the
    application's role in production), migrated only up to core 0002."""
    suffix = uuid.uuid4().hex[:10]
    role, dbname = f"mc_app_{suffix}", f"mc_upgrade_{suffix}"
    with psycopg.connect(_console_dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER")
        admin.execute(f"CREATE DATABASE {dbname} OWNER {role}")
    try:
        yield role, dbname
    finally:
        with psycopg.connect(_console_dsn("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_an_install_upgraded_in_place_refuses_truncate_by_the_applications_role(
    app_role_database,
):
    role, dbname = app_role_database
    settings = connection.settings_dict
    host = str(settings["HOST"]).replace("/", "%2F")
    env = dict(
        os.environ,
        DATABASE_URL=f"postgres://{role}@{host}:{settings['PORT']}/{dbname}",
        DJANGO_DEBUG="1",
        DJANGO_SECRET_KEY="test-only-secret",
    )
    env.pop("MIGRATION_TARGETS_FILE", None)
    before = run_manage(env, "migrate", "--no-input", "core", "0002")
    assert before.returncode == 0, before.stderr
    app_dsn = _console_dsn(dbname, user=role)
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO core_auditevent (created_at, actor, channel, target, action, outcome,"
            " migrations, message, token_prefix)"
            " VALUES (now(), 'ops', 'cli', 'db_main', 'run', 'success', '[]', '', '')"
        )
        conn.execute("TRUNCATE core_auditevent")  # the hole this migration closes
        conn.execute(
            "INSERT INTO core_auditevent (created_at, actor, channel, target, action, outcome,"
            " migrations, message, token_prefix)"
            " VALUES (now(), 'ops', 'cli', 'db_main', 'run', 'success', '[]', '', '')"
        )

    upgrade = run_manage(env, "migrate", "--no-input")
    assert upgrade.returncode == 0, upgrade.stderr

    with psycopg.connect(app_dsn, autocommit=True) as conn:
        assert (
            conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
            is False
        )
        with pytest.raises(psycopg.errors.RaiseException, match="TRUNCATE refused"):
            conn.execute("TRUNCATE core_auditevent")
        with pytest.raises(psycopg.errors.RaiseException, match="DELETE refused"):
            conn.execute("DELETE FROM core_auditevent")
        assert conn.execute("SELECT count(*) FROM core_auditevent").fetchone()[0] == 1
