"""Where the time of one ``migrate_sql run --yes`` goes, phase by phase.

Runs the command in this process (as ``manage.py`` does) with timers wrapped
around its phases, on a fresh database of a throw-away cluster, several rounds;
prints the median of each phase. The wrappers add a few microseconds per call.

    python bench/apply_breakdown.py                 # 1,000 files, 5 rounds
    python bench/apply_breakdown.py -n 100 --rounds 3

Each round is a child process (``--child``): start-up is part of what is measured.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MANAGE = str(ROOT / "manage.py")

PHASES = (
    ("python start-up", "interpreter, site, until manage.py runs"),
    ("settings", "settings module: targets file, DSN check (imports psycopg)"),
    ("django set-up", "app registry: admin, auth, auditlog, procrastinate ..."),
    ("command import", "migrate_sql and the services it imports"),
    ("console db: run row", "Run row created and marked running"),
    ("discovery + hashing", "list, read, checksum and check every file"),
    ("target: connect, lock, plan", "session, advisory lock, tracking rows, status"),
    ("applying the files", "each file with its tracking insert; quick ones batched"),
    ("console db: final rows", "final Run row and the audit row"),
    ("other", "argument parsing, output, threads, reaping stale runs ..."),
    ("exit", "interpreter shutdown until the process is reaped"),
)


def _process_started() -> float:
    """This process's start on the CLOCK_BOOTTIME timeline (seconds)."""
    with open("/proc/self/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def child(argv: list[str]) -> None:
    """Run ``manage.py migrate_sql ...`` here, timing its phases; print them as JSON."""
    boot = lambda: time.clock_gettime(time.CLOCK_BOOTTIME)  # noqa: E731
    spent: dict[str, float] = dict.fromkeys([name for name, _ in PHASES], 0.0)
    marks = {"main": boot() - _process_started()}

    def timed(module, name: str, phase: str) -> None:
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[phase] += time.perf_counter() - started

        setattr(module, name, wrapper)

    import django

    setup = django.setup

    def setup_and_wrap(*args, **kwargs):
        started = time.perf_counter()
        setup(*args, **kwargs)
        spent["django set-up"] += time.perf_counter() - started
        from django.core import management

        from migration_console.core.services import discovery, run_records, runner, runs, status

        load = management.load_command_class

        def load_and_wrap(app_name, name):
            started = time.perf_counter()
            command = load(app_name, name)
            spent["command import"] += time.perf_counter() - started
            module = sys.modules[type(command).__module__]
            if hasattr(module, "target_status"):  # the plan shown before the run
                timed(module, "target_status", "target: connect, lock, plan")
            return command

        management.load_command_class = load_and_wrap
        timed(discovery, "discover_set", "discovery + hashing")
        timed(status, "discover_set", "discovery + hashing")
        timed(runner, "apply_plan", "applying the files")
        timed(runs, "run_create", "console db: run row")
        timed(run_records.RunRecorder, "finish", "console db: final rows")
        timed(runs, "migrations_apply", "target: connect, lock, plan")

    django.setup = setup_and_wrap
    sys.argv = [MANAGE, *argv]
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "migration_console.settings")
    started = time.perf_counter()
    from django.conf import settings

    settings.INSTALLED_APPS  # noqa: B018 - loads the settings module, as manage.py would
    spent["settings"] = time.perf_counter() - started
    import runpy

    try:
        runpy.run_path(MANAGE, run_name="__main__")  # manage.py itself, its exit hooks too
    except SystemExit as exc:
        if exc.code:
            raise
    total = time.perf_counter() - started
    # Nested phases: discovery and the round trips are inside the status and the run.
    spent["target: connect, lock, plan"] -= (
        spent["applying the files"] + spent["discovery + hashing"]
    )
    inside = sum(v for k, v in spent.items() if k != "python start-up")
    spent["python start-up"] = marks["main"]
    spent["other"] = total - inside
    sys.stderr.write("BREAKDOWN " + json.dumps(spent) + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> dict:
    # Imported here: a child (one measured round) starts without the bench helpers.
    sys.path.insert(0, str(BENCH))
    from common import (
        PYTHON,
        bench_cluster,
        check,
        median,
        run_timed,
        save_results,
        table,
        write_create_table_files,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mc-bench-breakdown-"))
    rounds: list[dict[str, float]] = []
    walls: list[float] = []
    try:
        directory = workdir / "migrations"
        write_create_table_files(directory, args.n)
        with bench_cluster() as bench:
            for round_no in range(-1, args.rounds):  # round -1: discarded warm-up
                dbname = bench.create_database("breakdown")
                try:
                    command = [
                        PYTHON,
                        __file__,
                        "--child",
                        "migrate_sql",
                        "run",
                        "--yes",
                        "--path",
                        str(directory),
                    ]
                    timed = check(run_timed(command, env=bench.env(dbname)), "migrate_sql run")
                finally:
                    bench.drop_database(dbname)
                line = [ln for ln in timed.stderr.splitlines() if ln.startswith("BREAKDOWN ")]
                phases = json.loads(line[-1].split(" ", 1)[1])
                # Exit: the child's wall time (fork to reaped) minus what it measured.
                phases["exit"] = timed.wall - sum(phases.values())
                if round_no >= 0:
                    rounds.append(phases)
                    walls.append(timed.wall)
                print(f"  round {round_no + 1}: {timed.wall:.3f} s", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    medians = {name: median([r[name] for r in rounds]) for name, _ in PHASES}
    rows = [[name, f"{1000 * medians[name]:.0f} ms", what] for name, what in PHASES]
    rows.append(["total (wall, median)", f"{1000 * median(walls):.0f} ms", ""])
    print()
    print(f"migrate_sql run --yes, {args.n} files, median of {args.rounds} rounds")
    print(table(rows, ["phase", "time", "what"]))
    data = {"n": args.n, "rounds": rounds, "walls": walls, "median_seconds": medians}
    save_results("apply_breakdown", data)
    return data


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main()
