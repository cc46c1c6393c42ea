"""Writing a run's final records (``RunRecorder``) to the console database, which
may be away.

The target's tracking table is the truth; the console's Run and audit rows follow
it. When the console database does not answer at the end of a run (a restart, a
failover), the rows are retried for ``MIGRATION_RECORD_RETRY_SECONDS`` (default
60); failing that the audit line goes to stderr as JSON, so the CI log or the
Kubernetes Job's log still holds who did what, and the run's exit code stays the
target's.
"""

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.audit import audit_record
from migration_console.core.services.caller import Caller
from migration_console.core.services.errors import MigrationConsoleError
from migration_console.core.services.runner import RUN_TAG
from migration_console.core.services.targets import Target, target_connect
from migration_console.ops.webhook import notify_run_finished

logger = logging.getLogger("migration_console.runs")

RECORD_RETRY_SECONDS = 60.0
FIRST_PAUSE_SECONDS = 0.5
LONGEST_PAUSE_SECONDS = 5.0
# The console database is away (or the connection to it broke); anything else
# (a constraint, a bug) would fail again the same way.
CONNECTION_ERRORS = (OperationalError, InterfaceError)


def record_retry_seconds() -> float:
    return float(getattr(settings, "MIGRATION_RECORD_RETRY_SECONDS", RECORD_RETRY_SECONDS))


def console_connection_reset() -> None:
    """Drop this thread's console connection: Django keeps using a connection that a
    server restart broke, so only a fresh one lets the next query succeed."""
    with contextlib.suppress(Exception):
        connection.close()


def describe(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def write_with_retry(
    write: Callable[[int], None],
    *,
    what: str,
    retry_seconds: float | None = None,
    on_first_failure: Callable[[], None] | None = None,
) -> bool:
    """Call ``write(attempt)`` until it succeeds, retrying connection errors with
    backoff for ``retry_seconds`` (default: the setting). True when it succeeded."""
    window = record_retry_seconds() if retry_seconds is None else retry_seconds
    deadline = time.monotonic() + window
    pause = FIRST_PAUSE_SECONDS
    attempt = 0
    while True:
        try:
            write(attempt)
        except CONNECTION_ERRORS as exc:
            console_connection_reset()
            if attempt == 0:
                logger.warning(
                    "console database unreachable while recording %s (%s); retrying for %ss",
                    what,
                    describe(exc),
                    f"{window:g}",
                )
                if on_first_failure is not None:
                    on_first_failure()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.error("gave up recording %s: %s", what, describe(exc))
                return False
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, LONGEST_PAUSE_SECONDS)
            attempt += 1
            continue
        except DatabaseError as exc:
            console_connection_reset()
            logger.error("could not record %s: %s", what, describe(exc))
            return False
        if attempt:
            logger.info("recorded %s after %s retries", what, attempt)
        return True


def audit_line_emit(
    *,
    caller,
    action: str,
    outcome: str,
    target: str,
    migrations: list[str],
    message: str,
    run_id: int | None,
) -> None:
    """The audit row that could not be written, as one JSON line on stderr."""
    entry = {
        "audit": "not recorded in the console database",
        "at": timezone.now().isoformat(),
        "who": caller.actor,
        "channel": caller.channel,
        "client_ip": caller.client_ip,
        "action": action,
        "target": target,
        "outcome": outcome,
        "migrations": list(migrations),
        "message": message,
        "run": run_id,
    }
    sys.stderr.write(json.dumps(entry, default=str) + "\n")
    sys.stderr.flush()


class RunRecorder:
    """Writes a run's final Run row and its one audit row, whatever the console
    database does meanwhile."""

    def __init__(self, run: Run, caller: Caller, target_name: str):
        self.run = run
        self.caller = caller
        self.target_name = target_name
        # Set once the target may be worked on: from then on the records are retried
        # rather than the run failed for them.
        self.target: Target | None = None

    def finish(
        self, state: str, outcome: str, message: str, migrations: list[str] | None = None
    ) -> None:
        run = self.run
        if migrations is None:  # an error mid-way: the files it got through
            migrations = [step["version"] for step in run.steps if step.get("version")]
        if run.backup_file:
            message = f"{message}; backup {run.backup_file}"
        if run.break_glass:
            message = f"BREAK-GLASS (past the target's approvals/window policy): {message}"
        run.state = state
        run.message = message
        run.finished_at = timezone.now()
        run.current_version = ""

        def write(attempt: int) -> None:
            with transaction.atomic():
                Run.objects.filter(pk=run.pk).update(
                    state=run.state,
                    message=run.message,
                    finished_at=run.finished_at,
                    current_version="",
                    planned=list(run.planned),
                    plan_hash=run.plan_hash,
                    steps=list(run.steps),
                    backup_file=run.backup_file,
                )
                # A retry after a COMMIT whose answer was lost must not add a second row.
                if attempt and AuditEvent.objects.filter(run=run, outcome=outcome).exists():
                    return
                audit_record(
                    caller=self.caller,
                    action=run.action,
                    outcome=outcome,
                    target=self.target_name,
                    migrations=migrations,
                    message=message,
                    run=run,
                )

        with contextlib.ExitStack() as keep_alive:
            recorded = write_with_retry(
                write,
                what=f"run {run.pk}",
                retry_seconds=None if self.target is not None else 0,
                on_first_failure=lambda: self._hold_run_tag(keep_alive),
            )
        if not recorded:
            audit_line_emit(
                caller=self.caller,
                action=run.action,
                outcome=outcome,
                target=self.target_name,
                migrations=migrations,
                message=message,
                run_id=run.pk,
            )
            if self.target is None:
                raise DatabaseError(f"run {run.pk} could not be recorded in the console database")
        if run.parent_id is None:  # a group posts once, for the whole group
            notify_run_finished(run)  # MIGRATION_WEBHOOK_URL; bounded, never raises

    def _hold_run_tag(self, stack: contextlib.ExitStack) -> None:
        """While the records wait for the console database, a session tagged with the
        run's id stays on the target, so no reaper takes the run for a dead one."""
        if self.target is None:
            return
        name = f"{RUN_TAG}{self.run.pk} {self.caller.channel} recording"
        with contextlib.suppress(MigrationConsoleError):
            stack.enter_context(target_connect(self.target, application_name=name))
