"""Drift policy: run refuses while an applied migration is drifted or missing."""

import json

import pytest

from migration_console.core.models import AuditEvent
from tests.conftest import migrate_sql, run_manage, write_numbered

pytestmark = pytest.mark.django_db


@pytest.fixture
def three(target):
    write_numbered(target, 3)
    assert migrate_sql("run", "--yes")[0] == 0
    return target


def test_an_edited_applied_file_refuses_run_until_repair_rerecords_it(three, cli_env):
    three.write("002_t2.sql", "CREATE TABLE t2 (id bigint);\n")
    three.write("004_t4.sql", "CREATE TABLE t4 (id int);\n")

    result = run_manage(cli_env, "migrate_sql", "run", "--yes")
    assert result.returncode == 2, result.stderr
    assert "002_t2 (drifted)" in result.stderr
    assert not three.table_exists("t4")

    result = run_manage(cli_env, "migrate_sql", "repair", "002", "--yes")
    assert result.returncode == 0, result.stderr

    result = run_manage(cli_env, "migrate_sql", "run", "--yes")
    assert result.returncode == 0, result.stderr
    assert three.table_exists("t4")
    outcomes = list(AuditEvent.objects.order_by("pk").values_list("action", "outcome"))
    assert outcomes[-3:] == [("run", "refused"), ("repair", "success"), ("run", "success")]


def test_allow_drift_runs_the_pending_files_anyway(three):
    three.write("001_t1.sql", "CREATE TABLE t1 (id int, changed int);\n")
    three.write("004_t4.sql", "CREATE TABLE t4 (id int);\n")
    assert migrate_sql("run", "--yes")[0] == 2
    code, out = migrate_sql("run", "--yes", "--allow-drift")
    assert code == 0, out
    assert three.table_exists("t4")
    # drift is allowed, not forgotten
    assert json.loads(migrate_sql("status", "--json")[1])["all_migrations"][0]["status"] == (
        "drifted"
    )


def test_a_deleted_applied_file_refuses_run_naming_it(three):
    (three.path / "003_t3.sql").unlink()
    three.write("004_t4.sql", "CREATE TABLE t4 (id int);\n")
    code, out = migrate_sql("run", "--yes")
    assert code == 2
    assert "003_t3 (missing)" in out
    assert not three.table_exists("t4")


def test_status_shows_the_old_and_the_new_checksum_of_a_drifted_file(three):
    recorded = three.tracking()["002"][1]
    three.write("002_t2.sql", "CREATE TABLE t2 (id bigint);\n")
    item = json.loads(migrate_sql("status", "--json")[1])["all_migrations"][1]
    assert item["status"] == "drifted"
    assert item["checksum"] == recorded
    assert item["file_checksum"] != recorded and len(item["file_checksum"]) == 64
    code, out = migrate_sql("status")
    assert code == 0
    assert "DRIFTED" in out and f"recorded {recorded[:12]}" in out
    assert f"file now {item['file_checksum'][:12]}" in out
