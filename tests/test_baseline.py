"""migrate_sql baseline <version>: adopt a database whose schema was made by hand."""

import json

import pytest

from migration_console.core.models import AuditEvent, Run
from tests.conftest import migrate_sql

pytestmark = pytest.mark.django_db


@pytest.fixture
def by_hand(target):
    """Files 001-004; the schema of 001-003 already exists, made by hand."""
    for i in range(1, 5):
        # would fail if run again: CREATE TABLE without IF NOT EXISTS
        target.write(f"{i:03d}_t{i}.sql", f"CREATE TABLE t{i} (id int);\n")
    target.query("CREATE TABLE t1 (id int); CREATE TABLE t2 (id int); CREATE TABLE t3 (id int)")
    return target


def test_baseline_records_files_as_completed_without_running_them(by_hand):
    code, out = migrate_sql("baseline", "003", "--yes")
    assert code == 0, out
    status = json.loads(migrate_sql("status", "--json")[1])
    states = {m["version"]: m["status"] for m in status["all_migrations"]}
    assert states == {"001": "completed", "002": "completed", "003": "completed", "004": "pending"}
    rows = by_hand.query("SELECT applied_by, checksum FROM schema_migrations ORDER BY version")
    assert all(applied_by.startswith("baseline:") for applied_by, _ in rows)
    assert [checksum for _, checksum in rows] == [
        m["checksum"] for m in status["all_migrations"][:3]
    ]

    code, out = migrate_sql("run", "--yes")
    assert code == 0, out
    assert "Applied 1 migration(s)" in out
    assert by_hand.table_exists("t4")


def test_baseline_is_refused_when_rows_exist_at_or_above_it(by_hand):
    assert migrate_sql("baseline", "002", "--yes")[0] == 0
    before = by_hand.tracking()
    code, out = migrate_sql("baseline", "002", "--yes")
    assert code == 2
    assert "002_t2 (completed)" in out
    code, out = migrate_sql("baseline", "001", "--yes")
    assert code == 2
    assert by_hand.tracking() == before


def test_baseline_above_recorded_rows_adds_only_the_unrecorded_files(by_hand):
    assert migrate_sql("baseline", "001", "--yes")[0] == 0
    assert migrate_sql("baseline", "003", "--yes")[0] == 0
    assert set(by_hand.tracking()) == {"001", "002", "003"}
    run = Run.objects.filter(action="baseline").order_by("-pk").first()
    assert run.planned == ["002", "003"]


def test_baseline_of_a_version_without_a_file_exits_2(by_hand):
    code, out = migrate_sql("baseline", "007", "--yes")
    assert code == 2 and "007" in out
    assert not by_hand.table_exists("schema_migrations")


def test_baseline_asks_for_confirmation_listing_the_files(by_hand, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "")
    code, out = migrate_sql("baseline", "002")
    assert code == 2
    assert "record 001_t1.sql as completed" in out and "record 002_t2.sql" in out
    assert "003_t3" not in out
    assert not by_hand.table_exists("schema_migrations")


def test_every_baseline_allowed_or_refused_is_audited(by_hand):
    migrate_sql("baseline", "002", "--yes")
    migrate_sql("baseline", "001", "--yes")
    events = list(AuditEvent.objects.filter(action="baseline").order_by("pk"))
    assert [e.outcome for e in events] == ["success", "refused"]
    assert events[0].migrations == ["001", "002"]
    assert events[1].migrations == ["001", "002"]
