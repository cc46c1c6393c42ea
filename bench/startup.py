"""Start-up: wall time of ``python manage.py check`` and of ``migrate_sql check`` /
``migrate_sql run`` on an up-to-date target, the fixed cost every command pays.

    python bench/startup.py                            # 15 rounds
    python bench/startup.py --baseline /tmp/base       # before/after, alternating

With ``--baseline DIR`` (another checkout of the project) every command also runs
from that checkout, in alternation with this one, and the table shows both medians
and their ratio: on a shared machine only a side-by-side figure means anything.
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
    baseline_manage,
    bench_cluster,
    check,
    median,
    run_timed,
    save_results,
    table,
    write_create_table_files,
)


def commands(manage: str, directory: Path) -> dict[str, list[str]]:
    return {
        "manage.py check": [PYTHON, manage, "check"],
        "migrate_sql check (10 applied)": [
            PYTHON,
            manage,
            "migrate_sql",
            "check",
            "--path",
            str(directory),
        ],
        "migrate_sql run, nothing to do": [
            PYTHON,
            manage,
            "migrate_sql",
            "run",
            "--yes",
            "--path",
            str(directory),
        ],
    }


def summary(walls: list[float], cpus: list[float], rss: list[float]) -> dict:
    return {
        "seconds": walls,
        "median_seconds": median(walls),
        "median_cpu_seconds": median(cpus),
        "max_rss_mb": max(rss),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--baseline", help="another checkout to compare with, side by side")
    args = parser.parse_args(argv)
    base_manage = baseline_manage(args.baseline)
    workdir = Path(tempfile.mkdtemp(prefix="mc-bench-startup-"))
    results: dict = {}
    baseline: dict = {}
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
            variants = {"ours": commands(MANAGE, directory)}
            if base_manage:
                variants["baseline"] = commands(base_manage, directory)
            labels = ["python -c pass", *variants["ours"]]
            for label in labels:
                samples = {name: ([], [], []) for name in variants}
                for round_no in range(args.rounds):
                    # Alternate which side goes first: neither always gets the warmer cache.
                    order = list(variants) if round_no % 2 == 0 else list(reversed(variants))
                    for name in order:
                        command = (
                            [PYTHON, "-c", "pass"]
                            if label == "python -c pass"
                            else variants[name][label]
                        )
                        timed = check(run_timed(command, env=env), f"{name}: {label}")
                        for values, value in zip(
                            samples[name], (timed.wall, timed.cpu, timed.max_rss_mb), strict=True
                        ):
                            values.append(value)
                results[label] = summary(*samples["ours"])
                line = (
                    f"  {label}: median {results[label]['median_seconds']:.3f} s "
                    f"(cpu {results[label]['median_cpu_seconds']:.3f} s)"
                )
                if base_manage:
                    baseline[label] = summary(*samples["baseline"])
                    line += (
                        f"; baseline {baseline[label]['median_seconds']:.3f} s "
                        f"(cpu {baseline[label]['median_cpu_seconds']:.3f} s)"
                    )
                print(line, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = []
    for label, r in results.items():
        row = [
            label,
            f"{r['median_seconds']:.3f} s",
            f"{r['median_cpu_seconds']:.3f} s",
            f"{r['max_rss_mb']:.1f} MiB",
        ]
        if baseline:
            b = baseline[label]
            row += [
                f"{b['median_seconds']:.3f} s",
                f"{b['median_cpu_seconds']:.3f} s",
                f"{r['median_seconds'] / b['median_seconds']:.2f}x",
            ]
        rows.append(row)
    header = ["command", "wall (median)", "cpu (median)", "peak RSS"]
    if baseline:
        header += ["baseline wall", "baseline cpu", "ours/baseline"]
    print()
    print(table(rows, header))
    data = {"rounds": args.rounds, "results": results}
    if baseline:
        data.update(baseline=baseline, baseline_dir=args.baseline)
    save_results("startup", data)
    return data


if __name__ == "__main__":
    main()
