"""Groups on the overview: each group's status read on a thread of its own (one
connection per group, ~0.5 s for a query group of 1,000 schemas), so the overview
waits for all of them only within its short budget and a group that is slower is
shown "loading" and fetched by the page's script (``group_summary``), as target
rows are (console/rows.py). A read under way is shared, never repeated."""

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from time import monotonic

import psycopg
from django.template.loader import render_to_string
from django.urls import reverse

from migration_console.console.rows import OVERVIEW_BUDGET_SECONDS, NoAnswer
from migration_console.console.words import state_word, when
from migration_console.core.models import Run
from migration_console.core.services.errors import MigrationConsoleError
from migration_console.core.services.groups import (
    MemberSummary,
    group_get,
    group_names,
    group_status,
)
from migration_console.target_groups import GroupConfig

_guard = threading.Lock()
_readers: dict[str, ThreadPoolExecutor] = {}
_inflight: dict[str, Future] = {}
_pid = os.getpid()


def _read(group: GroupConfig) -> list[MemberSummary]:
    try:
        return group_status(group)
    except psycopg.Error as exc:  # a query error on a live session: this group's problem
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise MigrationConsoleError(f"group {group.name}: {message}") from None
    finally:
        from django.db import connections

        connections.close_all()  # a reader thread keeps no console connection open


def group_read(group: GroupConfig) -> Future:
    """The status of ``group`` as a future: the read under way, or a new one."""
    global _pid
    with _guard:
        if _pid != os.getpid():  # a forked worker inherits no threads
            _readers.clear()
            _inflight.clear()
            _pid = os.getpid()
        future = _inflight.get(group.name)
        if future is None or future.done():
            reader = _readers.get(group.name)
            if reader is None:
                reader = _readers[group.name] = ThreadPoolExecutor(
                    1, thread_name_prefix=f"group-{group.name}"
                )
            future = _inflight[group.name] = reader.submit(_read, group)
        return future


def group_result(future: Future, group: GroupConfig, seconds: float, budget: float):
    """The members' summaries, or the MigrationConsoleError standing in for them
    (NoAnswer once ``seconds`` have passed)."""
    try:
        return future.result(timeout=max(seconds, 0))
    except FutureTimeout:
        return NoAnswer(f"group {group.name} has not answered within {budget:g} s; still trying")
    except MigrationConsoleError as exc:
        return exc


def needs_attention(member: dict) -> bool:
    """A member someone must look at: a failed or drifted migration, a problem with
    the files, or a schema that could not be read. Pending alone is normal."""
    return bool(member["failed_count"] or member["drifted_count"] or member["problems"])


@dataclass
class GroupReads:
    started: float
    reads: list[tuple[GroupConfig, Future]]


def group_reads_start() -> GroupReads:
    """Start reading every group now, so that the reads overlap the targets' own."""
    groups = [group_get(name) for name in group_names()]
    return GroupReads(monotonic(), [(group, group_read(group)) for group in groups])


def group_rows_within(request, reads: GroupReads, budget: float = OVERVIEW_BUDGET_SECONDS):
    """One overview row per group, waiting at most until ``budget`` seconds after the
    reads started."""
    deadline = reads.started + budget
    return [
        group_row(request, group, group_result(future, group, deadline - monotonic(), budget))
        for group, future in reads.reads
    ]


def group_row(request, group: GroupConfig, found, *, with_html: bool = False) -> dict:
    known = isinstance(found, list)
    members = [summary.as_dict() for summary in found] if known else []
    attention = sum(1 for member in members if needs_attention(member))
    row = {
        "name": group.name,
        "kind": "schemas found by a query" if group.schemas_query else "targets",
        "known": known,
        "still_trying": isinstance(found, NoAnswer),
        "error": None if known else found.message,
        "summary_url": reverse("console:group-summary", args=[group.name]),
        "url": reverse("console:group", args=[group.name]),
        "members": len(members) if known else None,
        "attention_members": attention if known else None,
        "pending_members": sum(1 for m in members if m["pending_count"]) if known else None,
        "attention": not known or attention > 0,
    }
    row["attention_url"] = row["url"] + "?state=attention"
    last = Run.objects.filter(target=group.name, parent__isnull=True).first()
    row["last_run"] = (
        {
            "id": last.pk,
            "url": reverse("console:run-progress", args=[last.pk]),
            "state": last.state,
            "label": state_word(last.state),
            "requested_by": last.requested_by,
            "created_at": when(last.created_at),
        }
        if last
        else None
    )
    if with_html:
        row["row_html"] = render_to_string(
            "console/includes/group_row.html", {"g": row}, request=request
        )
    return row
