"""Online DDL safety: a short lock_timeout per attempt, lock-timeout retries, per-file
directives, and the blockers shown while a file waits. Real runner processes, real
blocking sessions, real readers queued behind the migration's lock request."""

import json
import threading
import time

import psycopg
import pytest

from migration_console.core.models import Run
from migration_console.core.services.directives import parse_directives
from migration_console.core.services.errors import MigrationSetError
from migration_console.core.services.jobs import run_as_dict
from tests.conftest import migrate_sql
from tests.faults import finish, kill_runner, start_runner

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

HOT = (
    "CREATE TABLE hot (id int PRIMARY KEY, n int);\n"
    "INSERT INTO hot SELECT g, 0 FROM generate_series(1, 1000) g;\n"
)


class Blocker:
    """A session that reads ``hot`` in an open transaction (ACCESS SHARE), as a long
    report or a forgotten psql would, until ``release``."""

    def __init__(self, dsn: str, application_name: str = "nightly-report"):
        self.conn = psycopg.connect(dsn, application_name=application_name)
        self.conn.execute("SELECT count(*) FROM hot")
        self.pid = self.conn.info.backend_pid

    def release_after(self, seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, self.release)
        timer.start()
        return timer

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()


class Reader(threading.Thread):
    """The application: point reads of ``hot``, each one's latency recorded."""

    def __init__(self, dsn: str):
        super().__init__(daemon=True)
        self.dsn = dsn
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    conn.execute("SELECT n FROM hot WHERE id = 7").fetchone()
                except psycopg.Error as exc:
                    self.errors.append(str(exc))
                self.latencies.append(time.monotonic() - started)
                time.sleep(0.02)


@pytest.fixture
def runners():
    started = []
    yield started
    for process in started:
        if process.poll() is None:
            kill_runner(process)


@pytest.fixture
def hot(target):
    target.write("001_hot.sql", HOT)
    assert migrate_sql("run", "--yes")[0] == 0
    return target


def run_behind_a_blocker(hot, cli_env, runners, *, blocked_for: float):
    """A runner process started while a blocker holds ``hot`` for ``blocked_for``
    seconds and a reader queries it: (exit code, output, the blocker, the reader)."""
    blocker = Blocker(hot.dsn)
    reader = Reader(hot.dsn)
    reader.start()
    try:
        time.sleep(0.3)
        blocker.release_after(blocked_for)
        env = {**cli_env, "MIGRATION_LOCK_RETRY_MAX_WAIT": "1s"}  # keeps the tests short
        process = start_runner(env)
        runners.append(process)
        code, output = finish(process, timeout=60)
    finally:
        reader.stop.set()
        reader.join(10)
        blocker.release()
    return code, output, blocker, reader


def test_a_file_blocked_for_4s_succeeds_after_retries_and_readers_never_wait_past_1_5s(
    hot, cli_env, runners
):
    hot.write("002_add_c.sql", "ALTER TABLE hot ADD COLUMN c int;\n")
    code, output, blocker, reader = run_behind_a_blocker(hot, cli_env, runners, blocked_for=4)
    assert code == 0, output
    assert hot.scalar("SELECT count(*) FROM information_schema.columns WHERE column_name = 'c'")
    assert f"pid {blocker.pid}" in output and "nightly-report" in output, output
    assert "lock timeout on attempt 1 of 11" in output, output
    assert "attempts)" in output, output  # the OK line counts them
    assert not reader.errors
    assert max(reader.latencies) < 1.5, max(reader.latencies)
    step = Run.objects.get(action="run", steps__0__version="002").steps[0]
    assert step["attempts"] >= 2, step


def test_the_next_attempt_starts_as_soon_as_the_blocker_lets_go_not_after_its_back_off(hot):
    hot.write(
        "002_add_c.sql",
        "-- migrate:lock-timeout 100ms\nALTER TABLE hot ADD COLUMN c int;\n",
    )
    blocker = Blocker(hot.dsn)
    released_at = []
    timer = threading.Timer(4, lambda: (blocker.release(), released_at.append(time.monotonic())))
    timer.start()
    try:
        # Waits of 1 s, 2 s, 4 s: without the early retry the file lands after about 7 s.
        code, output = migrate_sql("run", "--yes")
        done = time.monotonic()
    finally:
        timer.cancel()
        blocker.release()
    assert code == 0, output
    assert released_at and done - released_at[0] < 1.0, (done - released_at[0], output)


def test_no_attempt_is_made_while_the_blocker_stays_in_its_transaction(hot, cli_env, runners):
    # Each attempt queues the application behind the file's lock request for up to
    # lock_timeout; while the blocker seen is still in the same transaction another
    # attempt can only time out again, so it is passed over (the readers stall once).
    hot.write("002_add_c.sql", "-- migrate:lock-timeout 400ms\nALTER TABLE hot ADD COLUMN c int;\n")
    code, output, _, reader = run_behind_a_blocker(hot, cli_env, runners, blocked_for=5)
    assert code == 0, output
    assert "not made, still blocked by pid" in output, output
    queued = [latency for latency in reader.latencies if latency > 0.2]
    assert len(queued) <= 2, (queued, output)  # the first attempt, at most one more
    assert not reader.errors


def test_a_file_that_runs_out_of_attempts_fails_naming_its_blocker(hot):
    hot.write(
        "002_add_c.sql",
        "-- migrate:lock-timeout 200ms\n-- migrate:lock-retries 1\n"
        "ALTER TABLE hot ADD COLUMN c int;\n",
    )
    blocker = Blocker(hot.dsn, application_name="forgotten-psql")
    try:
        code, output = migrate_sql("run", "--yes")
    finally:
        blocker.release()
    assert code == 1, output
    assert "Gave up after 2 attempts (lock_timeout 200ms each)" in output, output
    assert f"pid {blocker.pid}" in output and "'forgotten-psql'" in output, output
    status, error = hot.query("SELECT status, error FROM schema_migrations WHERE version = '002'")[
        0
    ]
    assert status == "failed" and f"pid {blocker.pid}" in error, error
    answer = run_as_dict(Run.objects.get(action="run", steps__0__version="002"))
    assert answer["state"] == "failed"
    assert answer["steps"][0]["attempts"] == 2
    assert [b["pid"] for b in answer["blockers"]] == [blocker.pid]
    assert answer["blockers"][0]["application_name"] == "forgotten-psql"
    assert answer["blockers"][0]["state"] == "idle in transaction"
    assert answer["blockers"][0]["query"].startswith("SELECT count(*) FROM hot")
    # The next run, once the blocker is gone, applies it.
    assert migrate_sql("run", "--yes")[0] == 0


def test_lock_retries_0_and_no_transaction_files_fail_on_the_first_lock_timeout(hot):
    hot.write(
        "002_index.sql",
        "-- migrate:no-transaction\n-- migrate:lock-timeout 300ms\n"
        "ALTER TABLE hot ADD COLUMN c int;\n",
    )
    blocker = Blocker(hot.dsn)
    started = time.monotonic()
    try:
        code, output = migrate_sql("run", "--yes")
    finally:
        blocker.release()
    assert code == 1, output
    assert time.monotonic() - started < 5
    assert "lock_timeout 300ms, no retries; blocked by pid" in output, output


def test_directives_set_the_files_own_timeouts_and_do_not_leak_to_the_next_file(hot):
    hot.write(
        "002_settings.sql",
        "-- why: the table is big\n"
        "-- migrate:lock-timeout 100ms\n"
        "-- migrate:statement-timeout 15min\n"
        "CREATE TABLE seen AS SELECT 2 AS v, current_setting('lock_timeout') AS lt,\n"
        "  current_setting('statement_timeout') AS st;\n",
    )
    hot.write(
        "003_outside.sql",
        "-- an index on a live table\n"
        "-- migrate:no-transaction\n"
        "-- migrate:statement-timeout 2min\n"
        "INSERT INTO seen SELECT 3, current_setting('lock_timeout'), "
        "current_setting('statement_timeout');\n"
        "CREATE INDEX CONCURRENTLY hot_n ON hot (n);\n",
    )
    hot.write(
        "004_defaults.sql",
        "INSERT INTO seen SELECT 4, current_setting('lock_timeout'), "
        "current_setting('statement_timeout');\n",
    )
    code, output = migrate_sql("plan")
    assert code == 0, output
    assert "one transaction, lock_timeout 100ms x11 attempts, statement_timeout 15min" in output
    assert "no transaction, lock_timeout 1s, statement_timeout 2min" in output, output
    code, output = migrate_sql("run", "--yes")
    assert code == 0, output
    assert hot.query("SELECT v, lt, st FROM seen ORDER BY v") == [
        (2, "100ms", "15min"),
        (3, "1s", "2min"),  # outside a transaction: CONCURRENTLY worked
        (4, "1s", "0"),
    ]


def test_a_statement_timeout_directive_stops_a_runaway_statement(hot):
    hot.write(
        "002_runaway.sql",
        "-- migrate:statement-timeout 500ms\nINSERT INTO hot VALUES (5000, 1);\n"
        "SELECT pg_sleep(30);\n",
    )
    started = time.monotonic()
    code, output = migrate_sql("run", "--yes")
    assert code == 1, output
    assert time.monotonic() - started < 10
    assert "statement timeout" in output, output
    assert hot.scalar("SELECT count(*) FROM hot WHERE id = 5000") == 0  # rolled back


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("-- migrate:no-transactions\nSELECT 1;\n", "unknown directive on line 1"),
        ("-- fine\n-- migrate:lock-timeout soon\nSELECT 1;\n", "needs a PostgreSQL duration"),
        ("-- migrate:lock-retries -1\nSELECT 1;\n", "whole number from 0 to 100"),
        ("-- migrate:lock-timeout 1s\n-- migrate:lock-timeout 2s\n", "given twice on line 2"),
        ("-- migrate:no-transaction yes\nSELECT 1;\n", "takes no value"),
    ],
)
def test_a_bad_directive_refuses_the_whole_set_before_anything_runs(target, text, reason):
    target.write("001_first.sql", "CREATE TABLE first (id int);\n")
    target.write("002_bad.sql", text)
    code, output = migrate_sql("run", "--yes")
    assert code == 2, output
    assert "002_bad.sql" in output and reason in output, output
    assert not target.table_exists("first")
    code, output = migrate_sql("status")
    assert code == 1 and reason in output, output


def test_directives_are_read_only_from_the_leading_comment_lines():
    text = (
        "-- migrate:lock-timeout 250ms\n\n-- note\n-- migrate:lock-retries 3\n"
        "ALTER TABLE t ADD COLUMN c int;\n-- migrate:not-a-directive-here\n"
        "-- migrate:statement-timeout 1s\n"
    )
    found = parse_directives(text, "005_x.sql")
    assert (found.lock_timeout, found.lock_retries, found.statement_timeout) == ("250ms", 3, None)
    assert not found.no_transaction
    with pytest.raises(MigrationSetError, match="line 3"):
        parse_directives("-- a\n--b\n-- migrate:timeout 1s\n", "006_y.sql")


def test_plan_names_tables_locked_access_exclusive_and_json_carries_the_settings(hot):
    hot.write(
        "002_add_c.sql",
        "-- migrate:lock-retries 3\nCREATE INDEX hot_n ON hot (n);\n"
        "ALTER TABLE hot ADD COLUMN c int;\nALTER TABLE hot VALIDATE CONSTRAINT hot_pkey;\n",
    )
    code, output = migrate_sql("plan")
    assert code == 0, output
    assert "lock: ALTER TABLE on hot (line 3) takes an ACCESS EXCLUSIVE lock" in output, output
    assert output.count("ACCESS EXCLUSIVE") == 1  # not CREATE INDEX, not VALIDATE
    code, output = migrate_sql("plan", "--json")
    item = json.loads(output)["pending_migrations"][0]
    assert item["settings"] == {
        "transaction": True,
        "lock_timeout": "1s",
        "statement_timeout": None,
        "lock_retries": 3,
        "directives": ["lock-retries"],
    }
    assert item["access_exclusive"] == [{"table": "hot", "statement": "ALTER TABLE", "line": 3}]


def test_a_cancel_ends_the_wait_between_attempts(hot, cli_env, runners):
    hot.write("002_add_c.sql", "ALTER TABLE hot ADD COLUMN c int;\n")
    blocker = Blocker(hot.dsn)
    try:
        process = start_runner({**cli_env, "MIGRATION_LOCK_RETRY_MAX_WAIT": "60s"})
        runners.append(process)
        deadline = time.monotonic() + 30
        run = None
        while time.monotonic() < deadline:  # waits once the third attempt timed out
            run = Run.objects.filter(state=Run.State.RUNNING).first()
            wait = (run.lock_wait or {}) if run else {}
            if wait.get("attempt", 0) >= 3 and wait.get("next_attempt_in_seconds"):
                break
            time.sleep(0.1)
        assert run and run.lock_wait["next_attempt_in_seconds"], run and run.lock_wait
        asked = time.monotonic()
        assert migrate_sql("cancel", str(run.pk))[0] == 0
        code, output = finish(process, timeout=30)
        elapsed = time.monotonic() - asked
    finally:
        blocker.release()
    assert code == 1 and "CANCELLED" in output, output
    assert elapsed < 5, elapsed
    run.refresh_from_db()
    assert run.state == Run.State.CANCELLED
    assert "002" not in hot.tracking()
