"""Status at scale: 10,000 migration files, 9,000 of them applied.

Wall time and peak RSS of ``migrate_sql --status`` (text and ``--json``), and
of ``GET /admin/migrations/status`` through gunicorn (first request after
start-up, then warm requests; peak RSS of the gunicorn workers).

    python bench/status_scale.py                  # 10,000 files, 9,000 applied, 7 rounds
    python bench/status_scale.py --files 2000 --applied 1500 --no-api
    python bench/status_scale.py --no-api --baseline /tmp/base   # before/after, alternating
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    MANAGE,
    PYTHON,
    ConsoleServer,
    baseline_manage,
    bench_cluster,
    check,
    median,
    rss_peak_mb,
    run_timed,
    save_results,
    seed_applied,
    table,
    write_create_table_files,
)


def bench_command(bench, dbname: str, directory: Path, rounds: int, manage: str = MANAGE) -> dict:
    results = {}
    for label, extra in (("migrate_sql --status", []), ("migrate_sql --status --json", ["--json"])):
        walls, rss = [], []
        for _ in range(rounds):
            args = [PYTHON, manage, "migrate_sql", "--status", "--path", str(directory), *extra]
            timed = check(run_timed(args, env=bench.env(dbname)), label)
            walls.append(timed.wall)
            rss.append(timed.max_rss_mb)
        if extra:
            data = json.loads(timed.stdout)
            print(
                f"  {label}: total {data['total']}, applied {data['applied_count']}, "
                f"pending {data['pending_count']}"
            )
        print(f"  {label}: median {median(walls):.3f} s, peak RSS {max(rss):.1f} MiB")
        results[label] = {"seconds": walls, "median_seconds": median(walls), "max_rss_mb": max(rss)}
    return results


def bench_command_against(
    bench, dbname: str, directory: Path, rounds: int, baseline: str
) -> tuple[dict, dict]:
    """Ours and the baseline's, one round each in turn (side by side on a busy machine)."""
    ours: dict = {}
    base: dict = {}
    for round_no in range(rounds):
        pair = [(ours, MANAGE), (base, baseline)]
        for results, manage in pair if round_no % 2 == 0 else reversed(pair):
            for label, r in bench_command(bench, dbname, directory, 1, manage).items():
                slot = results.setdefault(label, {"seconds": [], "rss": []})
                slot["seconds"] += r["seconds"]
                slot["rss"].append(r["max_rss_mb"])
    for results in (ours, base):
        for slot in results.values():
            slot["median_seconds"] = median(slot["seconds"])
            slot["max_rss_mb"] = max(slot.pop("rss"))
    return ours, base


def bench_api(bench, dbname: str, directory: Path, rounds: int) -> dict:
    server = ConsoleServer(bench, dbname, workers=1)
    try:
        path = "/admin/migrations/status"  # db_main, served from MIGRATIONS_PATH
        started = time.perf_counter()
        status, body = server.get(path)
        first = time.perf_counter() - started
        if status != 200:
            sys.exit(f"bench: status API answered {status}: {body[:500]!r}")
        data = json.loads(body)
        print(
            f"  API status: total {data['total']}, applied {data['applied_count']}, "
            f"{len(body) / 1e6:.1f} MB of JSON"
        )
        warm = []
        for _ in range(rounds):
            started = time.perf_counter()
            status, body = server.get(path)
            warm.append(time.perf_counter() - started)
            if status != 200:
                sys.exit(f"bench: status API answered {status}")
        worker_rss = max((rss_peak_mb(pid) for pid in server.worker_pids()), default=float("nan"))
        print(
            f"  API status: first {first:.3f} s, warm median {median(warm):.3f} s, "
            f"worker peak RSS {worker_rss:.1f} MiB"
        )
        return {
            "first_seconds": first,
            "warm_seconds": warm,
            "warm_median_seconds": median(warm),
            "worker_max_rss_mb": worker_rss,
            "response_bytes": len(body),
        }
    finally:
        server.close()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--applied", type=int, default=9_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-api", action="store_true", help="skip the gunicorn part")
    parser.add_argument("--baseline", help="another checkout: its command side by side")
    args = parser.parse_args(argv)
    base_manage = baseline_manage(args.baseline)
    workdir = Path(tempfile.mkdtemp(prefix="mc-bench-status-"))
    data: dict = {"files": args.files, "applied": args.applied}
    try:
        directory = workdir / "migrations"
        files = write_create_table_files(directory, args.files)
        with bench_cluster() as bench:
            dbname = "db_status"
            seed_applied(bench, dbname, files[: args.applied])
            # A checksum cache of its own, empty: the first call reads and hashes every
            # file (as in a fresh pod); the rounds after it find their checksums there.
            bench.extra_env = {"MIGRATION_CHECKSUM_CACHE_DIR": str(workdir / "cache")}
            time.sleep(2.1)  # files younger than 2 s are never cached (racy)
            args_first = [PYTHON, MANAGE, "migrate_sql", "--status", "--path", str(directory)]
            first = check(run_timed(args_first, env=bench.env(dbname)), "first --status")
            data["first_seconds"] = first.wall
            print(f"  migrate_sql --status, first call (checksum cache empty): {first.wall:.3f} s")
            if base_manage:
                data["command"], data["baseline_command"] = bench_command_against(
                    bench, dbname, directory, args.rounds, base_manage
                )
            else:
                data["command"] = bench_command(bench, dbname, directory, args.rounds)
            if not args.no_api:
                # The API serves the target's configured path: point MIGRATIONS_PATH at it.
                bench.extra_env = {**bench.extra_env, "MIGRATIONS_PATH": str(directory)}
                data["api"] = bench_api(bench, dbname, directory, args.rounds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = [
        ["migrate_sql --status, first call (cache empty)", f"{data['first_seconds']:.3f} s", ""]
    ]
    rows += [
        [label, f"{r['median_seconds']:.3f} s", f"{r['max_rss_mb']:.1f} MiB"]
        for label, r in data["command"].items()
    ]
    for label, r in data.get("baseline_command", {}).items():
        ratio = data["command"][label]["median_seconds"] / r["median_seconds"]
        rows.append(
            [
                f"{label} (baseline)",
                f"{r['median_seconds']:.3f} s (ours {ratio:.2f}x)",
                f"{r['max_rss_mb']:.1f} MiB",
            ]
        )
    if "api" in data:
        api = data["api"]
        rows.append(
            [
                "GET /admin/migrations/status (warm)",
                f"{api['warm_median_seconds']:.3f} s",
                f"{api['worker_max_rss_mb']:.1f} MiB (worker)",
            ]
        )
        rows.append(["GET /admin/migrations/status (first)", f"{api['first_seconds']:.3f} s", ""])
    print()
    print(f"{args.files} files, {args.applied} applied")
    print(table(rows, ["what", "wall (median)", "peak RSS"]))
    save_results("status_scale", data)
    return data


if __name__ == "__main__":
    main()
