#!/usr/bin/env python3
"""Throw-away PostgreSQL clusters for development, tests and benchmarks.

PostgreSQL refuses to run as root, and every machine here runs the project as
root: the cluster directory is handed to the ``postgres`` user and initdb /
pg_ctl run through ``runuser``. Clients connect over a socket directory inside
the cluster directory, on a port of the cluster's own.

    python scripts/pgcluster.py dev              # .devdb/, reused across runs
    python scripts/pgcluster.py exec -- CMD ...  # temp cluster for CMD, then removed
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEV_DIR = ROOT / ".devdb"
DEV_PORT = 54329
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "128MB",
    "listen_addresses": "''",
}


def pg_bin(tool: str) -> str:
    found = shutil.which(tool, path="/usr/lib/postgresql/15/bin")
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if not candidates:
        sys.exit(f"pgcluster: {tool} not found under /usr/lib/postgresql/*/bin")
    return candidates[-1]


def _as_postgres(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(args, check=True, **kwargs)


def _hand_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    def __init__(self, directory: Path, port: int):
        self.directory = Path(directory)
        self.data = self.directory / "data"
        self.socket_dir = self.directory / "run"
        self.port = port

    def dsn(self, dbname: str) -> str:
        return f"host={self.socket_dir} port={self.port} user=postgres dbname={dbname}"

    def url(self, dbname: str) -> str:
        host = str(self.socket_dir).replace("/", "%2F")
        return f"postgres://postgres@{host}:{self.port}/{dbname}"

    @property
    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists() and subprocess.run(
            [pg_bin("pg_isready"), "-q", "-h", str(self.socket_dir), "-p", str(self.port)],
            check=False,
        ).returncode == 0

    def init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o755)  # noqa: S103 - the postgres user must traverse it
        for path in (self.directory,):
            _hand_to_postgres(path)
        self.socket_dir.mkdir(exist_ok=True)
        os.chmod(self.socket_dir, 0o755)  # noqa: S103 - clients connect through it
        _hand_to_postgres(self.socket_dir)
        _as_postgres(
            [
                pg_bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            stdout=subprocess.DEVNULL,
        )
        with open(self.data / "postgresql.auto.conf", "a") as conf:
            for key, value in FAST_SETTINGS.items():
                conf.write(f"{key} = '{value.strip(chr(39))}'\n")
            conf.write(f"unix_socket_directories = '{self.socket_dir}'\n")
            conf.write(f"port = {self.port}\n")

    def start(self) -> None:
        self.pg_ctl("start")

    def pg_ctl(self, *args: str) -> None:
        """``pg_ctl <args>`` on this cluster (e.g. ``"restart", "-m", "fast"``), waiting."""
        _as_postgres(
            [
                pg_bin("pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.directory / "server.log"),
                "-w",
                "-t",
                "60",
                *args,
            ],
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.initialised:
            _as_postgres(
                [pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        return subprocess.run(
            [
                pg_bin("psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn(dbname),
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def ensure_database(self, name: str) -> None:
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip()
        if not exists:
            self.psql(f'CREATE DATABASE "{name}"')


def dev() -> None:
    """Start (or reuse) the development cluster with the console and db_main databases."""
    cluster = Cluster(DEV_DIR, DEV_PORT)
    if not cluster.initialised:
        print(f"pgcluster: creating a development cluster in {DEV_DIR}")
        cluster.init()
    if not cluster.running:
        cluster.start()
    for name in ("console", "db_main"):
        cluster.ensure_database(name)
    print(f"pgcluster: development cluster ready on {cluster.socket_dir} port {DEV_PORT}")


def temporary_cluster() -> Cluster:
    directory = Path(tempfile.mkdtemp(prefix="mc-pg-"))
    cluster = Cluster(directory, free_port())
    cluster.init()
    cluster.start()
    return cluster


def exec_with_cluster(command: list[str]) -> int:
    cluster = temporary_cluster()
    try:
        cluster.ensure_database("console")
        cluster.ensure_database("db_main")
        env = dict(os.environ)
        env.update(
            PGTEST_SOCKET_DIR=str(cluster.socket_dir),
            PGTEST_PORT=str(cluster.port),
            DATABASE_URL=cluster.url("console"),
            DB_DSN=cluster.dsn("db_main"),
        )
        return subprocess.call(command, env=env)
    finally:
        cluster.stop()
        time.sleep(0.2)
        shutil.rmtree(cluster.directory, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["dev"]:
        dev()
        return 0
    if argv[:1] == ["stop-dev"]:
        Cluster(DEV_DIR, DEV_PORT).stop()
        return 0
    if argv[:1] == ["exec"]:
        command = argv[1:]
        if command[:1] == ["--"]:
            command = command[1:]
        if not command:
            sys.exit("usage: pgcluster.py exec -- COMMAND ...")
        return exec_with_cluster(command)
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
