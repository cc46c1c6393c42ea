"""API under load: ``GET /admin/migrations/status`` with 1,000 migrations (900
applied) through gunicorn (the project's gunicorn.conf.py, production settings,
Redis rate-limit cache), paced at 200 req/s for 30 s by wrk on loopback.

    python bench/api_load.py                         # 200 req/s, 30 s, 2 workers
    python bench/api_load.py --rate 100 --duration 10 --workers 2
    python bench/api_load.py --modes plain,gzip,etag # each kind of client in turn
    python bench/api_load.py --baseline /tmp/base    # also serve another checkout, in turn

Modes: ``plain`` (no Accept-Encoding: the whole JSON every time), ``gzip``
(``Accept-Encoding: gzip``), ``etag`` (a poller sending back the ETag it got in
``If-None-Match``: a bodiless 304 while nothing changes).

Needs ``wrk`` (apt-get install wrk) and ``redis-server``; the read rate limit is
lifted through bench/bench_settings.py so the figure is latency, not 429s.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ROOT,
    ConsoleServer,
    baseline_manage,
    bench_cluster,
    cpu_seconds,
    rss_peak_mb,
    save_results,
    seed_applied,
    table,
    write_create_table_files,
)

STATUS_PATH = "/admin/migrations/status"
MODES = ("plain", "gzip", "etag")


def etag_of(server: ConsoleServer) -> str:
    request = urllib.request.Request(server.base + STATUS_PATH)
    request.add_header("Authorization", f"Bearer {server.token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers.get("ETag", "")


def run_wrk(wrk: str, server: ConsoleServer, args, headers: list[str]) -> dict:
    extra = [item for header in headers for item in ("-H", header)]
    run = subprocess.run(
        [
            wrk,
            "-t",
            str(args.threads),
            "-c",
            str(args.connections),
            "-d",
            f"{args.duration}s",
            "--timeout",
            "5s",
            "-H",
            f"Authorization: Bearer {server.token}",
            *extra,
            "-s",
            str(Path(__file__).with_name("wrk_pace.lua")),
            server.base + STATUS_PATH,
            "--",
            str(args.rate),
            str(args.threads),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = [ln for ln in run.stdout.splitlines() if ln.startswith("{")][-1]
    figures = json.loads(line)
    errors = sum(v for k, v in figures.items() if k.startswith("errors_"))
    achieved = figures["requests"] / (figures["duration_us"] / 1e6)
    return {"wrk": figures, "errors": errors, "achieved_rate": achieved}


def load_one(bench, dbname: str, root: Path, args, modes: list[str], wrk: str, data: dict) -> dict:
    """Serve ``root``'s console and load it once per mode; each mode's figures, with
    the gunicorn workers' CPU per request (steadier than latency on a busy machine)."""
    results: dict = {}
    server = ConsoleServer(bench, dbname, workers=args.workers, root=root)
    try:
        status, body = server.get(STATUS_PATH)
        if status != 200:
            sys.exit(f"bench: status API answered {status}: {body[:300]!r}")
        answer = json.loads(body)
        print(
            f"  status API ({root}): total {answer['total']}, applied "
            f"{answer['applied_count']}, {len(body) / 1e3:.0f} kB per response"
        )
        data["response_bytes"] = len(body)
        # Warm every worker (imports, connections, discovery cache) before timing.
        for _ in range(4 * args.workers):
            server.get(STATUS_PATH)
        for mode in modes:
            headers = []
            if mode == "gzip":
                headers.append("Accept-Encoding: gzip")
            elif mode == "etag":
                headers.append(f"If-None-Match: {etag_of(server)}")
            print(
                f"  wrk ({mode}): {args.rate} req/s for {args.duration} s, "
                f"{args.connections} connections ...",
                flush=True,
            )
            pids = server.worker_pids()
            cpu_before = sum(cpu_seconds(pid) for pid in pids)
            result = run_wrk(wrk, server, args, headers)
            cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
            result["worker_cpu_ms_per_request"] = 1000 * cpu / max(1, result["wrk"]["requests"])
            results[mode] = result
        data["worker_max_rss_mb"] = max(
            (rss_peak_mb(pid) for pid in server.worker_pids()), default=float("nan")
        )
    finally:
        server.close()
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--applied", type=int, default=900)
    parser.add_argument("--rate", type=int, default=200, help="requests per second")
    parser.add_argument("--duration", type=int, default=30, help="seconds")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--modes", default="plain", help=f"comma list of {', '.join(MODES)}")
    parser.add_argument("--baseline", help="another checkout: served and loaded after ours")
    args = parser.parse_args(argv)
    roots = {"ours": ROOT}
    if args.baseline:
        roots["baseline"] = Path(baseline_manage(args.baseline)).parent
    modes = [mode for mode in args.modes.split(",") if mode]
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes takes a comma list of {', '.join(MODES)}")
    wrk = shutil.which("wrk")
    if not wrk:
        print("bench: wrk not found (apt-get install wrk); skipping the API load benchmark")
        return {}
    workdir = Path(tempfile.mkdtemp(prefix="mc-bench-api-"))
    data: dict = {
        "files": args.files,
        "applied": args.applied,
        "rate": args.rate,
        "duration": args.duration,
        "connections": args.connections,
        "workers": args.workers,
        "modes": {},
    }
    try:
        directory = workdir / "migrations"
        files = write_create_table_files(directory, args.files)
        with bench_cluster() as bench:
            dbname = "db_api"
            seed_applied(bench, dbname, files[: args.applied])
            bench.extra_env = {"MIGRATIONS_PATH": str(directory)}
            for side, root in roots.items():
                if side == "ours":
                    data["modes"] = load_one(bench, dbname, root, args, modes, wrk, data)
                else:  # an older checkout may know neither ETags nor gzip
                    data["baseline_modes"] = load_one(
                        bench, dbname, root, args, ["plain"], wrk, data
                    )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # The first mode's figures also sit at the top level, where run_all.py reads them.
    data.update(data["modes"][modes[0]])
    rows = []
    sides = [("", data["modes"])]
    if "baseline_modes" in data:
        sides.append(("baseline ", data["baseline_modes"]))
    for prefix, side in sides:
        for mode, result in side.items():
            rows.append(_row(prefix + mode, result))
    print()
    header = ["mode", "achieved", "p50", "p90", "p99", "max", "errors", "bytes/answer", "cpu/req"]
    print(table(rows, header))
    print(f"worker peak RSS {data['worker_max_rss_mb']:.0f} MiB")
    save_results("api_load", data)
    return data


def _row(label: str, result: dict) -> list[str]:
    lat = result["wrk"]["latency_ms"]
    per_answer = result["wrk"]["bytes"] / max(1, result["wrk"]["requests"])
    return [
        label,
        f"{result['achieved_rate']:.0f} req/s",
        f"{lat['p50']:.1f} ms",
        f"{lat['p90']:.1f} ms",
        f"{lat['p99']:.1f} ms",
        f"{lat['max']:.1f} ms",
        str(result["errors"]),
        f"{per_answer / 1e3:.1f} kB",
        f"{result['worker_cpu_ms_per_request']:.2f} ms",
    ]


if __name__ == "__main__":
    main()
