"""Quick files travel several to a round trip (core/services/batches.py): each file
still commits alone with its tracking row, and whatever stops a batch (an error, a
lost session, a lock timeout) leaves the same state and report as a file sent alone."""

import threading
import time

import psycopg
import pytest

from migration_console.core.services.batches import MAX_FILES, BatchSizer
from migration_console.core.services.discovery import discover
from tests.conftest import migrate_sql, write_numbered
from tests.faults import finish, runner_pids, start_runner, terminate_backend

pytestmark = pytest.mark.django_db(transaction=True)

# With the sizes 1, 2, 4, 8, 16 of quick files, file 020 falls in the fifth batch
# (016-031), with files committed before it in that same query string.
COUNT = 30
IN_BATCH = 20


def durations(target) -> dict[str, int]:
    return dict(target.query("SELECT version, duration_ns FROM schema_migrations"))


def test_batches_double_while_files_are_quick_and_shrink_after_a_slow_one(target):
    write_numbered(target, 150)
    plan = discover(str(target.path))
    sizer = BatchSizer()
    sizes, index = [], 0
    while index < len(plan):
        batch = sizer.next_batch(plan, index)
        sizes.append(len(batch))
        index += len(batch)
        sizer.finished(len(batch), 1_000_000 * len(batch))  # 1 ms a file: quick
    assert sizes == [1, 2, 4, 8, 16, 32, MAX_FILES, 150 - 127]
    sizer.finished(1, 2_000_000_000)
    assert len(sizer.next_batch(plan, 0)) == 1


def test_a_no_transaction_file_ends_a_batch_and_runs_alone(target):
    write_numbered(target, 3)
    target.write(
        "004_index.sql", "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY i1 ON t1 (id);\n"
    )
    write_numbered(target, 4, start=5)
    plan = discover(str(target.path))
    sizer = BatchSizer()
    sizer.size = 8
    assert [m.version for m in sizer.next_batch(plan, 0)] == ["001", "002", "003"]
    assert [m.version for m in sizer.next_batch(plan, 3)] == ["004"]
    code, out = migrate_sql("run", "--yes")
    assert code == 0, out
    assert all(row[0] == "completed" for row in target.tracking().values())
    assert len(target.tracking()) == 8


def test_each_file_of_a_batch_records_its_own_duration(target):
    write_numbered(
        target,
        COUNT,
        body=lambda i: (
            f"CREATE TABLE t{i} (id int);\n" + ("SELECT pg_sleep(0.4);\n" if i == IN_BATCH else "")
        ),
    )
    code, out = migrate_sql("run", "--yes")
    assert code == 0, out
    recorded = durations(target)
    assert len(recorded) == COUNT
    slow = recorded.pop(f"{IN_BATCH:03d}")
    assert slow >= 400_000_000
    # Measured from each file's own start, not from the query string's: the files
    # after the slow one in its batch would otherwise count its 0.4 s as theirs.
    assert max(recorded.values()) < 300_000_000, recorded
    assert f"{IN_BATCH:03d}_t{IN_BATCH}.sql ... OK" in out
    assert out.count(" OK (") == COUNT


def test_an_error_in_the_middle_of_a_batch_keeps_the_files_before_it_and_names_its_line(target):
    write_numbered(
        target,
        COUNT,
        body=lambda i: (
            f"CREATE TABLE t{i} (id int);\n-- a comment\nSELECT no_such_column FROM t{i};\n"
            if i == IN_BATCH
            else f"CREATE TABLE t{i} (id int);\n"
        ),
    )
    code, out = migrate_sql("run", "--yes")
    assert code == 1
    tracking = target.tracking()
    assert [v for v, row in sorted(tracking.items()) if row[0] == "completed"] == [
        f"{i:03d}" for i in range(1, IN_BATCH)
    ]
    failed = tracking[f"{IN_BATCH:03d}"]
    assert failed[0] == "failed"
    assert f"line 3 of {IN_BATCH:03d}_t{IN_BATCH}.sql" in failed[2]
    assert 'column "no_such_column" does not exist' in failed[2]
    assert not target.table_exists(f"t{IN_BATCH}")  # rolled back whole
    assert not target.table_exists(f"t{IN_BATCH + 1}")  # never started
    assert f"{IN_BATCH - 1:03d}_t{IN_BATCH - 1}.sql ... OK" in out
    assert f"{IN_BATCH:03d}_t{IN_BATCH}.sql ... FAILED" in out
    assert f"{IN_BATCH + 1:03d}_t{IN_BATCH + 1}.sql" not in out

    target.write(f"{IN_BATCH:03d}_t{IN_BATCH}.sql", f"CREATE TABLE t{IN_BATCH} (id int);\n")
    code, out = migrate_sql("run", "--yes")
    assert code == 0, out
    tracking = target.tracking()
    assert len(tracking) == COUNT
    assert all(row[0] == "completed" for row in tracking.values())


@pytest.mark.slow
def test_a_session_lost_in_the_middle_of_a_batch_reports_the_file_in_flight(target, cli_env):
    write_numbered(
        target,
        COUNT,
        body=lambda i: (
            f"CREATE TABLE t{i} (id int);\n" + ("SELECT pg_sleep(30);\n" if i == IN_BATCH else "")
        ),
    )
    runner = start_runner(cli_env)
    # pg_stat_activity shows only the first 1 kB of the batch's query string: wait
    # for the files before 020 to be recorded, then for the sleep.
    deadline = time.monotonic() + 60
    while not (
        target.table_exists("public.schema_migrations")
        and target.scalar("SELECT count(*) FROM schema_migrations") == IN_BATCH - 1
    ):
        assert time.monotonic() < deadline, "the files before 020 were not recorded"
        time.sleep(0.05)
    time.sleep(0.3)
    (pid,) = runner_pids(target.dsn)
    terminate_backend(target.dsn, pid)
    code, out = finish(runner)

    assert code == 1, out
    assert f"while applying {IN_BATCH:03d}_t{IN_BATCH}.sql" in out
    assert "not recorded: its transaction was rolled back" in out
    assert "Traceback" not in out
    tracking = target.tracking()
    assert sorted(tracking) == [f"{i:03d}" for i in range(1, IN_BATCH)]

    target.write(f"{IN_BATCH:03d}_t{IN_BATCH}.sql", f"CREATE TABLE t{IN_BATCH} (id int);\n")
    code, out = finish(start_runner(cli_env))
    assert code == 0, out
    tracking = target.tracking()
    assert len(tracking) == COUNT
    assert all(row[0] == "completed" for row in tracking.values())
    assert all(target.table_exists(f"t{i}") for i in range(1, COUNT + 1))


@pytest.mark.slow
def test_a_lock_timeout_in_the_middle_of_a_batch_is_retried_and_shown_for_its_file(target, cli_env):
    target.query("CREATE TABLE hot (id int)")
    write_numbered(
        target,
        COUNT,
        body=lambda i: (
            "-- migrate:lock-timeout 300ms\nALTER TABLE hot ADD COLUMN c int;\n"
            if i == IN_BATCH
            else f"CREATE TABLE t{i} (id int);\n"
        ),
    )
    blocker = psycopg.connect(target.dsn)
    blocker.execute("SELECT * FROM hot")  # holds ACCESS SHARE until it ends
    blocker_pid = blocker.info.backend_pid
    release = threading.Timer(2.5, blocker.commit)
    release.start()
    try:
        code, out = finish(start_runner(cli_env))
    finally:
        release.cancel()
        blocker.close()

    assert code == 0, out
    name = f"{IN_BATCH:03d}_t{IN_BATCH}.sql"
    assert f"{name} waits for a lock (attempt 1 of" in out or f"{name}: lock timeout" in out
    assert f"held by pid {blocker_pid}" in out or f"blocked by pid {blocker_pid}" in out
    tracking = target.tracking()
    assert len(tracking) == COUNT
    assert all(row[0] == "completed" for row in tracking.values())
    assert (
        target.scalar("SELECT count(*) FROM information_schema.columns WHERE table_name = 'hot'")
        == 2
    )


@pytest.mark.parametrize(
    "broken",
    [
        "CREATE TABLE t{i} (id int);\n\nSELEC 1;\n",  # a syntax error on line 3
        "CREATE TABLE t{i} (id int);\n\n/* never closed\n",  # swallows what follows
        "CREATE TABLE t{i} (id int);\n\nSELECT $$never closed;\n",
    ],
)
def test_a_syntax_error_in_a_batch_names_its_own_file_and_applies_the_ones_before(target, broken):
    # PostgreSQL parses a whole query string before running any of it: a syntax error
    # in one file of a batch stops the files before it from running too.
    write_numbered(
        target,
        COUNT,
        body=lambda i: broken.format(i=i) if i == IN_BATCH else f"CREATE TABLE t{i} (id int);\n",
    )
    code, out = migrate_sql("run", "--yes")
    assert code == 1
    tracking = target.tracking()
    assert [v for v, row in sorted(tracking.items()) if row[0] == "completed"] == [
        f"{i:03d}" for i in range(1, IN_BATCH)
    ], out
    failed = tracking[f"{IN_BATCH:03d}"]
    assert failed[0] == "failed"
    assert f"line 3 of {IN_BATCH:03d}_t{IN_BATCH}.sql" in failed[2], failed[2]
    assert f"{IN_BATCH:03d}_t{IN_BATCH}.sql ... FAILED" in out
    assert not target.table_exists(f"t{IN_BATCH}")
