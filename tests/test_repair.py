"""migrate_sql repair <version>: resolve a failed or drifted migration."""

import hashlib

import pytest

from migration_console.core.models import AuditEvent, Run
from tests.conftest import migrate_sql

pytestmark = pytest.mark.django_db

HALF_WAY = (
    "-- migrate:no-transaction\n"
    "CREATE INDEX CONCURRENTLY t1_idx ON t1 (id);\n"
    "CREATE INDEX CONCURRENTLY t1_bad_idx ON nowhere (id);\n"
)


def index_exists(target, name: str) -> bool:
    return target.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = %s", [name]) == 1


@pytest.fixture
def half_failed(target):
    """002 (no transaction) failed after its first statement; 003 waits behind it."""
    target.write("001_t1.sql", "CREATE TABLE t1 (id int);\n")
    target.write("002_idx.sql", HALF_WAY)
    target.write("003_t3.sql", "CREATE TABLE t3 (id int);\n")
    code, _ = migrate_sql("run", "--yes")
    assert code == 1
    assert target.tracking()["002"][0] == "failed"
    assert index_exists(target, "t1_idx")
    return target


def test_a_half_failed_no_transaction_file_blocks_run_until_repair_clears_it(half_failed):
    code, out = migrate_sql("run", "--yes")
    assert code == 2 and "002_idx.sql" in out
    assert not half_failed.table_exists("t3")

    # the sysadmin cleans up by hand and fixes the file, then clears the failure
    half_failed.query("DROP INDEX t1_idx")
    half_failed.write(
        "002_idx.sql",
        "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY t1_idx ON t1 (id);\n",
    )
    code, out = migrate_sql("repair", "002", "--yes")
    assert code == 0, out
    assert "002" not in half_failed.tracking()

    code, out = migrate_sql("run", "--yes")
    assert code == 0, out
    assert index_exists(half_failed, "t1_idx") and half_failed.table_exists("t3")
    assert {v: row[0] for v, row in half_failed.tracking().items()} == {
        "001": "completed",
        "002": "completed",
        "003": "completed",
    }


def test_mark_applied_records_a_failed_file_completed_without_running_it(half_failed):
    # finished by hand: the second index was meant for t1
    half_failed.query("CREATE INDEX t1_bad_idx ON t1 (id)")
    code, out = migrate_sql("repair", "002", "--mark-applied", "--yes")
    assert code == 0, out
    status, checksum, error = half_failed.tracking()["002"]
    assert status == "completed" and error is None
    assert checksum == hashlib.sha256(HALF_WAY.encode()).hexdigest()
    assert half_failed.scalar(
        "SELECT applied_by FROM schema_migrations WHERE version = '002'"
    ).startswith("repair:")
    code, out = migrate_sql("run", "--yes")
    assert code == 0, out
    assert half_failed.table_exists("t3")


def test_repair_shows_what_it_will_change_and_asks(half_failed, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    prompts = []
    monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or "no")
    code, out = migrate_sql("repair", "002")
    assert code == 2 and "aborted" in out
    assert "delete the failed tracking row of 002_idx" in out
    assert prompts and "Continue? [y/N]" in prompts[0]
    assert half_failed.tracking()["002"][0] == "failed"


def test_repair_without_a_terminal_and_without_yes_exits_2_and_changes_nothing(half_failed):
    code, out = migrate_sql("repair", "002")
    assert code == 2 and "--yes" in out
    assert half_failed.tracking()["002"][0] == "failed"


def test_repair_of_a_drifted_file_records_its_current_checksum(target):
    target.write("001_t1.sql", "CREATE TABLE t1 (id int);\n")
    assert migrate_sql("run", "--yes")[0] == 0
    old = target.tracking()["001"][1]
    target.write("001_t1.sql", "CREATE TABLE t1 (id int); -- reviewed\n")
    code, out = migrate_sql("repair", "001", "--yes")
    assert code == 0, out
    new = target.tracking()["001"][1]
    assert new != old
    assert migrate_sql("check")[0] == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("repair", "001", "--yes"), "nothing to repair"),
        (("repair", "003", "--yes"), "nothing to repair"),
        (("repair", "001", "--mark-applied", "--yes"), "--mark-applied"),
        (("repair", "009", "--yes"), "no migration with version 009"),
    ],
)
def test_repair_of_something_not_failed_or_drifted_exits_2(half_failed, args, expected):
    code, out = migrate_sql(*args)
    assert code == 2
    assert expected in out
    assert half_failed.tracking()["002"][0] == "failed"


def test_every_repair_allowed_or_refused_is_a_run_and_an_audit_row(half_failed):
    assert migrate_sql("repair", "001", "--yes")[0] == 2
    assert migrate_sql("repair", "002", "--yes")[0] == 0
    runs = list(Run.objects.filter(action="repair").order_by("pk"))
    assert [r.state for r in runs] == ["refused", "success"]
    events = list(AuditEvent.objects.filter(action="repair").order_by("pk"))
    assert [(e.outcome, e.channel) for e in events] == [("refused", "cli"), ("success", "cli")]
    assert events[1].migrations == ["002"]
    assert "repaired 1 migration(s): 002_idx" in events[1].message
