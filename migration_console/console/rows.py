"""Target status for pages that show many targets: each target is read on a thread
of its own, and a page waits for it only so long.

A target whose socket accepts but never answers would otherwise hold the whole
overview for the connect timeout (and every target after it). Here each target
has one reader thread, a page gives all of them one short budget together, and
a target that has not answered by then is shown as unknown and fetched again by
the page (``target_summary``). A read still under way is shared, not repeated, so
a hung target ties up one thread, never one per page view.
"""

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from time import monotonic

import psycopg

from migration_console.core.services.errors import MigrationConsoleError
from migration_console.core.services.status import TargetStatus, target_status
from migration_console.core.services.targets import Target

OVERVIEW_BUDGET_SECONDS = 0.4  # the whole overview page waits this long, for all targets
ROW_BUDGET_SECONDS = 4.0  # one row fetched by the page's script


class NoAnswer(MigrationConsoleError):
    http_status = 504
    error = "no answer"


_guard = threading.Lock()
_readers: dict[str, ThreadPoolExecutor] = {}
_inflight: dict[Target, Future] = {}
_pid = os.getpid()


def _reader(name: str) -> ThreadPoolExecutor:
    global _pid
    if _pid != os.getpid():  # a forked worker inherits no threads
        _readers.clear()
        _inflight.clear()
        _pid = os.getpid()
    reader = _readers.get(name)
    if reader is None:
        reader = _readers[name] = ThreadPoolExecutor(1, thread_name_prefix=f"status-{name}")
    return reader


def status_read(target: Target) -> Future:
    """The status of ``target`` as a future: the read under way, or a new one."""
    with _guard:
        future = _inflight.get(target)
        if future is None or future.done():
            future = _reader(target.name).submit(target_status, target)
            _inflight[target] = future
        return future


def status_result(future: Future, target: Target, seconds: float, budget: float) -> TargetStatus:
    """The status, or NoAnswer after ``seconds`` (``budget``: the wait the message
    names); a failed read raises as a MigrationConsoleError."""
    try:
        return future.result(timeout=max(seconds, 0))
    except FutureTimeout:
        raise NoAnswer(
            f"{target.name} ({target.display_dsn}) has not answered within {budget:g} s; "
            "still trying"
        ) from None
    except psycopg.Error as exc:  # a query error on a live session: still one row's problem
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise MigrationConsoleError(f"{target.name}: {message}") from None


def statuses_within(targets: list[Target], seconds: float) -> dict[str, object]:
    """Per target name: its TargetStatus, or the MigrationConsoleError that stands
    in for it (NoAnswer when it had not answered once ``seconds`` had passed)."""
    futures = {target.name: (target, status_read(target)) for target in targets}
    deadline = monotonic() + seconds
    found: dict[str, object] = {}
    for name, (target, future) in futures.items():
        try:
            found[name] = status_result(future, target, deadline - monotonic(), seconds)
        except MigrationConsoleError as exc:
            found[name] = exc
    return found
