"""Shared helpers of the bench/ scripts: a throw-away cluster, timed child
processes (wall time and peak RSS), migration file sets, result files.

Every script starts its own cluster through scripts/pgcluster.py, so a
benchmark never touches a development or test database.
"""

import contextlib
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
MANAGE = str(ROOT / "manage.py")
PYTHON = sys.executable
sys.path.insert(0, str(ROOT / "scripts"))

import pgcluster  # noqa: E402
from redisserver import RedisUnavailable, temporary_redis  # noqa: E402

TRACKING_DDL = (
    "CREATE TABLE IF NOT EXISTS public.schema_migrations ("
    " version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
    " status text NOT NULL CHECK (status IN ('completed', 'failed')),"
    " applied_at timestamptz NOT NULL, duration_ns bigint NOT NULL,"
    " applied_by text NOT NULL, error text)"
)


@dataclass
class Timed:
    wall: float  # seconds
    cpu: float  # user + system seconds of the child
    max_rss_mb: float  # peak resident set size of the child, MiB
    returncode: int
    stdout: str
    stderr: str


def run_timed(args: list[str], env: dict | None = None, stdin=subprocess.DEVNULL) -> Timed:
    """Run a child to completion; wall time from fork to reaped, peak RSS from wait4."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, env=env, stdin=stdin, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Timed(
            wall=wall,
            cpu=usage.ru_utime + usage.ru_stime,
            max_rss_mb=usage.ru_maxrss / 1024,
            returncode=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def baseline_manage(directory: str | None) -> str | None:
    """``manage.py`` of another checkout (``--baseline DIR``, e.g. ``git worktree add
    /tmp/base HEAD~1`` or ``git archive HEAD | tar -x -C /tmp/base``), run with this
    venv so that before and after are measured side by side, alternating, in one run."""
    if not directory:
        return None
    path = Path(directory).resolve() / "manage.py"
    if not path.exists():
        sys.exit(f"bench: no manage.py in {directory}")
    return str(path)


def check(timed: Timed, what: str) -> Timed:
    if timed.returncode != 0:
        sys.exit(
            f"bench: {what} failed (exit {timed.returncode})\n"
            f"{timed.stdout[-2000:]}\n{timed.stderr[-2000:]}"
        )
    return timed


class BenchCluster:
    """A throw-away PostgreSQL cluster with the console database migrated."""

    # WAL settings for fair timings: without them the first runs on a fresh cluster
    # pay for zero-filling new 16 MB WAL segments (and for checkpoints forced by
    # max_wal_size), penalising whichever tool happens to run first. Durability
    # is untouched: fsync and synchronous_commit stay as chosen (see make_durable).
    WAL_SETTINGS = {
        "wal_init_zero": "off",
        "max_wal_size": "4GB",
        "checkpoint_timeout": "1h",
    }

    def __init__(self) -> None:
        self.cluster = pgcluster.temporary_cluster()
        self.cluster.ensure_database("console")
        with self.connect() as conn:
            for name, value in self.WAL_SETTINGS.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")

    def close(self) -> None:
        self.cluster.stop()
        time.sleep(0.2)
        shutil.rmtree(self.cluster.directory, ignore_errors=True)

    def dsn(self, dbname: str) -> str:
        return self.cluster.dsn(dbname)

    extra_env: dict = {}

    def env(self, target_db: str = "db_main", **extra: str) -> dict:
        """Environment of a production-like console process (DEBUG off) on this cluster."""
        env = dict(os.environ)
        # PYTHONDONTWRITEBYTECODE (set on some dev machines and images) would make every
        # child recompile the project's ~100 modules (about 0.1 s per call): a fresh
        # clone writes its __pycache__ on the first call, so the bench does too.
        for key in (
            "DJANGO_DEBUG",
            "MIGRATION_TARGETS_FILE",
            "REDIS_URL",
            "MIGRATIONS_PATH",
            "PYTHONDONTWRITEBYTECODE",
        ):
            env.pop(key, None)
        env.update(
            DJANGO_SECRET_KEY="bench-only-secret-" + "x" * 40,
            DJANGO_DEBUG="0",
            DJANGO_SECURE_SSL_REDIRECT="0",
            DATABASE_URL=self.cluster.url("console"),
            DB_DSN=self.cluster.dsn(target_db),
        )
        env.update(self.extra_env)
        env.update(extra)
        return env

    def make_durable(self) -> None:
        """Undo the throw-away cluster's fsync=off: every COMMIT waits for its WAL
        flush, as on a production server."""
        with self.connect() as conn:
            for name in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(f"ALTER SYSTEM SET {name} = on")
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.2)

    def migrate_console(self) -> None:
        check(
            run_timed([PYTHON, MANAGE, "migrate", "--no-input", "-v0"], env=self.env()),
            "manage.py migrate",
        )

    def connect(self, dbname: str = "postgres"):
        import psycopg

        return psycopg.connect(self.cluster.dsn(dbname), autocommit=True)

    def create_database(self, prefix: str = "bench") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def bench_cluster(migrate: bool = True) -> Iterator[BenchCluster]:
    print("bench: starting a throw-away PostgreSQL cluster ...", flush=True)
    cluster = BenchCluster()
    try:
        if migrate:
            cluster.migrate_console()
        yield cluster
    finally:
        cluster.close()


def write_create_table_files(directory: Path, count: int) -> list[Path]:
    """``count`` one-statement migrations ``00001_create_t_1.sql`` ... in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(count)))
    files = []
    for i in range(1, count + 1):
        path = directory / f"{i:0{width}d}_create_t_{i}.sql"
        path.write_text(f"CREATE TABLE t_{i} (id int);\n")
        files.append(path)
    return files


def file_version_name(path: Path) -> tuple[str, str]:
    version, name = path.stem.split("_", 1)
    return version, name


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    pg = subprocess.run(
        [pgcluster.pg_bin("postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return (
        f"{os.cpu_count()} cores {cpu}, {mem:.0f} GiB RAM, Python {platform.python_version()}, "
        f"{pg}, fsync off"
    )


def save_results(name: str, data: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "machine": machine(), "when": time.strftime("%F %T"), **data}
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"bench: results written to {path.relative_to(ROOT)}")
    return path


def psql_bin() -> str:
    found = shutil.which("psql", path="/usr/lib/postgresql/15/bin") or shutil.which("psql")
    return found or pgcluster.pg_bin("psql")


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


# --- serving the console: redis + gunicorn ------------------------------------------


def free_port() -> int:
    return pgcluster.free_port()


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    sys.exit(f"bench: timed out waiting for {what}")


def http_get(url: str, token: str | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_peak_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, MiB."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class ConsoleServer:
    """gunicorn serving the console (production settings, gunicorn.conf.py) on
    127.0.0.1, with a private redis-server for the rate-limit cache, a superuser
    ``bench`` and its API token."""

    def __init__(self, bench: "BenchCluster", target_db: str, workers: int = 2, root: Path = ROOT):
        # root: the checkout served (another one for a side-by-side --baseline run).
        self.root = root
        self.bench = bench
        self.workdir = Path(tempfile.mkdtemp(prefix="mc-bench-srv-"))
        self.procs: list[subprocess.Popen] = []
        self._services = contextlib.ExitStack()
        try:
            redis_url = self._services.enter_context(temporary_redis(self.workdir))
        except RedisUnavailable as exc:
            sys.exit(f"bench: {exc}")
        bench_dir = str(ROOT / "bench")
        self.env = bench.env(
            target_db,
            REDIS_URL=redis_url,
            DJANGO_SETTINGS_MODULE="bench_settings",
            PYTHONPATH=os.pathsep.join([bench_dir, str(root)]),
            WEB_CONCURRENCY=str(workers),
        )
        self.token = self._token()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        gunicorn = Path(PYTHON).with_name("gunicorn")
        self.gunicorn = subprocess.Popen(
            [
                str(gunicorn),
                "-c",
                str(root / "gunicorn.conf.py"),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
            ],
            cwd=root,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "gunicorn.err", "wb"),  # noqa: SIM115
        )
        self.procs.append(self.gunicorn)
        wait_for(
            lambda: http_get(self.base + "/healthz")[0] == 200 or self._died(),
            60,
            "gunicorn to answer /healthz",
        )
        if self._died():
            sys.exit("bench: gunicorn exited:\n" + (self.workdir / "gunicorn.err").read_text())

    def _died(self) -> bool:
        return self.gunicorn.poll() is not None

    def _token(self) -> str:
        env = {**self.env, "DJANGO_SUPERUSER_PASSWORD": "bench-password-" + uuid.uuid4().hex}
        manage = [PYTHON, str(self.root / "manage.py")]
        exists = run_timed(
            [
                *manage,
                "shell",
                "-c",
                "from django.contrib.auth import get_user_model as g;"
                "print(g().objects.filter(username='bench').exists())",
            ],
            env=env,
        )
        if "True" not in exists.stdout:
            check(
                run_timed(
                    [
                        *manage,
                        "createsuperuser",
                        "--no-input",
                        "--username",
                        "bench",
                        "--email",
                        "bench@example.invalid",
                    ],
                    env=env,
                ),
                "createsuperuser",
            )
        created = check(
            run_timed([*manage, "create_api_token", "bench", "-v0"], env=env), "create_api_token"
        )
        return created.stdout.strip().splitlines()[-1].strip()

    def worker_pids(self) -> list[int]:
        path = Path(f"/proc/{self.gunicorn.pid}/task/{self.gunicorn.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(self.base + path, self.token)

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._services.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def seed_applied(bench: "BenchCluster", dbname: str, files: list[Path]) -> None:
    """Create ``dbname`` if needed and record ``files`` as completed in a fresh tracking
    table, without running them: status reads only the tracking table and the files."""
    bench.cluster.ensure_database(dbname)
    with bench.connect(dbname) as conn:
        conn.execute(TRACKING_DDL)
        with conn.cursor().copy(
            "COPY public.schema_migrations (version, name, checksum, status, applied_at,"
            " duration_ns, applied_by) FROM STDIN"
        ) as copy:
            for path in files:
                version, name = file_version_name(path)
                copy.write_row(
                    (
                        version,
                        name,
                        checksum(path),
                        "completed",
                        "2025-01-01 00:00:00+00",
                        1_000_000,
                        "bench",
                    )
                )
