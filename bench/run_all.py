"""Every benchmark, one after the other (``make bench``), then one summary table
against the goals of the Performance section; figures also land in
bench/results/*.json.

    python bench/run_all.py            # about 20 minutes on the 2-core machine
    python bench/run_all.py --quick    # fewer rounds, shorter load: a smoke run
"""

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import api_load  # noqa: E402
import apply  # noqa: E402
import ddl_impact  # noqa: E402
import fleet  # noqa: E402
import startup  # noqa: E402
import status_scale  # noqa: E402
from common import machine, median, save_results, table  # noqa: E402


def ensure_yoyo() -> None:
    """yoyo-migrations is a bench-only dependency (the "bench" extra)."""
    if importlib.util.find_spec("yoyo") is None:
        print("bench: installing the bench extra (yoyo-migrations) ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{BENCH.parent}[bench]"],
            check=False,
        )


def ddl_rows(ddl: dict) -> list[list[str]]:
    """The DDL benchmark's scenarios and its goal checks, as summary rows."""
    rows = []
    for scenario in ddl["scenarios"]:
        runs = ddl["results"][scenario]
        med = lambda key, runs=runs: median([r[key] for r in runs])  # noqa: E731
        rows.append(
            [
                f"blocked ALTER, {ddl['rate']:.0f} q/s app load: {scenario}",
                "",
                f"max {med('max_latency'):.2f} s, p99 {1000 * med('p99_latency'):.0f} ms,"
                f" stall {med('stall_seconds'):.1f} s, done"
                f" {med('done_after_blocker'):+.1f} s after the blocker",
            ]
        )
    for goal, target, measured, met in ddl["goals"]:
        rows.append([f"  {goal}", target, f"{measured} {met}".strip()])
    return rows


def fleet_rows(result: dict) -> list[list[str]]:
    """The fleet benchmark's runs and its goal checks, as summary rows."""
    n = result["schemas"]
    rows = [
        [
            f"fleet of {n} schemas x 10 files: CLI --parallel {r['parallel']}",
            "",
            f"{r['seconds']:.1f} s",
        ]
        for r in result["cli"]
    ]
    loop = result["loop"]
    rows.append(
        [
            f"  shell loop of migrate_sql run, extrapolated to {n}",
            "",
            f"{loop['extrapolated_seconds']:.0f} s ({loop['per_member_seconds']:.2f} s each)",
        ]
    )
    rows.append(
        ["  2 workers, until the parent settles", "", f"{result['workers']['seconds']:.1f} s"]
    )
    for goal, target, measured, met in result["goals"]:
        rows.append([f"  {goal}", target, f"{measured} {met}"])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    ensure_yoyo()
    rounds = 3 if args.quick else 7
    rows = []

    print("== apply ==", flush=True)
    applied = apply.main(["-n", "100", "-n", "1000", "--rounds", str(rounds)])
    for r in applied["results"]:
        med = r["median_seconds"]
        for tool in applied["tools"]:
            rows.append([f"apply {r['n']}: {tool}", "", f"{med[tool]:.3f} s"])
        if "ours_over_psql" in r:
            goal = "<= 1.1x" if r["n"] == 1000 else ""
            rows.append([f"apply {r['n']}: ours / psql", goal, f"{r['ours_over_psql']:.2f}x"])
        if "yoyo_over_ours" in r:
            goal = ">= 6x" if r["n"] == 1000 else ""
            rows.append([f"apply {r['n']}: yoyo / ours", goal, f"{r['yoyo_over_ours']:.1f}x"])

    print("\n== apply, fsync on ==", flush=True)
    durable = apply.main(["-n", "1000", "--rounds", str(max(3, rounds - 2)), "--durable"])
    for r in durable["results"]:
        med = r["median_seconds"]
        for tool in durable["tools"]:
            rows.append([f"apply {r['n']} (fsync on): {tool}", "", f"{med[tool]:.3f} s"])
        if "ours_over_psql" in r:
            rows.append(
                [
                    f"apply {r['n']} (fsync on): ours / psql",
                    "<= 1.1x",
                    f"{r['ours_over_psql']:.2f}x",
                ]
            )
        if "yoyo_over_ours" in r:
            rows.append(
                [f"apply {r['n']} (fsync on): yoyo / ours", ">= 6x", f"{r['yoyo_over_ours']:.1f}x"]
            )

    print("\n== status at scale ==", flush=True)
    status = status_scale.main(["--rounds", str(rounds)])
    text = status["command"]["migrate_sql --status"]
    rows.append(
        [
            "migrate_sql --status, 10,000 files (9,000 applied)",
            "< 0.4 s",
            f"{text['median_seconds']:.3f} s",
        ]
    )
    rows.append(["  its peak RSS", "< 100 MB", f"{text['max_rss_mb']:.0f} MiB"])
    if "api" in status:
        rows.append(
            [
                "GET status API, 10,000 files (warm)",
                "",
                f"{status['api']['warm_median_seconds']:.3f} s",
            ]
        )

    print("\n== start-up ==", flush=True)
    started = startup.main(["--rounds", "5" if args.quick else "15"])
    check = started["results"]["manage.py check"]
    rows.append(["manage.py check", "< 0.5 s", f"{check['median_seconds']:.3f} s"])

    print("\n== API load ==", flush=True)
    load = api_load.main(["--duration", "10" if args.quick else "30"])
    if load:
        lat = load["wrk"]["latency_ms"]
        rows.append(["API status, 1,000 migrations, 200 req/s: p50", "", f"{lat['p50']:.1f} ms"])
        rows.append(["  p99", "< 50 ms", f"{lat['p99']:.1f} ms"])
        rows.append(
            [
                "  achieved rate / errors",
                "200 req/s / 0",
                f"{load['achieved_rate']:.0f} req/s / {load['errors']}",
            ]
        )

    print("\n== application latency during a blocked migration ==", flush=True)
    rows.extend(ddl_rows(ddl_impact.main(["--quick"] if args.quick else [])))

    print("\n== fleets: tenant schemas ==", flush=True)
    rows.extend(fleet_rows(fleet.main(["--quick"] if args.quick else [])))

    print()
    print(f"machine: {machine()}")
    print(table(rows, ["metric", "goal", "measured (median)"]))
    save_results("summary", {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
