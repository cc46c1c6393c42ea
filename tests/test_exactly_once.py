"""Exactly once, whatever fails: lost lock sessions, killed no-transaction files,
runners without the lock. Real runner processes against a real PostgreSQL."""

import psycopg
import pytest

from tests.conftest import migrate_sql, run_manage
from tests.faults import (
    finish,
    kill_runner,
    start_runner,
    terminate_backend,
    wait_for_lock_waiter,
    wait_for_query,
    wait_sessions_gone,
)

pytestmark = pytest.mark.slow

SETUP = (
    "CREATE TABLE effects (v text);\n"
    "CREATE TABLE accounts (id int PRIMARY KEY, balance int);\n"
    "INSERT INTO accounts VALUES (1, 100);\n"
)


def write_bank(target, sleep: float = 6) -> None:
    target.write("001_setup.sql", SETUP)
    target.write(
        "002_credit.sql",
        "INSERT INTO effects VALUES ('002');\n"
        f"SELECT pg_sleep({sleep});\n"
        "UPDATE accounts SET balance = balance + 50 WHERE id = 1;\n",
    )
    target.write("003_more.sql", "INSERT INTO effects VALUES ('003');\n")


def assert_applied_once(target) -> None:
    assert target.scalar("SELECT balance FROM accounts WHERE id = 1") == 150
    effects = sorted(row[0] for row in target.query("SELECT v FROM effects"))
    assert effects == ["002", "003"]
    tracking = target.tracking()
    assert {v: row[0] for v, row in tracking.items()} == {
        "001": "completed",
        "002": "completed",
        "003": "completed",
    }


def test_an_idle_session_timeout_never_lets_a_second_runner_apply_a_file_twice(target, cli_env):
    write_bank(target)
    # What an idle-connection killer, a NAT or a pooler does to a quiet session.
    target.query(f"ALTER DATABASE \"{target.dbname}\" SET idle_session_timeout = '3s'")
    env = {**cli_env, "MIGRATION_LOCK_WAIT": "60"}
    first = start_runner(env)
    wait_for_query(target.dsn, "pg_sleep(6)")
    second = start_runner(env)
    first_code, first_out = finish(first)
    second_code, second_out = finish(second)
    assert first_code == 0, first_out
    assert second_code == 0, second_out
    assert "up to date" in second_out.lower()
    assert_applied_once(target)


def test_terminating_the_runners_session_stops_it_and_the_next_runner_applies_each_file_once(
    target, cli_env
):
    write_bank(target)
    env = {**cli_env, "MIGRATION_LOCK_WAIT": "60"}
    first = start_runner(env)
    pid = wait_for_query(target.dsn, "pg_sleep(6)")
    second = start_runner(env)
    wait_for_lock_waiter(target.dsn, count=2)
    terminate_backend(target.dsn, pid)
    first_code, first_out = finish(first)
    second_code, second_out = finish(second)

    assert first_code == 1, first_out
    # The message names the file in flight and the real cause, not a failed ROLLBACK.
    assert "002_credit.sql" in first_out
    assert "terminating connection due to administrator command" in first_out
    assert "the connection is closed" not in first_out
    assert "not recorded: its transaction was rolled back" in first_out
    assert "Traceback" not in first_out
    assert second_code == 0, second_out
    assert_applied_once(target)


def test_a_run_without_the_lock_never_overwrites_a_row_another_runner_recorded(target, cli_env):
    write_bank(target, sleep=2)
    first = start_runner(cli_env, "--no-lock")
    wait_for_query(target.dsn, "pg_sleep(2)")
    second = start_runner(cli_env, "--no-lock")
    first_code, first_out = finish(first)
    second_code, second_out = finish(second)
    # 001 may race too (both see it pending); whichever loses rolls back whole.
    outputs = first_out + second_out
    assert sorted([first_code, second_code]) in ([0, 0], [0, 1]), outputs
    if 1 in (first_code, second_code):
        assert "recorded by another runner" in outputs
    # Whatever lost rolled back whole; run once more to finish anything it left.
    assert run_manage(cli_env, "migrate_sql", "run", "--yes").returncode == 0
    assert_applied_once(target)


NO_TRANSACTION_FILE = (
    "-- migrate:no-transaction\n"
    "INSERT INTO effects VALUES ('002 first');\n"
    "SELECT pg_sleep(30);\n"
    "INSERT INTO effects VALUES ('002 second');\n"
)


def test_a_killed_no_transaction_file_is_recorded_failed_and_never_silently_run_again(
    target, cli_env
):
    target.write("001_setup.sql", SETUP)
    target.write("002_by_hand.sql", NO_TRANSACTION_FILE)
    target.write("003_more.sql", "INSERT INTO effects VALUES ('003');\n")
    runner = start_runner(cli_env)
    wait_for_query(target.dsn, "pg_sleep(30)")
    kill_runner(runner)
    wait_sessions_gone(target.dsn)

    status, error = target.tracking()["002"][0], target.tracking()["002"][2]
    assert status == "failed"
    assert error.startswith("interrupted")
    _code, out = migrate_sql("status")
    assert "FAILED" in out and "interrupted" in out

    again = run_manage(cli_env, "migrate_sql", "run", "--yes")
    assert again.returncode == 2, again.stdout + again.stderr
    assert "002_by_hand.sql" in again.stderr and "repair" in again.stderr
    effects = sorted(row[0] for row in target.query("SELECT v FROM effects"))
    assert effects == ["002 first"]  # statement 1 was not run again

    # The operator finishes the file by hand, records it, and the run goes on.
    target.query("INSERT INTO effects VALUES ('002 second')")
    repaired = run_manage(cli_env, "migrate_sql", "repair", "002", "--mark-applied", "--yes")
    assert repaired.returncode == 0, repaired.stderr
    done = run_manage(cli_env, "migrate_sql", "run", "--yes")
    assert done.returncode == 0, done.stderr
    effects = sorted(row[0] for row in target.query("SELECT v FROM effects"))
    assert effects == ["002 first", "002 second", "003"]


def test_a_killed_concurrent_index_build_blocks_the_next_run_instead_of_ending_completed(
    target, cli_env
):
    target.write(
        "001_setup.sql",
        "CREATE TABLE big (id int);\nINSERT INTO big SELECT generate_series(1, 1000);\n",
    )
    assert migrate_sql("run", "--yes")[0] == 0
    target.write(
        "002_index.sql",
        "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS big_id ON big (id);\n",
    )
    # The build waits for this older snapshot, so the kill lands inside it.
    with psycopg.connect(target.dsn) as blocker:
        blocker.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        blocker.execute("SELECT count(*) FROM big")
        runner = start_runner(cli_env)
        wait_for_query(target.dsn, "CREATE INDEX CONCURRENTLY")
        kill_runner(runner)
        wait_sessions_gone(target.dsn)
    assert target.tracking()["002"][0] == "failed"
    again = run_manage(cli_env, "migrate_sql", "run", "--yes")
    assert again.returncode == 2, again.stdout + again.stderr
    assert "002_index.sql" in again.stderr
    # Left for the operator to see, instead of a completed row over an INVALID index.
    invalid = target.scalar(
        "SELECT count(*) FROM pg_index WHERE NOT indisvalid AND indrelid = 'big'::regclass"
    )
    assert invalid == 1


@pytest.mark.django_db
def test_an_error_in_a_later_statement_of_a_no_transaction_file_names_its_line(target):
    target.write(
        "001_by_hand.sql",
        "-- migrate:no-transaction\n"
        "CREATE TABLE a (id int);\n"
        "\n"
        "CREATE TABLE b (id int);\n"
        "SELECT no_such_column FROM b;\n",
    )
    code, out = migrate_sql("run", "--yes")
    assert code == 1
    assert "line 5 of 001_by_hand.sql" in out


@pytest.mark.django_db
def test_an_error_without_a_position_names_the_statements_first_line(target):
    target.write("001_div.sql", "-- migrate:no-transaction\nSELECT 1;\n\nSELECT 1 / 0;\n")
    code, out = migrate_sql("run", "--yes")
    assert code == 1
    assert "division by zero (statement starting on line 4 of 001_div.sql)" in out
