"""Every benchmark, one after the other (``make bench``), then one summary table
against the goals of the Performance section; figures also land in
bench/results/*.json.

    python bench/run_all.py            # about 25 minutes on the 2-core machine
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
from common import machine, save_results, table  # noqa: E402


def ensure_yoyo() -> None:
    """yoyo-migrations is a bench-only dependency (the "bench" extra)."""
    if importlib.util.find_spec("yoyo") is None:
        print("bench: installing the bench extra (yoyo-migrations) ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{BENCH.parent}[bench]"],
            check=False,
        )


COLUMNS = ["benchmark", "goal", "measured (median)", "met?", "reproduce with"]


def yes(ok: bool) -> str:
    return "yes" if ok else "no"


def apply_rows(applied: dict, label: str, command: str) -> list[list[str]]:
    rows = []
    for r in applied["results"]:
        med = r["median_seconds"]
        figures = ", ".join(f"{tool} {med[tool]:.2f} s" for tool in applied["tools"])
        if r["n"] != 1000:
            rows.append([f"apply {r['n']} files{label}", "", figures, "", command])
            continue
        if "ours_over_psql" in r:
            ratio = r["ours_over_psql"]
            rows.append(
                [
                    f"apply 1,000 files{label}: ours / psql",
                    "<= 1.1x",
                    f"{ratio:.2f}x ({figures})",
                    yes(ratio <= 1.1),
                    command,
                ]
            )
        if "yoyo_over_ours" in r:
            ratio = r["yoyo_over_ours"]
            rows.append(
                [
                    f"apply 1,000 files{label}: yoyo / ours",
                    ">= 6x",
                    f"{ratio:.1f}x",
                    yes(ratio >= 6),
                    command,
                ]
            )
    return rows


def status_rows(status: dict) -> list[list[str]]:
    command = "bench/status_scale.py"
    rows = []
    for label in ("migrate_sql --status", "migrate_sql --status --json"):
        r = status["command"][label]
        rows.append(
            [
                f"{label}, 10,000 files (9,000 applied)",
                "< 0.4 s, < 100 MB",
                f"{r['median_seconds']:.2f} s, {r['max_rss_mb']:.0f} MiB",
                yes(r["median_seconds"] < 0.4 and r["max_rss_mb"] < 100),
                command,
            ]
        )
    if "first_seconds" in status:
        rows.append(
            [
                "  migrate_sql --status, first call (checksum cache empty)",
                "",
                f"{status['first_seconds']:.2f} s",
                "",
                command,
            ]
        )
    if "api" in status:
        api = status["api"]
        rows.append(
            [
                "GET status API, 10,000 files: first / warm",
                "",
                f"{api['first_seconds']:.2f} s / {1000 * api['warm_median_seconds']:.0f} ms",
                "",
                command,
            ]
        )
    return rows


def startup_rows(started: dict) -> list[list[str]]:
    results = started["results"]
    check = results["manage.py check"]["median_seconds"]
    rows = [["manage.py check", "< 0.5 s", f"{check:.2f} s", yes(check < 0.5), "bench/startup.py"]]
    for label in ("migrate_sql run, nothing to do",):
        if label in results:
            rows.append(
                [label, "", f"{results[label]['median_seconds']:.2f} s", "", "bench/startup.py"]
            )
    return rows


def api_rows(load: dict) -> list[list[str]]:
    rows = []
    for mode, r in load.get("modes", {"plain": load}).items():
        lat = r["wrk"]["latency_ms"]
        ok = lat["p99"] < 50 and r["errors"] == 0 and r["achieved_rate"] >= 0.97 * 200
        rows.append(
            [
                f"API status, 1,000 migrations, 200 req/s ({mode})",
                "p99 < 50 ms, 0 errors",
                f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms,"
                f" {r['achieved_rate']:.0f} req/s, {r['errors']} errors",
                yes(ok),
                f"bench/api_load.py --modes {mode}",
            ]
        )
    return rows


def goal_table_rows(goals: list[list[str]], prefix: str, command: str) -> list[list[str]]:
    """A benchmark's own goal checks (goal, target, measured, met?) as summary rows."""
    return [
        [f"{prefix}: {goal}", target, measured, met, command]
        for goal, target, measured, met in goals
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    ensure_yoyo()
    rounds = 3 if args.quick else 5
    rows = []

    print("== apply ==", flush=True)
    applied = apply.main(["-n", "1000", "--rounds", str(rounds)])
    rows += apply_rows(applied, "", "bench/apply.py -n 1000")

    print("\n== apply, fsync on ==", flush=True)
    durable = apply.main(["-n", "1000", "--rounds", str(rounds), "--durable"])
    rows += apply_rows(durable, " (fsync on)", "bench/apply.py -n 1000 --durable")

    print("\n== status at scale ==", flush=True)
    rows += status_rows(status_scale.main(["--rounds", str(rounds)]))

    print("\n== start-up ==", flush=True)
    rows += startup_rows(startup.main(["--rounds", "5" if args.quick else "15"]))

    print("\n== API load ==", flush=True)
    load = api_load.main(["--duration", "10" if args.quick else "30", "--modes", "plain,gzip,etag"])
    if load:
        rows += api_rows(load)

    print("\n== application latency during a blocked migration ==", flush=True)
    ddl = ddl_impact.main(["--quick"] if args.quick else [])
    rows += goal_table_rows([g for g in ddl["goals"] if g[3]], "DDL impact", "bench/ddl_impact.py")

    print("\n== fleets: tenant schemas, worker failover ==", flush=True)
    fleet_result = fleet.main(["--quick"] if args.quick else [])
    rows += goal_table_rows(fleet_result["goals"], "fleet", "bench/fleet.py")

    print()
    print(f"machine: {machine()}")
    print(table(rows, COLUMNS))
    save_results("summary", {"machine": machine(), "columns": COLUMNS, "rows": rows})
    markdown = BENCH / "results" / "summary.md"
    markdown.write_text(markdown_table(rows))
    print(f"bench: the same table as Markdown (for README.md) in {markdown}")
    return 0


def markdown_table(rows: list[list[str]]) -> str:
    def cell(text: str, column: int) -> str:
        text = str(text).replace("|", "\\|")
        return f"`{text}`" if column == len(COLUMNS) - 1 and text else text

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(c, i) for i, c in enumerate(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
