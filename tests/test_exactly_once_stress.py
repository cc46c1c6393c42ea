"""Stress: rounds of two runners and one random fault each (a terminated session,
a restarted target, a SIGKILLed runner). After every round, and a clean run to
finish, every file's side effect happened exactly once and the tracking table
says exactly that.

The target lives on a cluster of its own, so restarting it leaves the console
database (and the rest of the suite) alone.
"""

import random
import time

import psycopg
import pytest

from migration_console.targets import TargetConfig
from tests.conftest import migrate_sql
from tests.faults import (
    finish,
    kill_runner,
    runner_pids,
    start_runner,
    terminate_backend,
    wait_for_query,
)

pytestmark = pytest.mark.slow

ROUNDS = 20
FILES = 30
FAULTS = ("terminate_first", "terminate_second", "restart_target", "kill_first", "kill_second")


def write_files(path) -> None:
    path.mkdir(exist_ok=True)
    (path / "001_effects.sql").write_text(
        "CREATE TABLE effects (version text);\nINSERT INTO effects VALUES ('001');\n"
    )
    for i in range(2, FILES + 1):
        (path / f"{i:03d}_step{i}.sql").write_text(
            f"INSERT INTO effects VALUES ('{i:03d}');\nSELECT pg_sleep(0.03);\n"
        )


def inject(fault: str, cluster, dsn: str, runners: list) -> None:
    kind, _, which = fault.partition("_")
    if kind == "restart":
        cluster.pg_ctl("restart", "-m", "fast")
    elif kind == "kill":
        kill_runner(runners[0 if which == "first" else 1])
    else:
        pids = runner_pids(dsn)  # oldest first: the lock holder, then the waiter
        if pids:
            terminate_backend(dsn, pids[0 if which == "first" or len(pids) == 1 else 1])


@pytest.mark.django_db(transaction=True)
def test_two_runners_and_a_random_fault_apply_every_file_exactly_once(
    second_cluster, cli_env, tmp_path, settings
):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    path = tmp_path / "stress"
    write_files(path)
    report = []
    for round_number in range(ROUNDS):
        dbname = f"stress_{round_number}"
        second_cluster.psql(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        second_cluster.psql(f'CREATE DATABASE "{dbname}"')
        dsn = second_cluster.dsn(dbname)
        env = {**cli_env, "DB_DSN": dsn, "MIGRATIONS_PATH": str(path), "MIGRATION_LOCK_WAIT": "60"}
        fault = rng.choice(FAULTS)
        runners = [start_runner(env), start_runner(env)]
        wait_for_query(dsn, "pg_sleep")
        time.sleep(rng.uniform(0, 0.6))
        inject(fault, second_cluster, dsn, runners)
        outputs = [finish(runner)[1] for runner in runners if runner.returncode is None]
        for output in outputs:
            assert "Traceback" not in output, (seed, round_number, fault, output)

        # The clean run that finishes the round, in-process (cheaper than a third process).
        settings.MIGRATION_TARGETS = {
            "db_main": TargetConfig(name="db_main", dsn=dsn, schema="public", path=str(path))
        }
        code, output = migrate_sql("run", "--yes")
        assert code == 0, (seed, round_number, fault, output)

        with psycopg.connect(dsn, autocommit=True) as conn:
            effects = conn.execute(
                "SELECT version, count(*) FROM effects GROUP BY version ORDER BY version"
            ).fetchall()
            tracking = conn.execute(
                "SELECT version FROM schema_migrations WHERE status = 'completed' ORDER BY version"
            ).fetchall()
            others = conn.execute(
                "SELECT count(*) FROM schema_migrations WHERE status <> 'completed'"
            ).fetchone()[0]
        expected = [f"{i:03d}" for i in range(1, FILES + 1)]
        context = (seed, round_number, fault)
        assert [version for version, _ in effects] == expected, context
        assert all(count == 1 for _, count in effects), (context, effects)
        assert [row[0] for row in tracking] == expected, context
        assert others == 0, context
        report.append(fault)
        second_cluster.psql(f'DROP DATABASE "{dbname}" WITH (FORCE)')
    print(f"seed {seed}: {ROUNDS} rounds, faults {sorted(report)}")
