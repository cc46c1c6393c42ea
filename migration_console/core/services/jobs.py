"""Runs are jobs: ``run_start`` queues a Run for the workers, the selectors here tell
the channels what became of it.

A console or API action is a Run row plus a procrastinate job in the console
database, written in one transaction (procrastinate's Django connector defers on
Django's own connection), so there is never a job without its Run or a queued Run
without its job. The job carries only the Run's id; the Run carries everything a
worker needs (``arguments``). ``lock=target:<name>`` lets one job per target run at a
time, so runs on one target execute one after the other while runs on two targets
run side by side. Workers (``manage.py migration_worker``) execute them through
``job_execute``; a dead worker's job is handed to another one by ``core/tasks.py``.
"""

import json
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from migration_console.core.models import Run
from migration_console.core.services import errors
from migration_console.core.services.caller import Caller

if TYPE_CHECKING:
    from migration_console.core.services.runner import RunOutcome

QUEUE = "migrations"
# The periodic recovery of stalled jobs: apart, so that it is never stuck behind a run.
HOUSEKEEPING_QUEUE = "migrations-housekeeping"
SHUTDOWN_REASON = "worker shutting down"
NO_WORKER_WARNING_SECONDS = 10.0
WAIT_POLL_SECONDS = 0.2
# Where a worker keeps the service error a run ended with, so that the API can answer
# exactly what it answered when it ran the action itself (holder, reason, versions).
ERROR_KEY = "error"
# The API token that asked (the Run row has no column for it): the audit row names it.
TOKEN_KEY = "token_prefix"  # noqa: S105 - a key name, not a secret


def target_lock(target_name: str) -> str:
    return f"target:{target_name}"


def stalled_after() -> float:
    """Seconds without a heartbeat after which a worker counts as dead."""
    return float(settings.MIGRATION_WORKER_STALLED_AFTER)


def run_start(
    *,
    target_name: str,
    caller: Caller,
    plan_hash: str,
    planned: list[str] | None = None,
    action: str = "run",
    arguments: dict | None = None,
    run_at: datetime | None = None,
) -> Run:
    """Queue ``action`` on ``target_name`` for ``caller``: its Run row and its job,
    committed together. ``plan_hash``: the plan the caller confirmed ("" for none);
    ``arguments``: the action's own (run options, a version, mark_applied);
    ``run_at``: not before then.

    The target's policy decides what the Run becomes: with ``approvals`` a request
    (``awaiting_approval``, no job until the last approval), else a job now, or at
    ``run_at`` / the next opening of the target's ``window`` (``scheduled``)."""
    from migration_console.core.services.runs import run_create
    from migration_console.core.services.scheduling import earliest_start, target_config

    config = target_config(target_name)
    with transaction.atomic():
        run = run_create(target_name=target_name, caller=caller, plan_hash=plan_hash, action=action)
        run.planned = list(planned or [])
        run.arguments = dict(arguments or {})
        if caller.token_prefix:
            run.arguments[TOKEN_KEY] = caller.token_prefix
        run.run_at = run_at
        fields = ["planned", "arguments", "run_at"]
        if config is not None and config.approvals:
            run.state = Run.State.AWAITING_APPROVAL
            run.approvals_required = config.approvals
            fields += ["state", "approvals_required"]
        else:
            job_defer(run, earliest_start(target_name, run_at))
            fields += ["state", "job_id"]
        run.save(update_fields=fields)
    if run.state == Run.State.AWAITING_APPROVAL:
        from migration_console.core.services.approvals import request_record

        request_record(run, caller)
    return run


def job_defer(run: Run, start: datetime | None) -> None:
    """Give ``run`` its job (to be saved by the caller): now (``queued``) or at
    ``start`` (``scheduled``).

    A scheduled run's job is a lock-free ``release_run`` at ``start`` that then queues
    the locked ``execute_run``: procrastinate runs the jobs of one lock in id order,
    scheduled or not, so a locked job waiting for tomorrow would hold back every
    later run of its target until then."""
    from migration_console.core.tasks import execute_run, release_run

    if start is None:
        run.state = Run.State.QUEUED
        run.job_id = execute_run.configure(lock=target_lock(run.target)).defer(run_id=run.pk)
        return
    run.state = Run.State.SCHEDULED
    run.run_at = start
    run.job_id = release_run.configure(schedule_at=start).defer(run_id=run.pk)


def run_release(run_id: int) -> str:
    """A scheduled run's time has come: queue its locked job (``release_run``)."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.state != Run.State.SCHEDULED:
            return f"run #{run_id}: no longer scheduled"
        job_defer(run, None)
        run.save(update_fields=["state", "job_id"])
    return f"run #{run_id}: queued"


# --- what became of a run ---------------------------------------------------------------
def run_interrupted(run: Run) -> bool:
    """A run its worker stopped between two files to shut down: for an instant it is
    recorded ``cancelled`` before it goes back to the queue, where another worker
    resumes it. Nobody asked for it to be cancelled."""
    return (
        run.state == Run.State.CANCELLED
        and not run.cancel_requested_by
        and run.message.startswith(SHUTDOWN_REASON)
    )


def run_settled(run: Run) -> bool:
    return run.finished and not run_interrupted(run)


def run_wait(*, run_id: int, timeout: float) -> Run:
    """The Run once it has settled, or as it is when ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        run = Run.objects.get(pk=run_id)
        remaining = deadline - time.monotonic()
        if run_settled(run) or remaining <= 0:
            return run
        time.sleep(min(WAIT_POLL_SECONDS, remaining))


def _error_kinds() -> dict[str, type[errors.MigrationConsoleError]]:
    kinds, todo = {}, [errors.MigrationConsoleError]
    while todo:
        kind = todo.pop()
        kinds[kind.__name__] = kind
        todo.extend(kind.__subclasses__())
    return kinds


def error_record(exc: errors.MigrationConsoleError) -> dict:
    """A service error as a worker keeps it on the Run (see ``run_error``)."""
    record = {"kind": type(exc).__name__, "message": exc.message}
    for name in ("reason", "versions", "holder", "filename"):
        if hasattr(exc, name):
            record[name] = getattr(exc, name)
    # Storable as jsonb whatever it holds: no NUL, anything unusual as text.
    return json.loads(json.dumps(record, default=str).replace("\\u0000", "\\\\u0000"))


def run_error(run: Run) -> errors.MigrationConsoleError | None:
    """The service error a settled run ended with (refused, locked, bad files, an
    unreachable target, ...), rebuilt as the service raised it; None when it ended
    with an outcome (success, up to date, failed, cancelled)."""
    if run.state not in (Run.State.REFUSED, Run.State.LOCKED, Run.State.ERROR):
        return None
    record = (run.arguments or {}).get(ERROR_KEY)
    if not isinstance(record, dict):
        record = {
            "kind": {
                Run.State.LOCKED: "LockNotAcquired",
                Run.State.REFUSED: "RunRefused",
            }.get(run.state, "MigrationConsoleError"),
            "message": run.message,
            "reason": "refused",
            "holder": None,
        }
    kind = _error_kinds().get(record.get("kind"), errors.MigrationConsoleError)
    error = kind.__new__(kind)
    errors.MigrationConsoleError.__init__(error, str(record.get("message") or run.message))
    for name in ("reason", "versions", "holder", "filename"):
        if name in record:
            setattr(error, name, record[name])
    if kind is errors.RunRefused and not hasattr(error, "versions"):
        error.versions = []
    return error


def run_outcome(run: Run) -> "RunOutcome":
    """The outcome of a settled run, rebuilt from its Run row (its steps from every
    attempt), for the same answers the channels give when they ran it themselves."""
    from migration_console.core.services.runner import RunOutcome
    from migration_console.core.services.steps import StepResult

    steps = [
        StepResult(
            step.get("version", ""),
            step.get("name", ""),
            step.get("status", ""),
            int(step.get("duration") or 0),
            step.get("error"),
        )
        for step in run.steps
    ]
    status = {
        Run.State.SUCCESS: "success",
        Run.State.UP_TO_DATE: "up_to_date",
        Run.State.FAILED: "failed",
        Run.State.CANCELLED: "cancelled",
    }.get(run.state, "failed")
    outcome = RunOutcome(
        status=status,
        target=run.target,
        steps=steps,
        planned=list(run.planned),
        message=run.message,
        backup_file=run.backup_file,
        stopped=run.message if status == "cancelled" else "",
    )
    if status == "up_to_date" and outcome.applied:
        # An earlier attempt applied the files, the last one found nothing left to do.
        outcome.status = "success"
    return outcome


def recorded_answer(run: Run) -> tuple[int, dict]:
    """The API's answer to a settled run, as it answered when it ran the action in
    the request: raises the run's service error, else (HTTP status, body)."""
    from migration_console.core.formatting import run_answer
    from migration_console.core.services.maintenance import maintenance_result

    error = run_error(run)
    if error is not None:
        raise error
    outcome = run_outcome(run)
    if run.action != "run":
        return (500 if outcome.failure else 200), maintenance_result(run.action, outcome)
    code, data = run_answer(outcome)
    if outcome.status == "cancelled":  # as `migrate_sql run --json` says it
        data = {**data, "status": "cancelled", "message": run.message}
        data.pop("error", None)
        code = 200
    return code, data


# SPEC's run states: a refusal or a lock not acquired is an ``error`` with its message.
API_STATES = {Run.State.REFUSED: "error", Run.State.LOCKED: "error"}
STEP_FIELDS = ("version", "name", "status", "duration", "error", "attempts")


def _when(moment) -> str | None:
    return moment.isoformat() if moment else None


def run_as_dict(run: Run) -> dict:
    """``GET /admin/migrations/runs/<id>``: SPEC's shape of one run."""
    state = Run.State.QUEUED if run_interrupted(run) else API_STATES.get(run.state, run.state)
    return {
        "run": run.pk,
        "database": run.target,
        "action": run.action,
        "state": str(state),
        "requested_by": run.requested_by,
        "created_at": _when(run.created_at),
        "started_at": _when(run.started_at),
        "finished_at": _when(run.finished_at),
        "attempts": run.attempts,
        "steps": [{name: step.get(name) for name in STEP_FIELDS} for step in run.steps],
        "blockers": (run.lock_wait or {}).get("blockers", []),
        "message": run.message,
        **({"members": _members(run)} if "group" in (run.arguments or {}) else {}),
    }


def _members(parent: Run) -> list[dict]:
    """A group's members as its parent run shows them: each one's run and state
    (``not_started`` for members not started yet)."""
    started = {run.target: run for run in parent.members.all()}
    return [
        {
            "database": name,
            "run": started[name].pk if name in started else None,
            "state": started[name].state if name in started else "not_started",
        }
        for name in (parent.arguments or {}).get("members", [])
    ]


# --- workers, for the console's warning and /metrics --------------------------------------
def workers_live() -> int:
    """Workers whose heartbeat is recent."""
    from procrastinate.contrib.django.models import ProcrastinateWorker

    cutoff = timezone.now() - timedelta(seconds=stalled_after())
    return ProcrastinateWorker.objects.filter(last_heartbeat__gte=cutoff).count()


def queued_runs(target_name: str | None = None):
    runs = Run.objects.filter(state=Run.State.QUEUED, job_id__isnull=False)
    return runs.filter(target=target_name) if target_name else runs


def runs_without_worker(run: Run | None = None) -> int:
    """Queued runs (or just ``run``) waiting for more than 10 s while no worker is
    live: what the console warns about. 0 while any worker lives."""
    cutoff = timezone.now() - timedelta(seconds=NO_WORKER_WARNING_SECONDS)
    waiting = queued_runs().filter(created_at__lt=cutoff)
    if run is not None:
        waiting = waiting.filter(pk=run.pk)
    if not waiting.exists() or workers_live():
        return 0
    return waiting.count()
