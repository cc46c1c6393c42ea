"""Fleets: 1,000 tenant schemas in one database, 10 migration files each.

Side by side on one bench cluster, each run on a freshly created ``tenants``
database (every schema pending):

* ``migrate_sql status --group tenants``: wall time and peak RSS, all pending
  and after the group was applied;
* ``migrate_sql run --group tenants --yes --parallel 1|4|8`` (in-process);
* the same group through 2 ``migration_worker`` processes (the parent run
  started by a small Django script, as the API does), until the parent settles;
* the baseline a user would write today: a shell loop of ``migrate_sql run --yes
  --database tenants/tenant_NNNN`` over the first 50 members, extrapolated;
* 2 workers again, one SIGKILLed mid-fleet: the other resumes its member, and
  every schema must hold each file's side effect exactly once.

Every file inserts ``(current_schema(), file)`` into ``public.fleet_effects`` (no
unique key), so a file applied twice to a schema shows as a count of 2.

    python bench/fleet.py              # 1,000 schemas, about 10 minutes
    python bench/fleet.py --quick      # 200 schemas, a loop of 20
"""

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    MANAGE,
    PYTHON,
    ROOT,
    bench_cluster,
    check,
    median,
    run_timed,
    save_results,
    table,
)

DB = "tenants"
GROUP = "tenants"
QUERY = r"SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\_%' ORDER BY 1"
WORKERS = 2
WORKER_PARALLEL = 4  # the group's own parallel: members queued at once for the workers
# Quick hand-over of a dead worker's job, as the tests set it (defaults: 30 s / 10 s).
KILL_ENV = {
    "MIGRATION_WORKER_HEARTBEAT": "0.5",
    "MIGRATION_WORKER_STALLED_AFTER": "4",
    "MIGRATION_WORKER_RECOVERY_EVERY": "1",
}
SETTLE_TIMEOUT = 1800.0
FINISHED = (
    "success",
    "up_to_date",
    "failed",
    "refused",
    "locked",
    "error",
    "cancelled",
    "rejected",
    "expired",
    "stale",
)
EFFECT = "INSERT INTO public.fleet_effects (schema_name, file) VALUES (current_schema(), '{}');\n"

# Small, realistic tenant migrations: tables, a column with a default, indexes, a
# foreign key, a backfill, a constraint, a view, seed rows.
FILES = {
    "001_create_accounts": "CREATE TABLE accounts (id bigserial PRIMARY KEY, email text NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT now());\n",
    "002_seed_accounts": "INSERT INTO accounts (email)"
    " SELECT 'user' || i || '@example.com' FROM generate_series(1, 20) i;\n",
    "003_add_plan": "ALTER TABLE accounts ADD COLUMN plan text NOT NULL DEFAULT 'free';\n",
    "004_index_email": "CREATE UNIQUE INDEX accounts_email ON accounts (lower(email));\n",
    "005_create_invoices": "CREATE TABLE invoices (id bigserial PRIMARY KEY,"
    " account_id bigint NOT NULL REFERENCES accounts (id), amount_cents int NOT NULL,"
    " issued_on date NOT NULL DEFAULT current_date);\n",
    "006_index_invoices": "CREATE INDEX invoices_account ON invoices (account_id, issued_on);\n",
    "007_backfill_invoices": "INSERT INTO invoices (account_id, amount_cents)"
    " SELECT id, 1000 + id FROM accounts;\n",
    "008_amount_positive": "ALTER TABLE invoices ADD CONSTRAINT amount_positive"
    " CHECK (amount_cents > 0);\n",
    "009_account_totals": "CREATE VIEW account_totals AS SELECT a.id, a.email,"
    " coalesce(sum(i.amount_cents), 0) AS total_cents FROM accounts a"
    " LEFT JOIN invoices i ON i.account_id = a.id GROUP BY a.id, a.email;\n",
    "010_create_settings": "CREATE TABLE settings (key text PRIMARY KEY, value jsonb NOT NULL);"
    " INSERT INTO settings VALUES ('theme', '\"light\"'), ('locale', '\"en\"');\n",
}


def write_files(directory: Path) -> None:
    directory.mkdir(parents=True)
    for stem, body in FILES.items():
        (directory / f"{stem}.sql").write_text(body + EFFECT.format(stem.split("_", 1)[0]))


def write_targets_file(bench, workdir: Path) -> Path:
    import yaml

    group = {"dsn": bench.dsn(DB), "path": str(workdir / "migrations"), "schemas": QUERY}
    group["parallel"] = WORKER_PARALLEL
    path = workdir / "targets.yaml"
    path.write_text(yaml.safe_dump({"groups": {GROUP: group}}))
    return path


def schema(i: int) -> str:
    return f"tenant_{i:04d}"


def fresh_fleet(bench, count: int) -> None:
    """A new ``tenants`` database: ``count`` empty tenant schemas and the effects table."""
    bench.drop_database(DB)
    with bench.connect() as conn:
        conn.execute(f'CREATE DATABASE "{DB}"')
    with bench.connect(DB) as conn, conn.transaction():
        conn.execute(
            "CREATE TABLE public.fleet_effects (schema_name text NOT NULL, file text NOT NULL,"
            " at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
        conn.execute("".join(f"CREATE SCHEMA {schema(i)};" for i in range(1, count + 1)))


def verify(bench, schemas: list[str], what: str) -> dict:
    """Each file's side effect exactly once and 10 completed tracking rows per schema."""
    files = [stem.split("_", 1)[0] for stem in FILES]
    with bench.connect(DB) as conn:
        counts = {
            (row[0], row[1]): row[2]
            for row in conn.execute(
                "SELECT schema_name, file, count(*) FROM public.fleet_effects GROUP BY 1, 2"
            )
        }
        tracked, sql_ns = 0, 0
        for name in schemas:
            rows, spent = conn.execute(
                f"SELECT count(*), coalesce(sum(duration_ns), 0) FROM {name}.schema_migrations"
                " WHERE status = 'completed'"
            ).fetchone()
            tracked, sql_ns = tracked + rows, sql_ns + int(spent)
    expected = {(s, f) for s in schemas for f in files}
    doubles = sorted(key for key, n in counts.items() if n > 1)
    missing = sorted(expected - set(counts))
    stray = sorted(set(counts) - expected)
    result = {
        "schemas": len(schemas),
        "effects_expected": len(expected),
        "double_applies": len(doubles),
        "missing": len(missing),
        "unexpected": len(stray),
        "tracking_rows": tracked,
        # The files' own time as the runner recorded it, summed over members: the rest
        # of a run's wall time (times its parallelism) is overhead around the files.
        "file_seconds": sql_ns / 1e9,
        "ok": not doubles and not missing and not stray and tracked == len(expected),
    }
    if not result["ok"]:
        print(f"bench: {what}: CHECK FAILED {result} doubles={doubles[:5]} missing={missing[:5]}")
    return result


# --- the CLI ------------------------------------------------------------------------


def migrate_sql(bench, targets: Path, *args: str):
    env = bench.env(MIGRATION_TARGETS_FILE=str(targets))
    return run_timed([PYTHON, MANAGE, "migrate_sql", *args], env=env)


def bench_status(bench, targets: Path, rounds: int, expect_code: int, label: str) -> dict:
    walls, rss = [], []
    for _ in range(rounds):
        timed = migrate_sql(bench, targets, "status", "--group", GROUP)
        if timed.returncode != expect_code:
            check(timed, f"status --group ({label})")
        walls.append(timed.wall)
        rss.append(timed.max_rss_mb)
        print(f"  status --group, {label}: {timed.wall:6.3f} s  {timed.max_rss_mb:6.1f} MiB")
    return {"seconds": walls, "median_seconds": median(walls), "max_rss_mb": max(rss)}


def bench_cli_run(bench, targets: Path, count: int, parallel: int) -> dict:
    fresh_fleet(bench, count)
    timed = check(
        migrate_sql(bench, targets, "run", "--group", GROUP, "--yes", "--parallel", str(parallel)),
        f"run --group --parallel {parallel}",
    )
    checked = verify(bench, [schema(i) for i in range(1, count + 1)], f"parallel {parallel}")
    print(
        f"  run --group --parallel {parallel}: {timed.wall:7.2f} s  cpu {timed.cpu:6.2f} s"
        f"  {timed.max_rss_mb:6.1f} MiB  files {checked['file_seconds']:.1f} s"
        f"  verified {checked['ok']}"
    )
    return {
        "parallel": parallel,
        "seconds": timed.wall,
        "cpu_seconds": timed.cpu,
        "max_rss_mb": timed.max_rss_mb,
        "verify": checked,
    }


def bench_loop(bench, targets: Path, count: int, loop: int) -> dict:
    """What a user writes today: one ``migrate_sql run`` per member, one after the other."""
    fresh_fleet(bench, count)
    names = " ".join(schema(i) for i in range(1, loop + 1))
    script = (
        f'for s in {names}; do "$PY" "$MANAGE" migrate_sql run --yes'
        f" --database {GROUP}/$s > /dev/null || exit 1; done"
    )
    env = bench.env(MIGRATION_TARGETS_FILE=str(targets), PY=PYTHON, MANAGE=MANAGE)
    timed = check(run_timed(["bash", "-c", script], env=env), f"shell loop over {loop} members")
    checked = verify(bench, [schema(i) for i in range(1, loop + 1)], "shell loop")
    per_member = timed.wall / loop
    print(
        f"  shell loop, {loop} members: {timed.wall:7.2f} s ({per_member:.3f} s per member,"
        f" {per_member * count:.0f} s for {count})  verified {checked['ok']}"
    )
    return {
        "members": loop,
        "seconds": timed.wall,
        "per_member_seconds": per_member,
        "extrapolated_seconds": per_member * count,
        "verify": checked,
    }


# --- workers ------------------------------------------------------------------------


class Workers:
    """``WORKERS`` ``manage.py migration_worker`` subprocesses on the bench console."""

    def __init__(self, bench, targets: Path, workdir: Path, extra_env: dict) -> None:
        self.bench = bench
        env = bench.env(MIGRATION_TARGETS_FILE=str(targets), PYTHONUNBUFFERED="1", **extra_env)
        self.logs = [workdir / f"worker-{i}-{time.monotonic_ns()}.log" for i in range(WORKERS)]
        self.procs: list[subprocess.Popen] = []
        self.ids: list[int] = []  # procrastinate_workers.id of each process
        # One at a time, so each process is known by its id in procrastinate_workers.
        for log in self.logs:
            before = self.newest()
            self.procs.append(
                subprocess.Popen(
                    [PYTHON, MANAGE, "migration_worker"],
                    env=env,
                    cwd=ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=log.open("w"),
                    stderr=subprocess.STDOUT,
                )
            )
            deadline = time.monotonic() + 60
            while self.newest() == before:
                if self.procs[-1].poll() is not None or time.monotonic() > deadline:
                    self.close()
                    sys.exit("bench: a worker did not start:\n" + log.read_text()[-3000:])
                time.sleep(0.05)
            self.ids.append(self.newest())

    def newest(self) -> int:
        with self.bench.connect("console") as conn:
            return conn.execute(
                "SELECT coalesce(max(id), 0) FROM procrastinate_workers"
            ).fetchone()[0]

    def applying(self, index: int) -> list[int]:
        """Runs whose file worker ``index`` is executing right now (its session on the
        tenants database is active on a file's SQL)."""
        with self.bench.connect(DB) as conn:
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT application_name FROM pg_stat_activity WHERE state = 'active'"
                    " AND application_name LIKE 'migration-console run#%'"
                    " AND query LIKE '%fleet_effects%'"
                )
            ]
        runs = [int(name.split("#", 1)[1].split(" ", 1)[0]) for name in names]
        if not runs:
            return []
        with self.bench.connect("console") as conn:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT r.id FROM core_run r JOIN procrastinate_jobs j ON j.id = r.job_id"
                    " WHERE r.id = ANY(%s) AND j.worker_id = %s",
                    [runs, self.ids[index]],
                )
            ]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with self.bench.connect("console") as conn:
            conn.execute("DELETE FROM procrastinate_workers")


START_PARENT = (
    "from migration_console.core.services.caller import Caller\n"
    "from migration_console.core.services.fleet import group_run_start\n"
    "from migration_console.core.services.groups import group_get\n"
    f"print(group_run_start(group=group_get({GROUP!r}), caller=Caller.cli()).pk)\n"
)


def parent_progress(bench, parent: int) -> tuple[str, int, int]:
    """The parent's state, its members that ended, and those started."""
    with bench.connect("console") as conn:
        state = conn.execute("SELECT state FROM core_run WHERE id = %s", [parent]).fetchone()[0]
        ended, started = conn.execute(
            "SELECT count(*) FILTER (WHERE state = ANY(%s)), count(*) FROM core_run"
            " WHERE parent_id = %s",
            [list(FINISHED), parent],
        ).fetchone()
    return state, ended, started


def bench_workers(bench, targets: Path, workdir: Path, count: int, kill_at: float | None) -> dict:
    """The group through the workers, from the start script's launch until the parent
    settles; with ``kill_at``, SIGKILL the first worker once that share of members ended."""
    fresh_fleet(bench, count)
    workers = Workers(bench, targets, workdir, KILL_ENV if kill_at is not None else {})
    killed_at, killed_runs = None, []
    try:
        env = bench.env(MIGRATION_TARGETS_FILE=str(targets))
        started = time.perf_counter()
        launched = check(
            run_timed([PYTHON, MANAGE, "shell", "-c", START_PARENT], env=env), "start the parent"
        )
        parent = int(launched.stdout.strip().splitlines()[-1])
        while True:
            state, ended, _ = parent_progress(bench, parent)
            if state in FINISHED:
                break
            if time.perf_counter() - started > SETTLE_TIMEOUT:
                sys.exit(f"bench: parent run #{parent} not settled after {SETTLE_TIMEOUT:.0f} s")
            if kill_at is not None and killed_at is None and ended >= kill_at * count:
                # Only while it is inside a file: the case where a double apply could happen.
                caught = workers.applying(0)
                if caught:
                    workers.procs[0].send_signal(signal.SIGKILL)
                    killed_at, killed_runs = ended, caught
                    print(
                        f"  SIGKILL worker 1 (pid {workers.procs[0].pid}) after {ended} members,"
                        f" inside a file of run(s) {caught}"
                    )
                time.sleep(0.01)  # poll fast until the moment is caught
                continue
            time.sleep(0.1)
        wall = time.perf_counter() - started
    finally:
        workers.close()
    with bench.connect("console") as conn:
        states = dict(
            conn.execute(
                "SELECT state, count(*) FROM core_run WHERE parent_id = %s GROUP BY 1", [parent]
            ).fetchall()
        )
        resumed = conn.execute(
            "SELECT count(*) FROM core_run WHERE parent_id = %s AND attempts > 1", [parent]
        ).fetchone()[0]
        killed_attempts = dict(
            conn.execute(
                "SELECT id, attempts FROM core_run WHERE id = ANY(%s)", [killed_runs]
            ).fetchall()
        )
        span = conn.execute(
            "SELECT extract(epoch FROM finished_at - created_at) FROM core_run WHERE id = %s",
            [parent],
        ).fetchone()[0]
    checked = verify(bench, [schema(i) for i in range(1, count + 1)], "workers")
    label = "2 workers, one SIGKILLed" if kill_at is not None else "2 workers"
    print(
        f"  {label}: parent {state} after {wall:7.2f} s (parent row {float(span):.2f} s),"
        f" members {states}, resumed {resumed}, verified {checked['ok']}"
    )
    return {
        "seconds": wall,
        "parent_row_seconds": float(span),
        "parent_state": state,
        "member_states": states,
        "killed_after_members": killed_at,
        "killed_inside_runs": {str(k): v for k, v in killed_attempts.items()},  # run: attempts
        "members_resumed": resumed,
        "verify": checked,
    }


# --- the whole benchmark ------------------------------------------------------------


def goal_rows(data: dict) -> list[list[str]]:
    n = data["schemas"]
    pending, applied = data["status_pending"], data["status_applied"]
    p8 = next(r for r in data["cli"] if r["parallel"] == 8)["seconds"]
    speedup = data["loop"]["extrapolated_seconds"] / p8
    killed = data["workers_killed"]
    zero = killed["verify"]["double_applies"] == 0 and killed["verify"]["ok"]
    yes = lambda ok: "yes" if ok else "no"  # noqa: E731
    return [
        [
            f"status --group, {n} members, all pending",
            "< 2 s, < 200 MB",
            f"{pending['median_seconds']:.2f} s, {pending['max_rss_mb']:.0f} MiB",
            yes(pending["median_seconds"] < 2 and pending["max_rss_mb"] < 200),
        ],
        [
            f"status --group, {n} members, applied",
            "< 2 s, < 200 MB",
            f"{applied['median_seconds']:.2f} s, {applied['max_rss_mb']:.0f} MiB",
            yes(applied["median_seconds"] < 2 and applied["max_rss_mb"] < 200),
        ],
        [
            "CLI --parallel 8 vs shell loop (extrapolated)",
            ">= 30x",
            f"{speedup:.1f}x ({data['loop']['extrapolated_seconds']:.0f} s / {p8:.1f} s)",
            yes(speedup >= 30),
        ],
        [
            "one of 2 workers SIGKILLed: double applies",
            "0",
            f"{killed['verify']['double_applies']} (parent {killed['parent_state']}; killed inside"
            f" run(s) {', '.join(killed['killed_inside_runs']) or 'none'},"
            f" {killed['members_resumed']} resumed)",
            yes(zero and killed["parent_state"] == "success"),
        ],
    ]


def measured_rows(data: dict) -> list[list[str]]:
    n = data["schemas"]
    rows = [
        [f"CLI run --group --parallel {r['parallel']}, {n} x 10 files", f"{r['seconds']:.1f} s"]
        for r in data["cli"]
    ]
    loop = data["loop"]
    rows.append(
        [
            f"shell loop of migrate_sql run, {loop['members']} members",
            f"{loop['seconds']:.1f} s ({loop['per_member_seconds']:.2f} s each,"
            f" {loop['extrapolated_seconds']:.0f} s for {n})",
        ]
    )
    for key, label in (("workers", "2 workers"), ("workers_killed", "2 workers, 1 SIGKILLed")):
        r = data[key]
        rows.append([f"{label}, parent settled", f"{r['seconds']:.1f} s ({r['parent_state']})"])
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemas", type=int, default=1000)
    parser.add_argument("--loop", type=int, default=50, help="members of the shell-loop baseline")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each status measurement")
    parser.add_argument("--quick", action="store_true", help="200 schemas, a loop of 20")
    args = parser.parse_args(argv)
    if args.quick:
        args.schemas, args.loop = 200, 20
    n = args.schemas
    workdir = Path(tempfile.mkdtemp(prefix="mc-bench-fleet-"))
    data: dict = {"schemas": n, "files": len(FILES), "workers": WORKERS, "quick": args.quick}
    try:
        write_files(workdir / "migrations")
        with bench_cluster() as bench:
            targets = write_targets_file(bench, workdir)
            print(f"bench: {n} tenant schemas x {len(FILES)} files", flush=True)
            fresh_fleet(bench, n)
            data["status_pending"] = bench_status(bench, targets, args.rounds, 1, "all pending")
            data["cli"] = [bench_cli_run(bench, targets, n, 8)]
            data["status_applied"] = bench_status(bench, targets, args.rounds, 0, "applied")
            data["cli"] += [bench_cli_run(bench, targets, n, p) for p in (4, 1)]
            data["loop"] = bench_loop(bench, targets, n, args.loop)
            data["workers"] = bench_workers(bench, targets, workdir, n, None)
            data["workers_killed"] = bench_workers(bench, targets, workdir, n, 0.3)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    data["goals"] = goal_rows(data)
    print()
    print(table(measured_rows(data), ["measured", "wall"]))
    print()
    print(table(data["goals"], ["goal", "target", "measured", "met?"]))
    save_results("fleet", data)
    return data


if __name__ == "__main__":
    # A terminated benchmark still stops its workers and its cluster (finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
