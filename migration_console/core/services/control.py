"""Cancel a run, break a stuck lock: ``run_cancel`` and ``lock_break``.

Both reach a runner through PostgreSQL, never through its process (which may be a
CLI on another machine, or a worker): every runner session carries
``migration-console run#<id> `` in its application_name (runner.RUN_TAG), so a
cancel is ``pg_cancel_backend`` on those sessions after the Run row says who asked
(the runner reads ``cancel_requested_by`` when its statement is cancelled, rolls
the file back and records ``cancelled`` itself), and breaking the lock is
``pg_terminate_backend`` on the holder. Never ``pg_advisory_unlock_all()``: it only
frees the caller's own locks.
"""

import contextlib
import logging
import time
from dataclasses import dataclass

import psycopg
from django.utils import timezone

from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.audit import audit_record
from migration_console.core.services.caller import Caller
from migration_console.core.services.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    LockNotAcquired,
    MigrationConsoleError,
    RunRefused,
    TargetUnavailable,
)
from migration_console.core.services.locking import LockHolder, lock_holder
from migration_console.core.services.run_reaper import OPEN_STATES, run_close_if_dead
from migration_console.core.services.runner import RUN_TAG
from migration_console.core.services.targets import Target, target_connect, target_get, target_read

logger = logging.getLogger("migration_console.control")

CANCEL_WAIT_SECONDS = 5.0
UNLOCK_WAIT_SECONDS = 5.0
POLL_SECONDS = 0.1
# A signal that lands between two statements is lost; the runner notices the request
# before its next file anyway, but a long statement of the same file would run on.
RESIGNAL_SECONDS = 0.5
# Re-signal only statements running this long: the runner's own bookkeeping
# (tracking row, lock release) takes milliseconds and is better left alone.
RESIGNAL_MIN_AGE_SECONDS = 0.3

_SIGNAL_SQL = """
SELECT pid, pg_cancel_backend(pid)
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND starts_with(application_name, %(tag)s) AND state = 'active'
  AND query_start <= now() - make_interval(secs => %(min_age)s)
"""


class UnknownRun(MigrationConsoleError):
    exit_code = EXIT_BAD_INPUT
    http_status = 404
    error = "unknown run"


class LockStillHeld(LockNotAcquired):
    """The holder was told to go and is still there (or could not be told)."""

    exit_code = EXIT_FAILED


def run_tag(run_id: int) -> str:
    """The application_name prefix of every session of run ``run_id``'s runner."""
    return f"{RUN_TAG}{run_id} "


def run_id_of(application_name: str) -> int | None:
    if not application_name.startswith(RUN_TAG):
        return None
    number = application_name[len(RUN_TAG) :].split(" ", 1)[0]
    return int(number) if number.isdigit() else None


# Runs not started yet: a cancel withdraws them (a request, a scheduled run, a queued one).
WAITING_STATES = (Run.State.QUEUED, Run.State.SCHEDULED, Run.State.AWAITING_APPROVAL)


# --- cancel -------------------------------------------------------------------------
def run_cancel(*, run_id: int, caller: Caller, wait_seconds: float = CANCEL_WAIT_SECONDS) -> Run:
    """Cancel run ``run_id`` for ``caller``: a queued one is withdrawn at once; a running
    one is asked to stop and its current statement cancelled, then this waits up to
    ``wait_seconds`` for the runner to record the end. Returns the Run as it is then
    (still ``running`` when its runner did not stop: frozen, or busy outside the
    database). Writes one audit row (action ``cancel``) whatever happens; raises
    UnknownRun, or RunRefused for a finished run."""
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        message = f"there is no run #{run_id}"
        _audit_cancel(caller, None, AuditEvent.Outcome.REFUSED, message)
        raise UnknownRun(message)
    if run.state in WAITING_STATES:
        withdrawn = _withdraw(run, caller)
        if withdrawn is not None:
            return withdrawn
        run.refresh_from_db()  # claimed by a runner meanwhile
    if run.state == Run.State.RUNNING and "group" in (run.arguments or {}):
        return _cancel_group(run, caller, wait_seconds)
    if run.state == Run.State.RUNNING:
        run = run_close_if_dead(run)
    if run.state == Run.State.RUNNING:
        requested = Run.objects.filter(pk=run.pk, state=Run.State.RUNNING).update(
            cancel_requested_by=caller.actor[:150]
        )
        if requested:
            return _stop_running(run, caller, wait_seconds)
        run.refresh_from_db()
    message = (
        f"run #{run.pk} ({run.action} on {run.target}) has already finished: {run.state}; "
        "nothing to cancel"
    )
    _audit_cancel(caller, run, AuditEvent.Outcome.REFUSED, message)
    raise RunRefused(message, reason="finished")


def _withdraw(run: Run, caller: Caller) -> Run | None:
    """Queued -> cancelled in one conditional UPDATE, so a runner's claim (queued ->
    running) and this cannot both win; None when a runner claimed it first."""
    withdrawn = Run.objects.filter(pk=run.pk, state__in=WAITING_STATES).update(
        state=Run.State.CANCELLED,
        finished_at=timezone.now(),
        message=f"cancelled by {caller.actor} before it started",
        cancel_requested_by=caller.actor[:150],
    )
    if not withdrawn:
        return None
    note = _withdraw_job(run.job_id) if run.job_id is not None else ""
    run.refresh_from_db()
    _audit_cancel(
        caller, run, AuditEvent.Outcome.SUCCESS, f"run #{run.pk} withdrawn before it started{note}"
    )
    return run


def _withdraw_job(job_id: int) -> str:
    """Cancel the run's procrastinate job while it waits; one already picked up finds
    its Run no longer queued and starts nothing."""
    try:
        from procrastinate.contrib.django import app

        if app.job_manager.cancel_job_by_id(job_id):
            return f"; job {job_id} withdrawn"
    except Exception as exc:  # the Run row already says cancelled: that is what counts
        logger.warning("could not cancel job %s: %s", job_id, exc)
        return (
            f"; job {job_id} could not be withdrawn ({type(exc).__name__}), it will start nothing"
        )
    return f"; job {job_id} was already picked up, it will start nothing"


def _cancel_group(parent: Run, caller: Caller, wait_seconds: float) -> Run:
    """A group run: start no further member, withdraw the queued ones, stop the running
    ones (their transactional file rolls back); the parent ends ``cancelled`` once no
    member runs."""
    from migration_console.core.services.fleet import group_advance

    actor = caller.actor[:150]
    Run.objects.filter(pk=parent.pk, state=Run.State.RUNNING).update(cancel_requested_by=actor)
    withdrawn = []
    for member in parent.members.filter(state__in=WAITING_STATES):
        if Run.objects.filter(pk=member.pk, state__in=WAITING_STATES).update(
            state=Run.State.CANCELLED,
            finished_at=timezone.now(),
            message=f"cancelled by {caller.actor} with group run #{parent.pk} before it started",
            cancel_requested_by=actor,
        ):
            withdrawn.append(member.target)
            if member.job_id is not None:
                _withdraw_job(member.job_id)
    stopping = []
    for member in parent.members.filter(state=Run.State.RUNNING):
        Run.objects.filter(pk=member.pk, state=Run.State.RUNNING).update(cancel_requested_by=actor)
        stopping.append(member.target)
        with contextlib.suppress(MigrationConsoleError, psycopg.Error):
            _signal_until_finished(target_get(member.target), member.pk, 0)
    group_advance(parent.pk)  # settles the parent when no member runs
    deadline = time.monotonic() + wait_seconds
    while not _finished(parent.pk) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    parent.refresh_from_db()
    said = (
        f"cancel of group run #{parent.pk}: {len(withdrawn)} queued member(s) withdrawn, "
        f"{len(stopping)} running member(s) stopped"
        + (f" ({', '.join(stopping[:10])})" if stopping else "")
    )
    if parent.finished:
        _audit_cancel(
            caller, parent, AuditEvent.Outcome.SUCCESS, f"{said}; it ended {parent.state}"
        )
    else:
        _audit_cancel(
            caller,
            parent,
            AuditEvent.Outcome.FAILED,
            f"{said}; a member still runs after {wait_seconds:g}s: it stops before its next "
            "file, and the group ends cancelled when it does",
        )
    return parent


def _stop_running(run: Run, caller: Caller, wait_seconds: float) -> Run:
    try:
        target = target_get(run.target)
        signalled = _signal_until_finished(target, run.pk, wait_seconds)
    except (MigrationConsoleError, psycopg.Error) as exc:
        error = _as_service_error(exc, run.target)
        _audit_cancel(
            caller, run, AuditEvent.Outcome.ERROR, f"cancel of run #{run.pk}: {error.message}"
        )
        raise error from None
    run.refresh_from_db()
    pids = ", ".join(str(pid) for pid in sorted(signalled)) or "none busy"
    asked = f"cancel of run #{run.pk} requested; statement(s) cancelled on backend pid {pids}"
    if run.finished:
        _audit_cancel(
            caller, run, AuditEvent.Outcome.SUCCESS, f"{asked}; the run ended {run.state}"
        )
    else:
        _audit_cancel(
            caller,
            run,
            AuditEvent.Outcome.FAILED,
            f"{asked}; still running after {wait_seconds:g}s (its runner is frozen or busy "
            "outside the database): it stops before its next file, or free its lock with "
            "`migrate_sql unlock --force`",
        )
    return run


def _signal_until_finished(target: Target, run_id: int, wait_seconds: float) -> set[int]:
    """Cancel the run's busy statements, again every RESIGNAL_SECONDS, until the Run
    row is finished or ``wait_seconds`` pass; the pids signalled."""
    signalled: set[int] = set()
    deadline = time.monotonic() + wait_seconds
    next_signal, min_age = 0.0, 0.0
    with target_connect(target, application_name=f"migration-console cancel run#{run_id}") as conn:
        while True:
            now = time.monotonic()
            if now >= next_signal:
                rows = conn.execute(_SIGNAL_SQL, {"tag": run_tag(run_id), "min_age": min_age})
                signalled.update(pid for pid, sent in rows.fetchall() if sent)
                next_signal, min_age = now + RESIGNAL_SECONDS, RESIGNAL_MIN_AGE_SECONDS
            if _finished(run_id) or now >= deadline:
                return signalled
            time.sleep(POLL_SECONDS)


def _finished(run_id: int) -> bool:
    state = Run.objects.filter(pk=run_id).values_list("state", flat=True).first()
    return state is None or state in Run.FINISHED_STATES


def _as_service_error(exc: Exception, target_name: str) -> MigrationConsoleError:
    if isinstance(exc, MigrationConsoleError):
        return exc
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return TargetUnavailable(f"{target_name}: database error: {reason}")


def _audit_cancel(caller: Caller, run: Run | None, outcome: str, message: str) -> None:
    audit_record(
        caller=caller,
        action="cancel",
        outcome=outcome,
        target=run.target if run else "",
        message=message,
        run=run,
    )


# --- break the lock --------------------------------------------------------------------
@dataclass(frozen=True)
class LockInspection:
    """Who holds a target's lock, and the open Run of this console it belongs to."""

    target: str
    holder: LockHolder | None
    run: Run | None

    def describe(self) -> str:
        if self.holder is None:
            return f"{self.target} is not locked"
        text = f"{self.target} is locked by {self.holder.describe()}"
        if self.run is not None:
            text += f": run #{self.run.pk} ({self.run.state}, requested by {self.run.requested_by})"
        return text


def holder_run(holder: LockHolder | None) -> Run | None:
    """The queued or running Run of ours whose runner holds the lock, if it is one."""
    run_id = run_id_of(holder.application_name) if holder else None
    if run_id is None:
        return None
    return Run.objects.filter(pk=run_id, state__in=OPEN_STATES).first()


def lock_inspect(*, target_name: str) -> LockInspection:
    """What ``lock_break`` would act on, for a channel to show before it asks."""
    target = target_get(target_name)
    holder = target_read(target, lambda session: lock_holder(session.conn, target.schema))
    return LockInspection(target.name, holder, holder_run(holder))


def lock_break(
    *,
    target_name: str,
    caller: Caller,
    force: bool = False,
    expected_pid: int | None = None,
    wait_seconds: float = UNLOCK_WAIT_SECONDS,
) -> dict:
    """Free ``target_name``'s advisory lock by terminating its holder's backend, then
    check it is free. Refuses (RunRefused) while the holder is an open run of this
    console unless ``force``, and when the holder is no longer ``expected_pid`` (the
    one the operator was shown). Raises LockStillHeld when the holder stays. One audit
    row (action ``unlock``) with the holder's details and the outcome."""
    target = target_get(target_name)
    try:
        return _break(target, caller, force, expected_pid, wait_seconds)
    except (TargetUnavailable, psycopg.Error) as exc:
        error = _as_service_error(exc, target.name)
        _audit_unlock(caller, target, AuditEvent.Outcome.ERROR, error.message)
        raise error from None


def _break(
    target: Target, caller: Caller, force: bool, expected_pid: int | None, wait_seconds: float
) -> dict:
    with target_connect(
        target, application_name=f"migration-console unlock {caller.actor}"
    ) as conn:
        holder = lock_holder(conn, target.schema)
        if holder is None:
            message = f"{target.name} is not locked; nothing to break"
            _audit_unlock(caller, target, AuditEvent.Outcome.SUCCESS, message)
            return _answer(target, "not_locked", None, None, message)
        run = holder_run(holder)
        held = f"holder {holder.describe()}" + (f" (run #{run.pk})" if run else "")
        if expected_pid is not None and holder.pid != expected_pid:
            _refuse_unlock(
                caller,
                target,
                f"the lock holder changed since it was shown (pid {expected_pid}); now {held}; "
                "nothing was done, look again",
                "holder_changed",
            )
        if run is not None and not force:
            _refuse_unlock(
                caller,
                target,
                f"{target.name} is held by run #{run.pk} (requested by {run.requested_by}); "
                f"cancel it with `migrate_sql cancel {run.pk}`, or pass --force",
                "live_run",
            )
        try:
            conn.execute(
                "SELECT pg_terminate_backend(%s, %s)", [holder.pid, int(wait_seconds * 1000)]
            )
        except psycopg.Error as exc:
            message = f"could not terminate the {held}: {' '.join(str(exc).split())}"
            _audit_unlock(caller, target, AuditEvent.Outcome.FAILED, message)
            raise LockStillHeld(message, holder=holder.as_dict()) from None
        after = _wait_released(conn, target.schema, holder.pid, wait_seconds)
    forced = " (forced)" if run is not None else ""
    if after is not None and after.pid == holder.pid:
        message = f"terminated{forced} the {held}, yet it still holds the lock on {target.name}"
        _audit_unlock(caller, target, AuditEvent.Outcome.FAILED, message)
        raise LockStillHeld(message, holder=after.as_dict())
    message = f"terminated{forced} the {held}; the lock on {target.name} is free"
    if after is not None:
        message += f" and was taken at once by pid {after.pid} ({after.application_name!r})"
    _audit_unlock(caller, target, AuditEvent.Outcome.SUCCESS, message)
    return _answer(target, "unlocked", holder, run, message)


def _wait_released(conn, schema: str, pid: int, wait_seconds: float) -> LockHolder | None:
    deadline = time.monotonic() + wait_seconds
    while True:
        holder = lock_holder(conn, schema)
        if holder is None or holder.pid != pid or time.monotonic() >= deadline:
            return holder
        time.sleep(POLL_SECONDS)


def _refuse_unlock(caller: Caller, target: Target, message: str, reason: str) -> None:
    _audit_unlock(caller, target, AuditEvent.Outcome.REFUSED, message)
    raise RunRefused(message, reason=reason)


def _audit_unlock(caller: Caller, target: Target, outcome: str, message: str) -> None:
    audit_record(
        caller=caller, action="unlock", outcome=outcome, target=target.name, message=message
    )


def _answer(target: Target, status: str, holder, run, message: str) -> dict:
    return {
        "database": target.name,
        "status": status,
        "holder": holder.as_dict() if holder else None,
        "run": run.pk if run else None,
        "message": message,
    }
