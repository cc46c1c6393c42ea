"""The status answer is cached per process, and every change shows at once.

``GET /admin/migrations/status`` is served from cached bytes while the files,
the tracking rows and the lock holder are unchanged; the status selector reads
on one reusable read-only session per thread that survives being killed.
"""

import json
import os
import time

import psycopg
import pytest
from django.core.cache import cache

from accounts.tokens import token_create
from migration_console.core.services import status as status_module
from migration_console.core.services.caller import Caller
from migration_console.core.services.locking import lock_key
from migration_console.core.services.maintenance import maintenance_execute
from migration_console.core.services.runs import run_execute
from migration_console.core.services.status import target_status, target_status_json
from migration_console.core.services.targets import target_get, target_read
from migration_console.targets import TargetConfig
from tests.api_support import API, bearer
from tests.conftest import write_numbered

pytestmark = pytest.mark.django_db

CALLER = Caller(actor="tests", channel="cli")


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def get_status(client, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-1")
    raw = token_create(user=root, name="tests").raw

    def get() -> dict:
        response = client.get(API + "status", headers=bearer(raw))
        assert response.status_code == 200, response.content[:300]
        assert response["Content-Type"] == "application/json"
        assert response["Cache-Control"] == "no-store"
        return json.loads(response.content)

    return get


def by_version(answer: dict) -> dict[str, dict]:
    return {item["version"]: item for item in answer["all_migrations"]}


def status_session_pids(target) -> list[int]:
    return [
        row[0]
        for row in target.query(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s"
            " AND application_name = 'migration-console status'",
            [target.dbname],
        )
    ]


def test_the_api_answer_changes_at_once_after_a_run_a_rollback_and_a_repair(target, get_status):
    write_numbered(target, 3)
    target.write("001_t1.down.sql", "DROP TABLE t1;\n")
    target.write("002_t2.down.sql", "DROP TABLE t2;\n")
    target.write("003_t3.down.sql", "DROP TABLE t3;\n")
    first = get_status()
    assert (first["pending_count"], first["applied_count"]) == (3, 0)
    assert get_status() == first  # served again, unchanged

    run_execute(target_name="db_main", caller=CALLER)
    after_run = get_status()
    assert (after_run["pending_count"], after_run["applied_count"]) == (0, 3)
    assert after_run["plan_hash"] != first["plan_hash"]

    outcome = maintenance_execute(
        action="rollback", target_name="db_main", version="003", caller=CALLER
    )
    assert outcome.failure is None
    after_rollback = get_status()
    assert by_version(after_rollback)["003"]["status"] == "pending"
    assert after_rollback["applied_count"] == 2

    # Drift 002 (same size, new content), then repair records the new checksum.
    file = target.path / "002_t2.sql"
    stat = os.stat(file)
    file.write_text("CREATE TABLE t2 (id INT);\n")  # same size, new content
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert os.stat(file).st_size == stat.st_size
    drifted = get_status()
    assert by_version(drifted)["002"]["status"] == "drifted"
    maintenance_execute(action="repair", target_name="db_main", version="002", caller=CALLER)
    repaired = get_status()
    assert by_version(repaired)["002"]["status"] == "completed"
    assert by_version(repaired)["002"]["checksum"] != by_version(drifted)["002"]["checksum"]


def test_a_same_size_edit_whose_mtime_was_restored_shows_as_drifted(target, get_status):
    """size, mtime and inode all as before (``touch -r``, ``rsync -t``, ``os.utime``):
    only ctime, which no user can set back, tells that the applied file changed."""
    file = target.write("001_t1.sql", "CREATE TABLE t1 (id int);\n")
    run_execute(target_name="db_main", caller=CALLER)
    assert by_version(get_status())["001"]["status"] == "completed"
    before = os.stat(file)
    time.sleep(0.05)  # past the file system's timestamp tick, so the ctime moves
    file.write_text("CREATE TABLE t9 (id int);\n")  # same size
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(file)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    assert after.st_ctime_ns != before.st_ctime_ns
    assert by_version(get_status())["001"]["status"] == "drifted"
    assert target_status(target_get()).items[0].status == "drifted"


def test_a_row_changed_by_someone_else_with_the_same_count_shows_at_once(target, get_status):
    write_numbered(target, 2)
    run_execute(target_name="db_main", caller=CALLER)
    before = get_status()
    target.query(
        "UPDATE public.schema_migrations SET status = 'failed', error = 'boom'"
        " WHERE version = '002'"
    )
    after = get_status()
    assert by_version(after)["002"]["status"] == "failed"
    assert by_version(after)["002"]["error"] == "boom"
    target.query("UPDATE public.schema_migrations SET applied_by = 'someone' WHERE version = '001'")
    assert by_version(get_status())["001"]["applied_by"] == "someone"
    assert before["total"] == after["total"] == 2


def test_an_edit_of_the_same_size_and_a_new_file_show_at_once(target, get_status):
    file = target.write("001_t1.sql", "CREATE TABLE t1 (id int);\n")
    first = by_version(get_status())["001"]["file_checksum"]
    stat = os.stat(file)
    file.write_text("CREATE TABLE t9 (id int);\n")  # same size
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert os.stat(file).st_size == stat.st_size
    edited = get_status()
    assert by_version(edited)["001"]["file_checksum"] != first

    target.write("002_t2.sql", "CREATE TABLE t2 (id int);\n")
    grown = get_status()
    assert grown["total"] == 2
    assert [item["version"] for item in grown["pending_migrations"]] == ["001", "002"]


def test_a_lock_taken_and_released_shows_at_once(target, get_status):
    write_numbered(target, 1)
    assert get_status()["lock_holder"] is None
    key = lock_key(target.dbname, "public")
    with psycopg.connect(target.dsn, autocommit=True, application_name="other runner") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [key])
        locked = get_status()
        assert locked["lock_holder"]["application_name"] == "other runner"
        assert target_status(target_get()).lock_holder.application_name == "other runner"
    assert get_status()["lock_holder"] is None


def test_the_cached_bytes_are_exactly_what_the_status_dict_encodes_to(target, get_status):
    write_numbered(target, 2)
    run_execute(target_name="db_main", caller=CALLER)
    target.write("003_t3.sql", "CREATE TABLE t3 (id int);\n")
    fresh = target_status(target_get()).as_dict(lint=True)
    body = target_status_json(target_get(), lint=True)
    assert body is target_status_json(target_get(), lint=True)  # the cached object
    assert json.loads(body) == json.loads(json.dumps(fresh, default=str))
    assert get_status() == json.loads(body)


def test_status_reuses_one_read_only_session_and_replaces_a_killed_one(target):
    write_numbered(target, 1)
    assert target_status(target_get()).counts()["pending"] == 1
    pids = status_session_pids(target)
    assert len(pids) == 1
    target_status(target_get())
    target_status(target_get())
    assert status_session_pids(target) == pids  # no new backend per call
    target.query("SELECT pg_terminate_backend(%s)", [pids[0]])
    assert target_status(target_get()).counts()["pending"] == 1  # reconnected, retried
    new_pids = status_session_pids(target)
    assert len(new_pids) == 1 and new_pids != pids


def test_the_status_session_refuses_to_write(target):
    write_numbered(target, 1)
    target_status(target_get())

    def write(session):
        return session.conn.execute("CREATE TABLE sneaky (id int)")

    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        target_read(target_get(), write)
    assert not target.table_exists("sneaky")


def test_a_target_whose_dsn_changed_gets_a_new_session_and_a_fresh_answer(make_target, settings):
    first = make_target()
    write_numbered(first, 2)
    assert target_status(target_get()).counts()["pending"] == 2
    second = make_target("db_other")
    write_numbered(second, 1)
    # db_main now names the other database and directory.
    settings.MIGRATION_TARGETS = {
        "db_main": TargetConfig("db_main", second.dsn, "public", str(second.path))
    }
    assert target_status(target_get()).counts()["pending"] == 1
    assert len(status_session_pids(second)) == 1
    deadline = time.monotonic() + 5
    while status_session_pids(first):  # the old session was closed
        assert time.monotonic() < deadline, "the replaced status session is still open"
        time.sleep(0.02)
    slots = [slot for slot in status_module._cache if slot[0] == "db_main"]
    assert len(slots) <= 2  # the latest entry per target and kind


def test_a_deleted_file_and_a_file_edited_behind_a_symlink_show_at_once(target, tmp_path):
    write_numbered(target, 2)
    elsewhere = tmp_path / "elsewhere.sql"
    elsewhere.write_text("CREATE TABLE t3 (id int);\n")
    (target.path / "003_t3.sql").symlink_to(elsewhere)
    assert target_status(target_get()).counts()["pending"] == 3
    first = target_status(target_get()).items[2].file_checksum

    stat = os.stat(elsewhere)
    elsewhere.write_text("CREATE TABLE t9 (id int);\n")  # no event in the watched directory
    os.utime(elsewhere, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert target_status(target_get()).items[2].file_checksum != first

    (target.path / "002_t2.sql").unlink()
    assert [item.version for item in target_status(target_get()).items] == ["001", "003"]


def test_a_replaced_directory_at_the_same_path_shows_at_once(target):
    write_numbered(target, 2)
    assert target_status(target_get()).counts()["pending"] == 2
    moved = target.path.with_name("old_migrations")
    target.path.rename(moved)
    target.path.mkdir()
    write_numbered(target, 1)
    assert target_status(target_get()).counts()["pending"] == 1
