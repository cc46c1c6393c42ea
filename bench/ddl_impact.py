"""Application latency while a migration waits behind a long transaction: ours
(short lock_timeout + retries) vs ``psql -f`` vs yoyo-migrations.

A table ``hot`` (100k rows) takes a paced application load (4 threads, 200
queries/s in total, point SELECT/UPDATE on random ids, autocommit). At t=5 s a
blocker opens a transaction that reads ``hot`` and stays idle for 10 s; at t=6 s
the migration ``ALTER TABLE hot ADD COLUMN c int`` starts. Its ACCESS EXCLUSIVE
request queues behind the blocker, and every later query on ``hot`` queues
behind it: how long the application stalls depends on how long the migration
keeps waiting. Each scenario runs on a fresh database of one bench cluster.

    python bench/ddl_impact.py                  # 30 s per scenario, 1 round
    python bench/ddl_impact.py --rounds 3       # scenario order rotates per round
    python bench/ddl_impact.py --quick          # blocker 5 s, 15 s per scenario
"""

import argparse
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from apply import yoyo_bin
from common import (
    MANAGE,
    PYTHON,
    bench_cluster,
    psql_bin,
    save_results,
    table,
)

SCENARIOS = ("ours", "ours_100ms", "psql", "yoyo")
LABELS = {
    "ours": "ours, defaults (lock_timeout 1s)",
    "ours_100ms": "ours, -- migrate:lock-timeout 100ms",
    "psql": "psql -f (no lock_timeout)",
    "yoyo": "yoyo 9.0.0 apply --batch",
}
LOCK_TIMEOUT = {"ours": 1.0, "ours_100ms": 0.1}
ROWS = 100_000
THREADS = 4
RATE = 200.0  # queries per second, all threads together
UPDATE_SHARE = 0.25  # the rest are point SELECTs
STALL_THRESHOLD = 0.1  # a query slower than this counts its excess as stall
BLOCKER_AT = 5.0
MIGRATION_AT = 6.0
ALTER = "ALTER TABLE hot ADD COLUMN c int;\n"
# The runner's settings that would change what "defaults" means.
RUNNER_SETTINGS = (
    "MIGRATION_LOCK_TIMEOUT",
    "MIGRATION_LOCK_RETRIES",
    "MIGRATION_LOCK_RETRY_MAX_WAIT",
)
LOCK_RETRY_LINE = re.compile(r"lock timeout on attempt (\d+) of (\d+)")
MIGRATION_GRACE = 120.0  # after the load ends, how long a migration may still take


@dataclass
class Query:
    sent: float  # seconds after t0
    latency: float
    ok: bool


@dataclass
class Timeline:
    """What actually happened, in seconds after t0 (monotonic)."""

    blocker_began: float = math.nan
    blocker_ended: float = math.nan
    migration_started: float = math.nan
    migration_done: float = math.nan
    exit_code: int | None = None
    output: list[tuple[float, str]] = field(default_factory=list)


# --- the target database ---------------------------------------------------------------


def create_hot(bench, dbname: str) -> None:
    with bench.connect(dbname) as conn:
        conn.execute(
            "CREATE TABLE hot (id int PRIMARY KEY, v int NOT NULL, note text NOT NULL);"
            f"INSERT INTO hot SELECT i, 0, md5(i::text) FROM generate_series(1, {ROWS}) i"
        )
        conn.execute("VACUUM ANALYZE hot")


def column_added(bench, dbname: str) -> bool:
    with bench.connect(dbname) as conn:
        return bool(
            conn.execute(
                "SELECT 1 FROM information_schema.columns"
                " WHERE table_name = 'hot' AND column_name = 'c'"
            ).fetchone()
        )


# --- the application load ---------------------------------------------------------------


class Load:
    """THREADS paced clients, each on its own autocommit connection.

    Each client sends on a fixed schedule (every THREADS/RATE s, staggered). A
    client a little late (CPU contention on a shared machine) catches up, so the
    rate holds; one stalled for more than STALL_THRESHOLD drops the slots it
    missed instead of bursting: like a connection pool of 4, a stalled
    connection sends nothing. Each query's latency runs from its own send."""

    def __init__(self, dsn: str, seed: int) -> None:
        import psycopg

        self.dsn = dsn
        self.queries: list[list[Query]] = [[] for _ in range(THREADS)]
        self.skipped = [0] * THREADS
        self.stop = threading.Event()
        self.conns = [self._connect() for _ in range(THREADS)]
        self.rngs = [random.Random(seed + i) for i in range(THREADS)]
        self.psycopg = psycopg
        self.threads: list[threading.Thread] = []

    def _connect(self):
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True, application_name="ddl_bench_app")

    def start(self, t0: float) -> None:
        for i in range(THREADS):
            thread = threading.Thread(target=self._client, args=(i, t0), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _client(self, i: int, t0: float) -> None:
        interval = THREADS / RATE
        rng = self.rngs[i]
        conn = self.conns[i]
        slot = t0 + i / RATE
        while not self.stop.is_set():
            pause = slot - time.monotonic()
            if pause > 0 and self.stop.wait(pause):
                break
            row = rng.randint(1, ROWS)
            update = rng.random() < UPDATE_SHARE
            sent = time.monotonic()
            ok = True
            try:
                if update:
                    conn.execute("UPDATE hot SET v = v + 1 WHERE id = %s", (row,))
                else:
                    conn.execute("SELECT v FROM hot WHERE id = %s", (row,)).fetchone()
            except self.psycopg.Error:
                ok = False
                if conn.broken or conn.closed:
                    conn = self.conns[i] = self._connect()
            done = time.monotonic()
            self.queries[i].append(Query(sent - t0, done - sent, ok))
            slot += interval
            if done - slot > STALL_THRESHOLD:
                missed = math.ceil((done - slot) / interval)
                self.skipped[i] += missed
                slot += missed * interval

    def finish(self) -> list[Query]:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=MIGRATION_GRACE)
        for conn in self.conns:
            conn.close()
        return sorted((q for per in self.queries for q in per), key=lambda q: q.sent)


# --- the migration under test ------------------------------------------------------------


def migration_files(workdir: Path) -> dict[str, Path]:
    """One directory per tool: the same ALTER, with the directive for ours_100ms."""
    dirs = {}
    for scenario in SCENARIOS:
        directory = workdir / scenario
        directory.mkdir()
        header = "-- migrate:lock-timeout 100ms\n" if scenario == "ours_100ms" else ""
        (directory / "0001_add_c.sql").write_text(header + ALTER)
        dirs[scenario] = directory
    return dirs


def migration_command(scenario: str, bench, dbname: str, directory: Path) -> tuple[list, dict]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if scenario in ("ours", "ours_100ms"):
        env = bench.env(dbname, PYTHONUNBUFFERED="1")
        for name in RUNNER_SETTINGS:
            env.pop(name, None)
        return [PYTHON, MANAGE, "migrate_sql", "run", "--yes", "--path", str(directory)], env
    if scenario == "psql":
        script = str(directory / "0001_add_c.sql")
        args = [psql_bin(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", bench.dsn(dbname)]
        return [*args, "-f", script], env
    socket_dir, port = bench.cluster.socket_dir, bench.cluster.port
    uri = f"postgresql+psycopg://postgres@/{dbname}?host={socket_dir}&port={port}"
    return [
        yoyo_bin(),
        "apply",
        "--batch",
        "--no-config-file",
        "--database",
        uri,
        str(directory),
    ], env


def launch(args: list, env: dict, t0: float, timeline: Timeline) -> threading.Thread:
    """Start the migration now; a thread stamps its output lines and its exit."""
    timeline.migration_started = time.monotonic() - t0
    proc = subprocess.Popen(
        args,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )

    def reap() -> None:
        for line in proc.stdout:
            timeline.output.append((round(time.monotonic() - t0, 3), line.rstrip()))
        timeline.exit_code = proc.wait()
        timeline.migration_done = time.monotonic() - t0

    thread = threading.Thread(target=reap, daemon=True)
    thread.start()
    thread.proc = proc
    return thread


# --- one scenario ----------------------------------------------------------------------


def run_scenario(
    scenario: str, bench, directory: Path, duration: float, blocker_seconds: float, seed: int
) -> dict:
    dbname = bench.create_database(f"ddl_{scenario}")
    try:
        create_hot(bench, dbname)
        command, env = migration_command(scenario, bench, dbname, directory)
        load = Load(bench.dsn(dbname), seed)
        blocker = bench.connect(dbname)
        blocker.execute("SET application_name = 'ddl_bench_blocker'")
        blocker.autocommit = False
        timeline = Timeline()
        reaper: list[threading.Thread] = []

        def at(offset: float) -> None:
            pause = t0 + offset - time.monotonic()
            if pause > 0:
                time.sleep(pause)

        def schedule() -> None:
            at(BLOCKER_AT)
            blocker.execute("SELECT v FROM hot WHERE id = 1").fetchone()  # opens the transaction
            timeline.blocker_began = time.monotonic() - t0
            at(MIGRATION_AT)
            reaper.append(launch(command, env, t0, timeline))
            at(BLOCKER_AT + blocker_seconds)
            blocker.commit()
            timeline.blocker_ended = time.monotonic() - t0
            at(duration)

        t0 = time.monotonic()
        load.start(t0)
        scheduler = threading.Thread(target=schedule, daemon=True)
        scheduler.start()
        scheduler.join()
        queries = load.finish()
        blocker.close()
        reaper[0].join(timeout=MIGRATION_GRACE)
        if reaper[0].is_alive():
            reaper[0].proc.kill()
            reaper[0].join()
        added = timeline.exit_code == 0 and column_added(bench, dbname)
    finally:
        bench.drop_database(dbname)
    return summarise(scenario, queries, load.skipped, timeline, added, duration)


def percentile(sorted_values: list[float], share: float) -> float:
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, math.ceil(share * len(sorted_values)) - 1)]


def summarise(
    scenario: str,
    queries: list[Query],
    skipped: list[int],
    timeline: Timeline,
    added: bool,
    duration: float,
) -> dict:
    latencies = sorted(q.latency for q in queries)
    per_second = [0.0] * math.ceil(duration)
    for q in queries:
        second = min(int(q.sent), len(per_second) - 1)
        per_second[second] = max(per_second[second], q.latency)
    retries = [
        (stamp, int(m.group(1)))
        for stamp, line in timeline.output
        if (m := LOCK_RETRY_LINE.search(line))
    ]
    return {
        "scenario": scenario,
        "queries": len(queries),
        "rate": len(queries) / duration,
        # Before the blocker nothing waits: this shows whether the pacing held.
        "rate_before_blocker": sum(1 for q in queries if q.sent < BLOCKER_AT) / BLOCKER_AT,
        "skipped_slots": sum(skipped),
        "max_latency": latencies[-1] if latencies else math.nan,
        "p50_latency": percentile(latencies, 0.50),
        "p99_latency": percentile(latencies, 0.99),
        "slow_queries": sum(1 for v in latencies if v > STALL_THRESHOLD),
        "stall_seconds": sum(v - STALL_THRESHOLD for v in latencies if v > STALL_THRESHOLD),
        "errors": sum(1 for q in queries if not q.ok),
        "done_after_blocker": timeline.migration_done - timeline.blocker_ended,
        "exit_code": timeline.exit_code,
        "column_added": added,
        "lock_timeouts_seen": [{"at": stamp, "attempt": n} for stamp, n in retries],
        "max_latency_per_second": [round(v, 4) for v in per_second],
        "timeline": {k: v for k, v in asdict(timeline).items() if k != "output"},
        # Stamped, so a slow start-up or a late attempt shows on the timeline.
        "output": [[stamp, line] for stamp, line in timeline.output[-40:]],
    }


# --- goals and report --------------------------------------------------------------------


def goal_checks(by_scenario: dict[str, list[dict]], blocker_seconds: float) -> list[list[str]]:
    """One row per goal: which rounds met it."""
    psql = by_scenario.get("psql", [])
    checks = []

    def verdict(oks: list[bool]) -> str:
        if not oks:
            return "n/a"
        met = sum(oks)
        return "yes" if met == len(oks) else f"no ({met} of {len(oks)} rounds)"

    for scenario, limit in LOCK_TIMEOUT.items():
        runs = by_scenario.get(scenario, [])
        if not runs:
            continue
        goal = limit + 0.25
        checks.append(
            [
                f"{scenario}: max application latency",
                f"<= {goal:.2f} s",
                fmt_list([r["max_latency"] for r in runs], "s"),
                verdict([r["max_latency"] <= goal for r in runs]),
            ]
        )
        if psql:
            shares = [
                r["stall_seconds"] / max(p["stall_seconds"], 1e-9)
                for r, p in zip(runs, psql, strict=True)
            ]
            checks.append(
                [
                    f"{scenario}: stall / psql's stall",
                    "<= 15 %",
                    ", ".join(f"{100 * s:.1f} %" for s in shares),
                    verdict([s <= 0.15 for s in shares]),
                ]
            )
        checks.append(
            [
                f"{scenario}: migration done after the blocker ended",
                "<= 3 s, exit 0",
                fmt_list([r["done_after_blocker"] for r in runs], "s"),
                verdict([r["done_after_blocker"] <= 3.0 and r["exit_code"] == 0 for r in runs]),
            ]
        )
    if psql:
        checks.append(
            [
                "psql: max application latency (the reference stall)",
                f"about the blocker's {blocker_seconds:g} s",
                fmt_list([r["max_latency"] for r in psql], "s"),
                "",
            ]
        )
    every = [r for runs in by_scenario.values() for r in runs]
    checks.append(
        [
            "application errors, every scenario",
            "0",
            str(sum(r["errors"] for r in every)),
            verdict([r["errors"] == 0 for r in every]),
        ]
    )
    return checks


def fmt_list(values: list[float], unit: str) -> str:
    return ", ".join(f"{v:.2f} {unit}" for v in values)


def median_row(scenario: str, runs: list[dict]) -> list[str]:
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    exits = sorted({str(r["exit_code"]) for r in runs})
    return [
        LABELS[scenario],
        f"{med('max_latency'):.3f} s",
        f"{1000 * med('p99_latency'):.1f} ms",
        f"{med('stall_seconds'):.2f}",
        str(sum(r["errors"] for r in runs)),
        f"{med('rate'):.0f}/s",
        f"{med('done_after_blocker'):+.2f} s",
        ",".join(exits),
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=None, help="seconds per scenario (30)")
    parser.add_argument("--blocker", type=float, default=None, help="blocker idle seconds (10)")
    parser.add_argument("--quick", action="store_true", help="blocker 5 s, 15 s per scenario")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    duration = args.duration or (15.0 if args.quick else 30.0)
    blocker_seconds = args.blocker or (5.0 if args.quick else 10.0)
    if duration <= BLOCKER_AT + blocker_seconds:
        parser.error(f"--duration must outlast the blocker (> {BLOCKER_AT + blocker_seconds:g} s)")
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if "yoyo" in scenarios and not yoyo_bin():
        print("bench: yoyo-migrations is not installed (pip install -e '.[bench]'); skipping it")
        scenarios.remove("yoyo")

    by_scenario: dict[str, list[dict]] = {s: [] for s in scenarios}
    workdir = Path(tempfile.mkdtemp(prefix="mc-bench-ddl-"))
    try:
        dirs = migration_files(workdir)
        with bench_cluster() as bench:
            for round_no in range(args.rounds):
                shift = round_no % len(scenarios)
                for scenario in scenarios[shift:] + scenarios[:shift]:
                    result = run_scenario(
                        scenario,
                        bench,
                        dirs[scenario],
                        duration,
                        blocker_seconds,
                        args.seed + round_no,
                    )
                    by_scenario[scenario].append(result)
                    print(
                        f"  round {round_no + 1}/{args.rounds} {scenario:<10}"
                        f" max {result['max_latency']:6.3f} s"
                        f"  p99 {1000 * result['p99_latency']:6.1f} ms"
                        f"  stall {result['stall_seconds']:6.2f} s"
                        f"  errors {result['errors']}"
                        f"  {result['rate']:.0f} q/s"
                        f" ({result['rate_before_blocker']:.0f} before the blocker)"
                        f"  done {result['done_after_blocker']:+.2f} s after the blocker"
                        f"  exit {result['exit_code']}"
                        + (
                            f"  lock timeouts at {[t['at'] for t in result['lock_timeouts_seen']]}"
                            if result["lock_timeouts_seen"]
                            else ""
                        ),
                        flush=True,
                    )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    median_note = " (medians)" if args.rounds > 1 else ""
    print()
    print(
        f"blocker idle {blocker_seconds:g} s from t={BLOCKER_AT:g} s, migration from "
        f"t={MIGRATION_AT:g} s, {THREADS} clients at {RATE:.0f} q/s for {duration:g} s{median_note}"
    )
    print(
        table(
            [median_row(s, runs) for s, runs in by_scenario.items()],
            ["scenario", "max latency", "p99", "stall s", "errors", "rate", "done at", "exit"],
        )
    )
    print("(done at: the migration's exit, seconds after the blocker's COMMIT)")
    checks = goal_checks(by_scenario, blocker_seconds)
    print()
    print(table(checks, ["goal", "target", "measured", "met?"]))
    data = {
        "duration": duration,
        "blocker_seconds": blocker_seconds,
        "blocker_at": BLOCKER_AT,
        "migration_at": MIGRATION_AT,
        "threads": THREADS,
        "rate": RATE,
        "rounds": args.rounds,
        "scenarios": scenarios,
        "results": by_scenario,
        "goals": checks,
    }
    save_results("ddl_impact", data)
    return data


if __name__ == "__main__":
    main()
