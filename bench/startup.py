"""Start-up: wall time of ``python manage.py check`` (and of ``migrate_sql check``
on an up-to-date target), the fixed cost every command pays.

    python bench/startup.py            # 15 rounds
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    MANAGE,
    PYTHON,
    bench_cluster,
    check,
    median,
    run_timed,
    save_results,
    table,
    write_create_table_files,
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mc-bench-startup-"))
    results = {}
    try:
        directory = workdir / "migrations"
        write_create_table_files(directory, 10)
        with bench_cluster() as bench:
            bench.cluster.ensure_database("db_startup")
            env = bench.env("db_startup")
            check(
                run_timed(
                    [PYTHON, MANAGE, "migrate_sql", "run", "--yes", "--path", str(directory)],
                    env=env,
                ),
                "migrate_sql run",
            )
            commands = {
                "python -c pass": [PYTHON, "-c", "pass"],
                "manage.py check": [PYTHON, MANAGE, "check"],
                "migrate_sql check (10 applied)": [
                    PYTHON,
                    MANAGE,
                    "migrate_sql",
                    "check",
                    "--path",
                    str(directory),
                ],
            }
            for label, command in commands.items():
                walls, cpus, rss = [], [], []
                for _ in range(args.rounds):
                    timed = check(run_timed(command, env=env), label)
                    walls.append(timed.wall)
                    cpus.append(timed.cpu)
                    rss.append(timed.max_rss_mb)
                results[label] = {
                    "seconds": walls,
                    "median_seconds": median(walls),
                    "median_cpu_seconds": median(cpus),
                    "max_rss_mb": max(rss),
                }
                print(
                    f"  {label}: median {median(walls):.3f} s (cpu {median(cpus):.3f} s)",
                    flush=True,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = [
        [
            label,
            f"{r['median_seconds']:.3f} s",
            f"{r['median_cpu_seconds']:.3f} s",
            f"{r['max_rss_mb']:.1f} MiB",
        ]
        for label, r in results.items()
    ]
    print()
    print(table(rows, ["command", "wall (median)", "cpu (median)", "peak RSS"]))
    data = {"rounds": args.rounds, "results": results}
    save_results("startup", data)
    return data


if __name__ == "__main__":
    main()
