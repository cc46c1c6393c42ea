"""Several runners at once, a killed runner, a lock held elsewhere: real processes."""

import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from migration_console.core.services.locking import lock_key
from tests.conftest import ROOT, run_manage, write_numbered

pytestmark = pytest.mark.slow


def test_eight_runners_at_once_apply_every_migration_exactly_once(target, cli_env):
    target.query("CREATE TABLE side_effects (version int)")
    write_numbered(
        target,
        50,
        body=lambda i: f"CREATE TABLE t{i} (id int);\nINSERT INTO side_effects VALUES ({i});\n",
    )
    processes = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "migrate_sql", "run", "--yes"],
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in processes]
    codes = [code for code, _, _ in results]
    assert set(codes) <= {0, 3}, results
    counts = target.query("SELECT version, count(*) FROM side_effects GROUP BY version")
    assert len(counts) == 50
    assert all(count == 1 for _, count in counts)
    assert target.scalar("SELECT count(*) FROM schema_migrations WHERE status = 'completed'") == 50


def _lock_is_free(target) -> bool:
    database = target.dbname
    key = lock_key(database, "public")
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()[0]
        if got:
            conn.execute("SELECT pg_advisory_unlock(%s)", [key])
        return got


def test_a_runner_killed_mid_migration_frees_the_lock_and_leaves_nothing(target, cli_env):
    target.write("001_fast.sql", "CREATE TABLE fast (id int);")
    target.write("002_slow.sql", "CREATE TABLE slow (id int);\nSELECT pg_sleep(60);\n")
    runner = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "migrate_sql", "run", "--yes"],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        busy = target.scalar(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE query LIKE %s AND datname = %s AND pid <> pg_backend_pid()",
            ["%pg_sleep(60)%", target.dbname],
        )
        if busy:
            break
        time.sleep(0.05)
    else:
        runner.kill()
        pytest.fail("the slow migration never started")
    assert not _lock_is_free(target)

    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    killed_at = time.monotonic()

    def runner_gone() -> bool:
        sleeping = target.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
            " AND application_name LIKE 'migration-console%%'",
            [target.dbname],
        )
        return sleeping == 0 and _lock_is_free(target)

    while not runner_gone():
        assert time.monotonic() - killed_at < 8, "runner's session outlived it"
        time.sleep(0.1)
    print(f"runner's sessions gone {time.monotonic() - killed_at:.2f}s after SIGKILL")
    assert not target.table_exists("slow")
    assert "002" not in target.tracking()

    target.write("002_slow.sql", "CREATE TABLE slow (id int);\n")
    result = run_manage(cli_env, "migrate_sql", "run", "--yes")
    assert result.returncode == 0, result.stderr
    assert target.table_exists("slow")


def test_a_lock_held_elsewhere_exits_3_naming_the_holder(target, cli_env):
    target.write("001_a.sql", "CREATE TABLE a (id int);")
    key = lock_key(target.dbname, "public")
    with psycopg.connect(target.dsn, autocommit=True, application_name="someone-else") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [key])
        holder_pid = holder.info.backend_pid
        env = {**cli_env, "MIGRATION_LOCK_WAIT": "1"}
        started = time.monotonic()
        result = run_manage(env, "migrate_sql", "run", "--yes")
        elapsed = time.monotonic() - started
        status = run_manage(env, "migrate_sql", "status")
    assert result.returncode == 3, result.stderr
    assert f"pid {holder_pid}" in result.stderr
    assert "someone-else" in result.stderr
    assert elapsed < 15
    assert f"pid {holder_pid}" in status.stdout
    assert not target.table_exists("a")
    no_lock = run_manage(cli_env, "migrate_sql", "run", "--yes", "--safe=false")
    assert no_lock.returncode == 0, no_lock.stderr


@pytest.mark.django_db(transaction=True)
def test_a_killed_runners_run_is_closed_with_an_audit_row_once_its_sessions_are_gone(
    target, cli_env
):
    from migration_console.core.models import AuditEvent, Run
    from migration_console.core.services.runs import runs_reap_abandoned
    from migration_console.core.services.targets import target_get

    target.write("001_slow.sql", "SELECT pg_sleep(60);\n")
    runner = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "migrate_sql", "run", "--yes"],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not Run.objects.filter(current_version="001").exists():
        assert time.monotonic() < deadline, "the slow migration never started"
        time.sleep(0.05)
    run = Run.objects.get()
    tagged = target.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
        [f"migration-console run#{run.pk} cli %"],
    )
    assert tagged == 1  # the runner's one session, which also holds the lock
    assert runs_reap_abandoned(target=target_get("db_main"), older_than=0) == 0  # alive

    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    deadline = time.monotonic() + 10
    while runs_reap_abandoned(target=target_get("db_main"), older_than=0) == 0:
        assert time.monotonic() < deadline, "the dead runner's run was never closed"
        time.sleep(0.2)
    run.refresh_from_db()
    assert run.state == "error" and "vanished" in run.message
    event = AuditEvent.objects.get(run=run)
    assert (event.channel, event.action, event.outcome) == ("cli", "run", "error")
    assert runs_reap_abandoned(target=target_get("db_main"), older_than=0) == 0  # once only
