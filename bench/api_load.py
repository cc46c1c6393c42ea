"""API under load: ``GET /admin/migrations/status`` with 1,000 migrations (900
applied) through gunicorn (the project's gunicorn.conf.py, production settings,
Redis rate-limit cache), paced at 200 req/s for 30 s by wrk on loopback.

    python bench/api_load.py                         # 200 req/s, 30 s, 2 workers
    python bench/api_load.py --rate 100 --duration 10 --workers 2

Needs ``wrk`` (apt-get install wrk) and ``redis-server``; the read rate limit is
lifted through bench/bench_settings.py so the figure is latency, not 429s.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ConsoleServer,
    bench_cluster,
    rss_peak_mb,
    save_results,
    seed_applied,
    table,
    write_create_table_files,
)

STATUS_PATH = "/admin/migrations/status"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--applied", type=int, default=900)
    parser.add_argument("--rate", type=int, default=200, help="requests per second")
    parser.add_argument("--duration", type=int, default=30, help="seconds")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    args = parser.parse_args(argv)
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
    }
    try:
        directory = workdir / "migrations"
        files = write_create_table_files(directory, args.files)
        with bench_cluster() as bench:
            dbname = "db_api"
            seed_applied(bench, dbname, files[: args.applied])
            bench.extra_env = {"MIGRATIONS_PATH": str(directory)}
            server = ConsoleServer(bench, dbname, workers=args.workers)
            try:
                status, body = server.get(STATUS_PATH)
                if status != 200:
                    sys.exit(f"bench: status API answered {status}: {body[:300]!r}")
                answer = json.loads(body)
                print(
                    f"  status API: total {answer['total']}, applied "
                    f"{answer['applied_count']}, {len(body) / 1e3:.0f} kB per response"
                )
                data["response_bytes"] = len(body)
                # Warm every worker (imports, connections, discovery cache) before timing.
                for _ in range(4 * args.workers):
                    server.get(STATUS_PATH)
                print(
                    f"  wrk: {args.rate} req/s for {args.duration} s, "
                    f"{args.connections} connections ...",
                    flush=True,
                )
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
                data["worker_max_rss_mb"] = max(
                    (rss_peak_mb(pid) for pid in server.worker_pids()), default=float("nan")
                )
            finally:
                server.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    errors = sum(v for k, v in figures.items() if k.startswith("errors_"))
    achieved = figures["requests"] / (figures["duration_us"] / 1e6)
    data.update(wrk=figures, errors=errors, achieved_rate=achieved)
    lat = figures["latency_ms"]
    print()
    print(
        table(
            [
                [
                    f"{achieved:.0f} req/s",
                    f"{lat['p50']:.1f} ms",
                    f"{lat['p90']:.1f} ms",
                    f"{lat['p99']:.1f} ms",
                    f"{lat['max']:.1f} ms",
                    str(errors),
                    f"{data['worker_max_rss_mb']:.0f} MiB",
                ]
            ],
            ["achieved", "p50", "p90", "p99", "max", "errors", "worker RSS"],
        )
    )
    save_results("api_load", data)
    return data


if __name__ == "__main__":
    main()
