"""Presentation helpers shared by the command, the console and the API."""


def format_duration(ns: int | None) -> str:
    if ns is None:
        return ""
    if ns < 1_000_000:
        return f"{ns / 1000:.0f}µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.1f}ms"
    if ns < 60_000_000_000:
        return f"{ns / 1_000_000_000:.2f}s"
    minutes, seconds = divmod(ns / 1_000_000_000, 60)
    return f"{int(minutes)}m{seconds:04.1f}s"


STATE_MARKS = {
    "completed": "APPLIED",
    "pending": "PENDING",
    "failed": "FAILED",
    "drifted": "DRIFTED",
    "missing": "MISSING",
    "out_of_order": "OUT-OF-ORDER",
}
