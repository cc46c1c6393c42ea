"""Shared fixtures: a fresh target database per test on the suite's own cluster.

`make test` starts a throw-away PostgreSQL cluster (scripts/pgcluster.py) and
exports PGTEST_SOCKET_DIR / PGTEST_PORT; every test that needs a target gets
a database of its own on it, dropped afterwards.
"""

import io
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from migration_console.targets import TargetConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from redisserver import RedisUnavailable, temporary_redis  # noqa: E402


def _server_dsn(dbname: str) -> str:
    socket_dir = os.environ.get("PGTEST_SOCKET_DIR")
    port = os.environ.get("PGTEST_PORT")
    if not socket_dir or not port:
        pytest.exit("run the suite with `make test` (it starts the PostgreSQL cluster)", 2)
    return f"host={socket_dir} port={port} user=postgres dbname={dbname}"


def create_database(prefix: str = "t") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_server_dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(_server_dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class TargetDB:
    """A target database and its migrations directory, with small helpers."""

    name: str
    dbname: str
    dsn: str
    path: Path
    schema: str = "public"

    def write(self, filename: str, sql: str | bytes) -> Path:
        file = self.path / filename
        if isinstance(sql, bytes):
            file.write_bytes(sql)
        else:
            file.write_text(sql)
        return file

    def query(self, sql: str, params=None) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def scalar(self, sql: str, params=None):
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def table_exists(self, table: str) -> bool:
        return self.scalar("SELECT to_regclass(%s) IS NOT NULL", [table])

    def tracking(self) -> dict[str, tuple]:
        if not self.table_exists(f"{self.schema}.schema_migrations"):
            return {}
        rows = self.query(
            f"SELECT version, status, checksum, error FROM {self.schema}.schema_migrations"
        )
        return {row[0]: row[1:] for row in rows}

    def config(self) -> TargetConfig:
        return TargetConfig(name=self.name, dsn=self.dsn, schema=self.schema, path=str(self.path))


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Django empties the tables between transactional tests with TRUNCATE, which the
    audit table refuses (core migration 0003); the test database lets it through.
    tests/test_hardening_audit_table.py turns the guard back on to prove it holds."""
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE core_auditevent DISABLE TRIGGER core_auditevent_no_truncate")


@pytest.fixture
def make_target(tmp_path, settings):
    """Factory: a fresh database + migrations dir registered as a target in settings."""
    created: list[str] = []
    targets = {}

    def factory(name: str = "db_main", schema: str = "public") -> TargetDB:
        dbname = create_database()
        created.append(dbname)
        path = tmp_path / f"{name}_migrations"
        path.mkdir()
        target = TargetDB(name, dbname, _server_dsn(dbname), path, schema)
        targets[name] = target.config()
        settings.MIGRATION_TARGETS = dict(targets)
        return target

    yield factory
    for dbname in created:
        drop_database(dbname)


@pytest.fixture
def target(make_target) -> TargetDB:
    return make_target()


def write_numbered(target: TargetDB, count: int, start: int = 1, body=None) -> None:
    """Write ``count`` one-table migrations 001_t1.sql ... with a side-effect row each."""
    for i in range(start, start + count):
        sql = body(i) if body else f"CREATE TABLE t{i} (id int);\n"
        target.write(f"{i:03d}_t{i}.sql", sql)


@pytest.fixture
def cli_env(target, transactional_db):
    """Environment for running manage.py as a separate process against the test databases."""
    env = dict(os.environ)
    console = connection.settings_dict
    host = str(console["HOST"]).replace("/", "%2F")
    env.update(
        DATABASE_URL=f"postgres://{console['USER']}@{host}:{console['PORT']}/{console['NAME']}",
        DB_DSN=target.dsn,
        MIGRATIONS_PATH=str(target.path),
        MIGRATION_LOCK_WAIT="10",
    )
    env.pop("MIGRATION_TARGETS_FILE", None)
    return env


def run_manage(
    env: dict, *args: str, timeout: float = 120, **kwargs
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def migrate_sql(*args: str) -> tuple[int, str]:
    """``manage.py migrate_sql`` in-process: (exit code, stdout plus the error message)."""
    out = io.StringIO()
    try:
        call_command("migrate_sql", *args, stdout=out, stderr=io.StringIO())
    except CommandError as error:
        return error.returncode, out.getvalue() + str(error)
    return 0, out.getvalue()


@pytest.fixture(scope="module")
def second_cluster():
    """A throw-away PostgreSQL cluster apart from the suite's, for tests that stop or
    restart a server (scripts/pgcluster.py) without disturbing the rest."""
    from pgcluster import temporary_cluster

    cluster = temporary_cluster()
    yield cluster
    if cluster.running:
        cluster.stop()
    time.sleep(0.2)
    shutil.rmtree(cluster.directory, ignore_errors=True)


@pytest.fixture
def redis_url(tmp_path):
    """A real redis-server on a free loopback port (the shared rate-limit cache)."""
    try:
        with temporary_redis(tmp_path) as url:
            yield url
    except RedisUnavailable as exc:
        pytest.fail(f"{exc} (.ci/run installs it)")


# --- workers (manage.py migration_worker) ----------------------------------------------
# Quick heartbeats and hand-overs, so a killed worker's run moves on within seconds.
WORKER_TEST_ENV = {
    "MIGRATION_WORKER_HEARTBEAT": "0.5",
    "MIGRATION_WORKER_STALLED_AFTER": "4",
    "MIGRATION_WORKER_RECOVERY_EVERY": "1",
}
JOB_TABLES = (
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
)


def live_workers() -> int:
    """Workers of the test console database with a recent heartbeat."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM procrastinate_workers "
            "WHERE last_heartbeat > now() - make_interval(secs => %s)",
            [float(WORKER_TEST_ENV["MIGRATION_WORKER_STALLED_AFTER"])],
        )
        return cursor.fetchone()[0]


@dataclass
class WorkerProcess:
    """One ``manage.py migration_worker`` subprocess and its log."""

    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def send(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit code."""
        self.send(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def _targets_file(settings, directory: Path) -> Path:
    """The targets this test configured in-process, for a worker subprocess."""
    import yaml

    entries = {
        name: {
            "dsn": config.dsn,
            "schema": config.schema,
            "path": config.path,
            **({"approvals": config.approvals} if config.approvals else {}),
            **({"window": config.window} if config.window else {}),
        }
        for name, config in settings.MIGRATION_TARGETS.items()
    }
    groups = {}
    for name, group in getattr(settings, "MIGRATION_GROUPS", {}).items():
        entry = {"parallel": group.parallel, "canary": group.canary, "on_error": group.on_error}
        if group.schemas_query:
            entry.update(dsn=group.dsn, path=group.path, schemas=group.schemas_query)
        else:
            entry["targets"] = list(group.targets)
        groups[name] = entry
    if groups:
        entries["groups"] = groups
    path = directory / f"targets-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(entries))
    return path


@pytest.fixture
def start_worker(transactional_db, settings, tmp_path):
    """Factory: ``start_worker(count=1, wait=True, **env)`` starts real
    ``manage.py migration_worker`` subprocesses against the test console database, with
    the targets the test configured so far, and (``wait``) returns once they are live.
    All are stopped at teardown, and the job tables emptied (Django's flush between
    transactional tests leaves procrastinate's unmanaged tables alone)."""
    started: list[WorkerProcess] = []
    console = connection.settings_dict
    host = str(console["HOST"]).replace("/", "%2F")

    def start(count: int = 1, *, wait: bool = True, **env: str) -> list[WorkerProcess]:
        worker_env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{console['USER']}@{host}:{console['PORT']}/"
            f"{console['NAME']}",
            # A test that shortens the lock wait (settings) gets it in its workers too.
            "MIGRATION_LOCK_WAIT": str(min(settings.MIGRATION_LOCK_WAIT, 10)),
            **WORKER_TEST_ENV,
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        worker_env.pop("MIGRATION_TARGETS_FILE", None)
        if settings.MIGRATION_TARGETS:
            worker_env["MIGRATION_TARGETS_FILE"] = str(_targets_file(settings, tmp_path))
        before = live_workers()
        batch = []
        for _ in range(count):
            log = tmp_path / f"worker-{len(started) + 1}.log"
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "manage.py"), "migration_worker"],
                env=worker_env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
            )
            batch.append(WorkerProcess(process, log))
            started.append(batch[-1])
        deadline = time.monotonic() + 60
        while wait and live_workers() < before + count:
            for worker in batch:
                if worker.process.poll() is not None:
                    pytest.fail(f"migration_worker exited early:\n{worker.output()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("migration_worker not live within 60 s")
            time.sleep(0.1)
        return batch

    yield start
    for worker in started:
        worker.stop()
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(JOB_TABLES)} CASCADE")


@pytest.fixture
def worker(target, start_worker) -> WorkerProcess:
    """One live migration worker for ``target`` (and any target made before it)."""
    return start_worker()[0]


@pytest.fixture
def lazy_worker(start_worker):
    """``ensure()`` starts one worker the first time it is called (with the targets
    configured by then): for helpers that post runs, so tests that only read pay nothing."""
    started: list[WorkerProcess] = []

    def ensure() -> WorkerProcess:
        if not started:
            started.extend(start_worker())
        return started[0]

    return ensure
