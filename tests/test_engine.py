"""The migrate_sql command and the runner against a real PostgreSQL."""

import json

import pytest

from migration_console.core.models import AuditEvent, Run
from tests.conftest import migrate_sql, write_numbered

pytestmark = pytest.mark.django_db


def with_side_effect(i: int) -> str:
    return f"CREATE TABLE t{i} (id int);\nINSERT INTO side_effects VALUES ({i});\n"


@pytest.fixture
def five(target):
    target.query("CREATE TABLE side_effects (version int)")
    write_numbered(target, 5, body=with_side_effect)
    return target


def test_it_applies_five_files_in_order_then_reports_up_to_date(five):
    code, out = migrate_sql("run", "--yes")
    assert code == 0, out
    assert "Applied 5 migration(s)" in out
    assert [r[0] for r in five.query("SELECT version FROM side_effects")] == [1, 2, 3, 4, 5]
    rows = five.query(
        "SELECT version, status, applied_by, duration_ns > 0, applied_at IS NOT NULL"
        " FROM schema_migrations ORDER BY version"
    )
    assert [r[0] for r in rows] == ["001", "002", "003", "004", "005"]
    assert all(r[1] == "completed" and r[3] and r[4] for r in rows)

    code, out = migrate_sql("run", "--yes")
    assert code == 0
    assert "up to date" in out
    assert five.scalar("SELECT count(*) FROM side_effects") == 5


def test_check_exits_0_when_up_to_date_and_1_after_a_new_file_appears(five):
    assert migrate_sql("run", "--yes")[0] == 0
    assert migrate_sql("check")[0] == 0
    five.write("006_more.sql", "CREATE TABLE t6 (id int);")
    code, out = migrate_sql("check")
    assert code == 1
    assert "006_more" in out


def test_a_file_failing_mid_way_leaves_nothing_of_itself_and_stops(five):
    five.write(
        "003_t3.sql",
        "CREATE TABLE t3 (id int);\nINSERT INTO side_effects VALUES (3);\n"
        "INSERT INTO no_such_table VALUES (1);\n",
    )
    code, out = migrate_sql("run", "--yes")
    assert code == 1
    assert 'relation "no_such_table" does not exist' in out
    assert "line 3 of 003_t3.sql" in out
    tracking = five.tracking()
    assert tracking["001"][0] == tracking["002"][0] == "completed"
    assert tracking["003"][0] == "failed"
    assert 'relation "no_such_table" does not exist' in tracking["003"][2]
    assert "004" not in tracking and "005" not in tracking
    assert not five.table_exists("t3")
    assert [r[0] for r in five.query("SELECT version FROM side_effects")] == [1, 2]

    status = json.loads(migrate_sql("status", "--json")[1])
    states = {item["version"]: item["status"] for item in status["all_migrations"]}
    assert states == {
        "001": "completed",
        "002": "completed",
        "003": "failed",
        "004": "pending",
        "005": "pending",
    }

    five.write("003_t3.sql", with_side_effect(3))
    code, out = migrate_sql("run", "--yes")
    assert code == 0, out
    assert {v: row[0] for v, row in five.tracking().items()} == dict.fromkeys(
        ["001", "002", "003", "004", "005"], "completed"
    )
    assert five.tracking()["003"][2] is None
    assert five.scalar("SELECT count(*) FROM side_effects") == 5


def test_every_run_leaves_a_run_row_and_one_audit_row(five):
    five.write("003_t3.sql", "SELECT 1/0;")
    migrate_sql("run", "--yes")
    run = Run.objects.get()
    assert run.channel == "cli" and run.state == "failed"
    assert [s["version"] for s in run.steps] == ["001", "002", "003"]
    event = AuditEvent.objects.get()
    assert (event.channel, event.action, event.outcome) == ("cli", "run", "failed")
    assert event.migrations == ["001", "002", "003"]
    assert "division by zero" in event.message


def test_editing_an_applied_file_shows_drifted_and_refuses_the_run(five):
    migrate_sql("run", "--yes")
    five.write("002_t2.sql", "CREATE TABLE t2 (id bigint);")
    five.write("006_t6.sql", "CREATE TABLE t6 (id int);")
    code, out = migrate_sql("status")
    assert "DRIFTED" in out and "002_t2" in out
    code, out = migrate_sql("run", "--yes")
    assert code == 2
    assert "002_t2 (drifted)" in out
    assert not five.table_exists("t6")
    assert migrate_sql("run", "--yes", "--allow-drift")[0] == 0
    assert five.table_exists("t6")


def test_a_deleted_applied_file_shows_missing(five):
    migrate_sql("run", "--yes")
    (five.path / "004_t4.sql").unlink()
    status = json.loads(migrate_sql("status", "--json")[1])
    assert {i["version"]: i["status"] for i in status["all_migrations"]}["004"] == "missing"
    assert migrate_sql("check")[0] == 1


def test_a_lower_numbered_new_file_is_out_of_order_and_runs_only_when_allowed(five):
    (five.path / "003_t3.sql").rename(five.path / "003_t3.sql.off")
    migrate_sql("run", "--yes")
    (five.path / "003_t3.sql.off").rename(five.path / "003_t3.sql")
    status = json.loads(migrate_sql("status", "--json")[1])
    assert {i["version"]: i["status"] for i in status["all_migrations"]}["003"] == "out_of_order"
    code, out = migrate_sql("run", "--yes")
    assert code == 2 and "003_t3.sql" in out and "--allow-out-of-order" in out
    assert not five.table_exists("t3")
    assert migrate_sql("run", "--yes", "--allow-out-of-order")[0] == 0
    assert five.table_exists("t3")


def test_a_no_transaction_file_builds_an_index_concurrently(five):
    five.write(
        "006_idx.sql",
        "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY t1_idx ON t1 (id);\n"
        "CREATE INDEX CONCURRENTLY t2_idx ON t2 (id);\n",
    )
    code, out = migrate_sql("run", "--yes")
    assert code == 0, out
    assert (
        five.scalar("SELECT count(*) FROM pg_indexes WHERE indexname IN ('t1_idx', 't2_idx')") == 2
    )
    assert five.tracking()["006"][0] == "completed"


def test_a_failed_no_transaction_file_blocks_later_runs_until_repaired(five):
    five.write(
        "006_idx.sql",
        "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY t1_idx ON t1 (id);\n"
        "CREATE INDEX CONCURRENTLY bad_idx ON nowhere (id);\n",
    )
    five.write("007_t7.sql", "CREATE TABLE t7 (id int);")
    code, _ = migrate_sql("run", "--yes")
    assert code == 1
    assert five.tracking()["006"][0] == "failed"
    # the first statement stuck: the database is half-changed, as the refusal warns
    assert five.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = 't1_idx'") == 1
    code, out = migrate_sql("run", "--yes")
    assert code == 2
    assert "006_idx.sql" in out and "repair" in out
    assert not five.table_exists("t7")


@pytest.mark.parametrize(
    ("filename", "content"),
    [("003_dup.sql", "SELECT 1;"), ("0x7_bad.sql", "SELECT 1;"), ("008_empty.sql", "")],
)
def test_a_bad_file_set_exits_2_naming_the_file_and_runs_nothing(five, filename, content):
    five.write(filename, content)
    code, out = migrate_sql("run", "--yes")
    assert code == 2
    assert filename in out
    assert not five.table_exists("schema_migrations")
    assert five.scalar("SELECT count(*) FROM side_effects") == 0


def test_run_without_a_terminal_and_without_yes_refuses_with_exit_2(five):
    code, out = migrate_sql("run")
    assert code == 2
    assert "--yes" in out
    assert not five.table_exists("t1")


def test_json_output_has_the_api_keys(five):
    status = json.loads(migrate_sql("status", "--json")[1])
    assert {
        "database",
        "all_migrations",
        "pending_migrations",
        "applied_migrations",
        "total",
        "pending_count",
        "applied_count",
    } <= set(status)
    assert status["pending_count"] == 5 and status["applied_count"] == 0
    assert set(status["all_migrations"][0]) >= {
        "version",
        "name",
        "status",
        "applied_at",
        "duration",
        "checksum",
    }

    run = json.loads(migrate_sql("run", "--yes", "--json")[1])
    assert run["status"] == "success" and run["applied_count"] == 5
    assert {m["version"] for m in run["applied_migrations"]} == {"001", "002", "003", "004", "005"}
    assert all(isinstance(m["duration"], int) for m in run["applied_migrations"])
    again = json.loads(migrate_sql("run", "--yes", "--json")[1])
    assert again == {"status": "up_to_date", "message": "no pending migrations"}

    history = json.loads(migrate_sql("history", "--json")[1])
    assert history["total"] == 5
    assert history["migrations"][0]["version"] == "005"


def test_plan_shows_the_sql_and_executes_nothing(five):
    code, out = migrate_sql("plan")
    assert code == 0
    assert "INSERT INTO side_effects VALUES (4);" in out
    assert not five.table_exists("schema_migrations")
    assert five.scalar("SELECT count(*) FROM side_effects") == 0


def test_an_unknown_database_exits_2(five):
    code, out = migrate_sql("status", "--database", "nope")
    assert code == 2 and "nope" in out


def test_the_tracking_table_lives_in_the_configured_schema(make_target):
    target = make_target(schema="ops")
    target.write("001_a.sql", "CREATE TABLE public.a (id int);")
    assert migrate_sql("run", "--yes")[0] == 0
    assert target.table_exists("ops.schema_migrations")
    assert not target.table_exists("public.schema_migrations")


def test_a_least_privilege_role_that_owns_its_schema_can_run(target):
    target.query("CREATE ROLE app_migrator LOGIN")
    target.query("CREATE SCHEMA app AUTHORIZATION app_migrator")
    target.query(f'REVOKE CREATE ON DATABASE "{target.dbname}" FROM PUBLIC')
    target.write("001_a.sql", "CREATE TABLE app.a (id int);")
    from django.conf import settings

    restricted = target.config().__class__(
        name="db_main",
        dsn=target.dsn.replace("user=postgres", "user=app_migrator"),
        schema="app",
        path=str(target.path),
    )
    settings.MIGRATION_TARGETS = {"db_main": restricted}
    code, out = migrate_sql("run", "--yes")
    assert code == 0, out
    assert target.table_exists("app.schema_migrations")


def test_a_bad_lock_timeout_setting_is_refused_before_any_change(five, settings):
    settings.MIGRATION_LOCK_TIMEOUT = "5 parsecs"
    code, out = migrate_sql("run", "--yes")
    assert code == 2
    assert "MIGRATION_LOCK_TIMEOUT='5 parsecs'" in out
    assert not five.table_exists("t1")
    assert "001" not in five.tracking()
