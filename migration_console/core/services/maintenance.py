"""Rollback, baseline and repair: the changes to a target besides ``run``.

Each takes the same advisory lock as a run (``runner.target_session``), works
out its plan from the files and the tracking table under that lock, and
refuses before touching anything when the plan is unsafe. ``*_plan`` functions
show the same plan without the lock, for a confirmation; its ``plan_hash``
binds the confirmation to exactly what runs. ``maintenance_execute`` is the
recorded entry point every channel uses (Run row + one audit row).

* rollback <version>: the ``.down.sql`` of every applied migration at or above
  <version>, newest first, each in one transaction with the deletion of its
  tracking row (a ``-- migrate:no-transaction`` down file runs statement by
  statement, then its row goes).
* baseline <version>: record every file up to <version> as completed, without
  running it (``applied_by`` = ``baseline:<actor>``).
* repair <version>: failed -> delete the row so ``run`` applies it again, or
  with ``mark_applied`` record it completed; drifted -> record the file's
  current checksum.
"""

import dataclasses
import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from psycopg import sql

from migration_console.core.services.caller import Caller
from migration_console.core.services.directives import parse_directives
from migration_console.core.services.discovery import MigrationFile, decode_sql, discover
from migration_console.core.services.errors import (
    InvalidRequest,
    MigrationConsoleError,
    MigrationSetError,
    RunRefused,
)
from migration_console.core.services.execute import (
    ScriptFailed,
    SessionLost,
    execute_in_transaction,
    execute_statements,
)
from migration_console.core.services.runner import (
    FAILED_OUTCOME,
    SUCCESS,
    UP_TO_DATE,
    RunObserver,
    RunOutcome,
    target_session,
)
from migration_console.core.services.status import (
    COMPLETED,
    DRIFTED,
    FAILED,
    MISSING,
    TargetStatus,
    build_status,
)
from migration_console.core.services.steps import StepResult
from migration_console.core.services.targets import Target, target_connect
from migration_console.core.services.tracking import (
    table_identifier,
    tracking_delete,
    tracking_ensure,
    tracking_rows,
    upsert_statement,
)

_DIGITS = re.compile(r"[0-9]{1,64}")

ROLLBACK = "rollback"
BASELINE = "baseline"
REPAIR = "repair"
ACTIONS = (ROLLBACK, BASELINE, REPAIR)

# Kinds of change
RUN_DOWN = "run_down"
RECORD = "record"
CLEAR_FAILURE = "clear_failure"
MARK_APPLIED = "mark_applied"
RECHECKSUM = "rechecksum"


@dataclass(frozen=True)
class Change:
    kind: str
    version: str
    name: str
    description: str
    file: MigrationFile  # for RUN_DOWN: the down file (path, sql, no_transaction)

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "version": self.version,
            "name": self.name,
            "description": self.description,
            "file": self.file.filename,
        }


@dataclass
class MaintenancePlan:
    action: str
    version: str
    target: Target
    status: TargetStatus
    changes: list[Change] = field(default_factory=list)
    mark_applied: bool = False

    @property
    def plan_hash(self) -> str:
        digest = hashlib.sha256(
            f"{self.action}\0{self.version}\0{self.mark_applied}\0{self.status.plan_hash}".encode()
        )
        for change in self.changes:
            digest.update(f"\n{change.kind}\0{change.version}\0{change.file.checksum}".encode())
        return digest.hexdigest()[:32]

    def as_dict(self) -> dict:
        return {
            "database": self.target.name,
            "action": self.action,
            "version": self.version,
            "mark_applied": self.mark_applied,
            "plan_hash": self.plan_hash,
            "changes": [change.as_dict() for change in self.changes],
        }


# --- planning (pure: status in, changes out, or a refusal) -------------------------


def _number(version: str) -> int:
    version = (version or "").strip()
    if not _DIGITS.fullmatch(version):
        raise InvalidRequest(f"version must be digits, got {version[:64]!r}")
    return int(version)


def _n(version: str) -> int:
    """A tracking row's version as a number (a hand-written odd one sorts first)."""
    return int(version) if _DIGITS.fullmatch(version) else -1


def _known(status: TargetStatus, number: int, version: str):
    item = next((i for i in status.items if _n(i.version) == number), None)
    if item is None:
        raise InvalidRequest(f"no migration with version {version} in {status.target.name}")
    return item


def _label(item) -> str:
    return f"{item.version}_{item.name}"


def _placeholder(item) -> MigrationFile:
    """A stand-in for a migration whose file is gone (progress needs one)."""
    return MigrationFile(
        version=item.version,
        name=item.name,
        filename=f"{item.version}_{item.name}.sql",
        path="",
        source="",
        checksum=item.row.checksum if item.row else "",
        no_transaction=False,
    )


def _read_down(path: str, version: str, name: str) -> MigrationFile:
    filename = os.path.basename(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise MigrationSetError(filename, f"unreadable ({exc.strerror})") from None
    text, normalised = decode_sql(raw, filename)
    if not text.strip():
        raise MigrationSetError(filename, "empty file")
    directives = parse_directives(text, filename)
    return MigrationFile(
        version=version,
        name=name,
        filename=filename,
        path=path,
        source=text,
        checksum=hashlib.sha256(normalised).hexdigest(),
        no_transaction=directives.no_transaction,
        directives=directives,
    )


def _plan_rollback(status: TargetStatus, version: str) -> list[Change]:
    number = _number(version)
    _known(status, number, version)
    in_range = [i for i in status.items if _n(i.version) >= number and i.row is not None]
    half_done = [
        i for i in in_range if i.row.status == FAILED and (i.no_transaction or i.file is None)
    ]
    if half_done:
        raise RunRefused(
            "cannot roll back over a failed migration that may have left the database "
            f"half-changed: {', '.join(map(_label, half_done))}; resolve it with "
            "`migrate_sql repair <version>` first",
            reason="failed_no_transaction",
            versions=[i.version for i in half_done],
        )
    # A failed transactional file changed nothing; its row stays (it runs again).
    applied = [i for i in in_range if i.row.status == COMPLETED]
    applied.reverse()
    missing = [i for i in applied if i.file is None or not i.file.down_path]
    if missing:
        names = ", ".join(f"{_label(i)}.down.sql" for i in missing)
        raise RunRefused(
            f"cannot roll back to {version}: missing down file(s) {names}; nothing was changed",
            reason="missing_down",
            versions=[i.version for i in missing],
        )
    changes = []
    for item in applied:
        down = _read_down(item.file.down_path, item.version, item.name)
        mode = "statement by statement" if down.no_transaction else "in one transaction"
        changes.append(
            Change(
                RUN_DOWN,
                item.version,
                item.name,
                f"run {down.filename} {mode} and delete the tracking row of {_label(item)}",
                down,
            )
        )
    return changes


def _plan_baseline(status: TargetStatus, version: str) -> list[Change]:
    number = _number(version)
    item = _known(status, number, version)
    if item.file is None:
        raise InvalidRequest(f"no migration file with version {version}")
    above = [i for i in status.items if i.row is not None and _n(i.version) >= number]
    if above:
        raise RunRefused(
            f"cannot baseline at {version}: the tracking table already has rows at or above it "
            f"({', '.join(f'{_label(i)} ({i.row.status})' for i in above)})",
            reason="baseline_conflict",
            versions=[i.version for i in above],
        )
    return [
        Change(
            RECORD,
            i.version,
            i.name,
            f"record {i.file.filename} as completed (sha256 {i.file.checksum[:12]}) "
            "without running it",
            i.file,
        )
        for i in status.items
        if i.file is not None and i.row is None and _n(i.version) <= number
    ]


def _plan_repair(status: TargetStatus, version: str, mark_applied: bool) -> list[Change]:
    number = _number(version)
    item = _known(status, number, version)
    row_failed = item.row is not None and item.row.status == FAILED
    if item.status == FAILED or (item.status == MISSING and row_failed):
        if mark_applied:
            if item.file is None:
                raise InvalidRequest(
                    f"{_label(item)}: the file is gone; --mark-applied needs the file "
                    "(its checksum is recorded)"
                )
            return [
                Change(
                    MARK_APPLIED,
                    item.version,
                    item.name,
                    f"record {item.file.filename} as completed (sha256 "
                    f"{item.file.checksum[:12]}) without running it; the failure is cleared",
                    item.file,
                )
            ]
        return [
            Change(
                CLEAR_FAILURE,
                item.version,
                item.name,
                f"delete the failed tracking row of {_label(item)} so that `run` applies it again",
                item.file or _placeholder(item),
            )
        ]
    if mark_applied:
        raise InvalidRequest(
            f"--mark-applied resolves failed migrations; {_label(item)} is {item.status}"
        )
    if item.status == DRIFTED:
        return [
            Change(
                RECHECKSUM,
                item.version,
                item.name,
                f"record the current checksum of {item.file.filename}: sha256 "
                f"{item.row.checksum[:12]} -> {item.file.checksum[:12]}",
                item.file,
            )
        ]
    hint = "; restore the file" if item.status == MISSING else ""
    raise InvalidRequest(
        f"nothing to repair: {_label(item)} is {item.status}{hint} "
        "(repair resolves failed or drifted migrations)"
    )


def _plan(
    action: str, target: Target, status: TargetStatus, version: str, mark_applied: bool
) -> MaintenancePlan:
    if action == ROLLBACK:
        changes = _plan_rollback(status, version)
    elif action == BASELINE:
        changes = _plan_baseline(status, version)
    elif action == REPAIR:
        changes = _plan_repair(status, version, mark_applied)
    else:
        raise InvalidRequest(f"unknown action {action!r}")
    return MaintenancePlan(action, version, target, status, changes, mark_applied)


def maintenance_plan(
    *, action: str, target: Target, version: str, mark_applied: bool = False
) -> MaintenancePlan:
    """What ``action`` would change, read without the lock and without changing anything."""
    files = discover(target.path)
    with target_connect(target, application_name=f"migration-console {action} plan") as conn:
        status = build_status(target, files, tracking_rows(conn, target.schema))
    return _plan(action, target, status, version, mark_applied)


# --- execution (under the lock) -------------------------------------------------------


class _StepFailed(Exception):
    pass


def _run_down(conn, target: Target, change: Change) -> None:
    down = change.file
    if down.no_transaction:
        try:
            execute_statements(conn, down)
        except ScriptFailed as failure:
            raise _StepFailed(
                f"{failure}\n{down.filename} runs outside a transaction: the database may be "
                "half rolled back; its tracking row was kept"
            ) from failure
        with conn.transaction():
            tracking_delete(conn, target.schema, change.version)
        return
    delete = (
        sql.SQL("DELETE FROM {} WHERE version = {}")
        .format(table_identifier(target.schema), sql.Literal(change.version))
        .as_string(conn)
    )
    try:
        execute_in_transaction(conn, down, delete)
    except ScriptFailed as failure:
        raise _StepFailed(str(failure)) from failure


def _record(conn, target: Target, change: Change, applied_by: str) -> None:
    conn.execute(
        upsert_statement(target.schema),
        {
            "version": change.version,
            "name": change.name,
            "checksum": change.file.checksum,
            "status": COMPLETED,
            "duration_ns": 0,
            "applied_by": applied_by,
            "error": None,
        },
    )


def _repair(conn, target: Target, change: Change, actor: str) -> None:
    table = table_identifier(target.schema)
    with conn.transaction():
        if change.kind == CLEAR_FAILURE:
            query = sql.SQL("DELETE FROM {} WHERE version = %s AND status = 'failed'")
            params = [change.version]
        elif change.kind == MARK_APPLIED:
            query = sql.SQL(
                "UPDATE {} SET status = 'completed', checksum = %s, error = NULL,"
                " applied_at = clock_timestamp(), applied_by = %s"
                " WHERE version = %s AND status = 'failed'"
            )
            params = [change.file.checksum, f"repair:{actor}", change.version]
        else:
            query = sql.SQL(
                "UPDATE {} SET checksum = %s WHERE version = %s AND status = 'completed'"
            )
            params = [change.file.checksum, change.version]
        if conn.execute(query.format(table), params).rowcount != 1:
            raise _StepFailed(f"the tracking row of {change.version} changed meanwhile")


_DONE = {
    ROLLBACK: "rolled back",
    BASELINE: "baselined",
    REPAIR: "repaired",
}
_NOTHING = {
    ROLLBACK: "nothing to roll back at or above {version}",
    BASELINE: "nothing to baseline up to {version}: every file is recorded",
    REPAIR: "nothing to repair",
}


def _maintain(
    action: str,
    *,
    target: Target,
    version: str,
    actor: str,
    channel: str,
    mark_applied: bool = False,
    use_lock: bool = True,
    lock_wait: float | None = None,
    expected_plan_hash: str | None = None,
    observer: RunObserver | None = None,
) -> RunOutcome:
    observer = observer or RunObserver()
    files = discover(target.path)
    with target_session(
        target, channel=channel, actor=actor, use_lock=use_lock, lock_wait=lock_wait
    ) as conn:
        status = build_status(target, files, tracking_rows(conn, target.schema))
        plan = _plan(action, target, status, version, mark_applied)
        if expected_plan_hash and expected_plan_hash != plan.plan_hash:
            raise RunRefused(
                f"the migrations or the applied set changed since the {action} plan was "
                "shown; review the new plan and confirm again",
                reason="plan_changed",
            )
        observer.plan_ready(
            dataclasses.replace(status, plan_hash=plan.plan_hash),
            [change.file for change in plan.changes],
        )
        if not plan.changes:
            return RunOutcome(
                status=UP_TO_DATE,
                target=target.name,
                message=_NOTHING[action].format(version=version),
            )
        if action == BASELINE:
            tracking_ensure(conn, target.schema)
        steps = _perform(conn, plan, actor=actor, observer=observer)
    outcome = RunOutcome(
        status=SUCCESS,
        target=target.name,
        steps=steps,
        planned=[change.version for change in plan.changes],
    )
    done = [s for s in steps if s.status == COMPLETED]
    labels = ", ".join(f"{s.version}_{s.name}" for s in done) or "none"
    if outcome.failure:
        failure = outcome.failure
        outcome.status = FAILED_OUTCOME
        outcome.message = (
            f"{action} of {failure.version}_{failure.name} failed: {failure.error}"
            f" ({_DONE[action]} before it: {labels})"
        )
    else:
        outcome.message = f"{_DONE[action]} {len(done)} migration(s): {labels}"
    return outcome


def _perform(conn, plan: MaintenancePlan, *, actor: str, observer: RunObserver) -> list:
    target = plan.target
    steps: list[StepResult] = []
    if plan.action == BASELINE:
        # All rows or none: one transaction.
        started = time.perf_counter_ns()
        with conn.transaction():
            for change in plan.changes:
                observer.migration_started(change.file)
                _record(conn, target, change, f"baseline:{actor}")
        duration = time.perf_counter_ns() - started
        for change in plan.changes:
            step = StepResult(change.version, change.name, COMPLETED, duration)
            steps.append(step)
            observer.migration_finished(step)
        return steps
    for change in plan.changes:
        observer.migration_started(change.file)
        started = time.perf_counter_ns()
        try:
            try:
                if plan.action == ROLLBACK:
                    _run_down(conn, target, change)
                else:
                    _repair(conn, target, change, actor)
            except SessionLost as lost:
                raise _StepFailed(
                    f"lost the session to {target.name} during {change.file.filename}: {lost}; "
                    "its open transaction was rolled back with the session and the lock went "
                    "with it, so nothing further was started: check the status"
                ) from lost
        except _StepFailed as failure:
            step = StepResult(
                change.version,
                change.name,
                FAILED,
                time.perf_counter_ns() - started,
                str(failure),
            )
            steps.append(step)
            observer.migration_finished(step)
            break
        step = StepResult(change.version, change.name, COMPLETED, time.perf_counter_ns() - started)
        steps.append(step)
        observer.migration_finished(step)
    return steps


def migrations_rollback(
    *, target: Target, to_version: str, actor: str, channel: str, **kwargs
) -> RunOutcome:
    """Run the down files of every applied migration at or above ``to_version``."""
    return _maintain(
        ROLLBACK, target=target, version=to_version, actor=actor, channel=channel, **kwargs
    )


def migrations_baseline(
    *, target: Target, version: str, actor: str, channel: str, **kwargs
) -> RunOutcome:
    """Record every file up to ``version`` as completed without running it."""
    return _maintain(
        BASELINE, target=target, version=version, actor=actor, channel=channel, **kwargs
    )


def migrations_repair(
    *,
    target: Target,
    version: str,
    actor: str,
    channel: str,
    mark_applied: bool = False,
    **kwargs,
) -> RunOutcome:
    """Resolve a failed (clear it, or ``mark_applied``) or drifted (re-record) migration."""
    return _maintain(
        REPAIR,
        target=target,
        version=version,
        actor=actor,
        channel=channel,
        mark_applied=mark_applied,
        **kwargs,
    )


_SERVICES: dict[str, Callable[..., RunOutcome]] = {
    ROLLBACK: lambda version, **kw: migrations_rollback(to_version=version, **kw),
    BASELINE: lambda version, **kw: migrations_baseline(version=version, **kw),
    REPAIR: lambda version, **kw: migrations_repair(version=version, **kw),
}


def maintenance_result(action: str, outcome: RunOutcome) -> dict:
    """The JSON answer of a rollback/baseline/repair, for the API and ``--json``."""
    done = [step.as_dict() for step in outcome.steps if step.status == COMPLETED]
    failure = outcome.failure
    if failure:
        return {
            "error": f"{action} failed",
            "details": failure.error,
            "version": failure.version,
            "message": outcome.message,
            "count": len(done),
            "migrations": done,
        }
    return {
        "status": outcome.status,
        "action": action,
        "message": outcome.message,
        "count": len(done),
        "migrations": done,
    }


def maintenance_execute(
    *,
    action: str,
    target_name: str,
    version: str,
    caller: Caller,
    mark_applied: bool = False,
    use_lock: bool = True,
    lock_wait: float | None = None,
    expected_plan_hash: str | None = None,
    observer: RunObserver | None = None,
    path: str | None = None,
    run=None,
) -> RunOutcome:
    """The recorded rollback/baseline/repair for every channel: a Run row
    (``action``) and one audit row for ``caller``, allowed or refused."""
    from migration_console.core.services.runs import action_execute

    if action not in _SERVICES:
        raise InvalidRequest(f"unknown action {action!r}")
    extra = {"mark_applied": mark_applied} if action == REPAIR else {}

    def operation(target: Target, progress: RunObserver) -> RunOutcome:
        return _SERVICES[action](
            version,
            target=target,
            actor=caller.actor,
            channel=caller.channel,
            use_lock=use_lock,
            lock_wait=lock_wait,
            expected_plan_hash=expected_plan_hash,
            observer=progress,
            **extra,
        )

    return action_execute(
        action=action,
        operation=operation,
        target_name=target_name,
        caller=caller,
        observer=observer,
        path=path,
        run=run,
        plan_hash=expected_plan_hash or "",
    )


def maintenance_preview(
    *,
    action: str,
    target_name: str,
    version: str,
    caller: Caller,
    mark_applied: bool = False,
    path: str | None = None,
) -> MaintenancePlan:
    """The plan to show ``caller`` before asking for confirmation. A refusal found
    here (missing down file, unknown version, ...) is recorded like a refused action
    (Run row + audit row) and raised; nothing is locked or changed."""
    from migration_console.core.services.runs import action_execute
    from migration_console.core.services.targets import target_get

    try:
        target = target_get(target_name, path=path)
        return maintenance_plan(
            action=action, target=target, version=version, mark_applied=mark_applied
        )
    except MigrationConsoleError as exc:
        refusal = exc

    def operation(target: Target, progress: RunObserver) -> RunOutcome:
        raise refusal

    action_execute(
        action=action if action in ACTIONS else "unknown",
        operation=operation,
        target_name=target_name,
        caller=caller,
        path=path,
    )
    raise AssertionError("unreachable: the operation raises")  # pragma: no cover
