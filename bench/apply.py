"""Apply throughput: ``migrate_sql run --yes`` vs the psql limit vs yoyo-migrations.

N one-statement migrations (``CREATE TABLE t_i (id int)``), each tool on a
fresh database, tools alternating, several rounds; prints medians and the
ratios ours/psql and yoyo/ours. Wall time of the whole process, so Python and
Django start-up count.

    python bench/apply.py                 # N = 100 and 1000, 5 rounds
    python bench/apply.py -n 1000 --rounds 3 --tools ours,psql
    python bench/apply.py -n 1000 --baseline /tmp/base   # adds "base": ours from another checkout
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
    TRACKING_DDL,
    baseline_manage,
    bench_cluster,
    check,
    checksum,
    file_version_name,
    median,
    psql_bin,
    run_timed,
    save_results,
    table,
    write_create_table_files,
)

TOOLS = ("ours", "psql", "yoyo")


def yoyo_bin() -> str | None:
    found = Path(PYTHON).with_name("yoyo")
    return str(found) if found.exists() else shutil.which("yoyo")


def psql_script(files: list[Path], path: Path) -> Path:
    """One session: per file BEGIN; <file>; tracking insert; COMMIT."""
    parts = [TRACKING_DDL + ";\n"]
    for file in files:
        version, name = file_version_name(file)
        parts.append(
            f"BEGIN;\n{file.read_text()}\nINSERT INTO public.schema_migrations"
            " (version, name, checksum, status, applied_at, duration_ns, applied_by)"
            f" VALUES ('{version}', '{name}', '{checksum(file)}', 'completed',"
            " clock_timestamp(), 0, 'bench');\nCOMMIT;\n"
        )
    path.write_text("".join(parts))
    return path


BASELINE: dict[str, str] = {}  # "manage": manage.py of the --baseline checkout


def run_tool(tool: str, bench, dbname: str, directory: Path, script: Path):
    if tool in ("ours", "base"):
        manage = MANAGE if tool == "ours" else BASELINE["manage"]
        args = [PYTHON, manage, "migrate_sql", "run", "--yes", "--path", str(directory)]
        return run_timed(args, env=bench.env(dbname))
    if tool == "psql":
        args = [
            psql_bin(),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            bench.dsn(dbname),
            "-f",
            str(script),
        ]
        return run_timed(args)
    socket_dir, port = bench.cluster.socket_dir, bench.cluster.port
    uri = f"postgresql+psycopg://postgres@/{dbname}?host={socket_dir}&port={port}"
    args = [yoyo_bin(), "apply", "--batch", "--no-config-file", "--database", uri, str(directory)]
    return run_timed(args)


def verify(bench, dbname: str, tool: str, count: int) -> None:
    with bench.connect(dbname) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename ~ '^t_'"
        ).fetchone()[0]
    if tables != count:
        sys.exit(f"bench: {tool} created {tables} tables, expected {count}")


def bench_apply(bench, count: int, rounds: int, tools: list[str]) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="mc-bench-apply-"))
    try:
        files = write_create_table_files(workdir / "migrations", count)
        script = psql_script(files, workdir / "all.sql")
        times: dict[str, list[float]] = {tool: [] for tool in tools}
        rss: dict[str, list[float]] = {tool: [] for tool in tools}
        # Round 0 is a discarded warm-up per tool (page cache, WAL segments, catalog).
        for round_no in range(-1, rounds):
            order = tools[round_no % len(tools) :] + tools[: round_no % len(tools)]
            for tool in order:
                dbname = bench.create_database(f"apply_{tool}")
                try:
                    timed = check(
                        run_tool(tool, bench, dbname, workdir / "migrations", script),
                        f"{tool} apply of {count}",
                    )
                    verify(bench, dbname, tool, count)
                finally:
                    bench.drop_database(dbname)
                label = "warm-up" if round_no < 0 else f"round {round_no + 1}/{rounds}"
                print(
                    f"  n={count} {label} {tool:<5} "
                    f"{timed.wall:7.3f} s  {timed.max_rss_mb:6.1f} MiB",
                    flush=True,
                )
                if round_no >= 0:
                    times[tool].append(timed.wall)
                    rss[tool].append(timed.max_rss_mb)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    medians = {tool: median(values) for tool, values in times.items()}
    result = {
        "n": count,
        "rounds": rounds,
        "seconds": times,
        "max_rss_mb": rss,
        "median_seconds": medians,
    }
    if "ours" in medians and "psql" in medians:
        result["ours_over_psql"] = medians["ours"] / medians["psql"]
    if "ours" in medians and "yoyo" in medians:
        result["yoyo_over_ours"] = medians["yoyo"] / medians["ours"]
    if "ours" in medians and "base" in medians:
        result["ours_over_base"] = medians["ours"] / medians["base"]
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, action="append", help="migrations per run (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument(
        "--durable",
        action="store_true",
        help="fsync, synchronous_commit and full_page_writes on (default: off, as in tests)",
    )
    parser.add_argument(
        "--baseline", help="another checkout: adds tool 'base' (its migrate_sql), side by side"
    )
    args = parser.parse_args(argv)
    counts = args.n or [100, 1000]
    tools = [t for t in args.tools.split(",") if t]
    if args.baseline:
        BASELINE["manage"] = baseline_manage(args.baseline)
        if "base" not in tools:
            tools.append("base")
    if "yoyo" in tools and not yoyo_bin():
        print("bench: yoyo-migrations is not installed (pip install -e '.[bench]'); skipping it")
        tools.remove("yoyo")
    results = []
    with bench_cluster() as bench:
        if args.durable:
            bench.make_durable()
        for count in counts:
            results.append(bench_apply(bench, count, args.rounds, tools))
    rows = []
    for r in results:
        med = r["median_seconds"]
        rows.append(
            [
                str(r["n"]),
                *(f"{med[t]:.3f} s" for t in tools),
                f"{r['ours_over_psql']:.2f}x" if "ours_over_psql" in r else "-",
                f"{r['yoyo_over_ours']:.1f}x" if "yoyo_over_ours" in r else "-",
                f"{r['ours_over_base']:.2f}x" if "ours_over_base" in r else "-",
            ]
        )
    print()
    print(table(rows, ["N", *tools, "ours/psql", "yoyo/ours", "ours/base"]))
    data = {"tools": tools, "durable": args.durable, "results": results}
    save_results("apply_durable" if args.durable else "apply", data)
    return data


if __name__ == "__main__":
    main()
