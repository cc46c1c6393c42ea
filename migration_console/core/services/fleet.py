"""Run a group of targets: canaries first, then the rest with bounded parallelism,
stopping (or not) after a failure. One parent Run for the group, an ordinary Run for
each member, each member under its own advisory lock.

Two executors share ``members_to_start`` (the group's policy): ``fleet_run`` runs the
members in this process (``migrate_sql run --group``: no worker needed, one
connection per running member), ``group_advance`` hands them to the workers as jobs
(console and API), called when the group starts and whenever a member ends.
"""

import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections, transaction
from django.utils import timezone

from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.audit import audit_record
from migration_console.core.services.caller import Caller
from migration_console.core.services.errors import (
    LockNotAcquired,
    MigrationConsoleError,
    RunRefused,
)
from migration_console.core.services.runner import RunOptions
from migration_console.core.services.runs import run_create, run_execute
from migration_console.target_groups import GroupConfig

logger = logging.getLogger(__name__)

OK_STATES = (Run.State.SUCCESS, Run.State.UP_TO_DATE)
MEMBERS_KEY = "members"
GROUP_KEY = "group"  # in a parent Run's arguments: the group's name


@dataclass(frozen=True)
class FleetPolicy:
    parallel: int
    canary: int
    on_error: str  # stop | continue

    @classmethod
    def of(cls, group: GroupConfig, *, parallel=None, canary=None, on_error=None) -> "FleetPolicy":
        return cls(
            parallel=max(1, parallel if parallel is not None else group.parallel),
            canary=max(0, canary if canary is not None else group.canary),
            on_error=on_error or group.on_error,
        )

    def as_dict(self) -> dict:
        return {"parallel": self.parallel, "canary": self.canary, "on_error": self.on_error}


def members_to_start(
    policy: FleetPolicy,
    *,
    total: int,
    started: int,
    running: int,
    failed: int,
    canaries_done: bool,
    canaries_ok: bool,
) -> int:
    """How many more members may start now. Canaries run first, one at a time; the rest
    only once every canary succeeded (a failed canary stops the group whatever
    ``on_error`` says), at most ``parallel`` at once; after a failure, ``stop`` starts
    none."""
    left = total - started
    if left <= 0 or (failed and policy.on_error == "stop"):
        return 0
    if started < min(policy.canary, total):
        return 1 if running == 0 else 0
    if not (canaries_done and canaries_ok):
        return 0
    return max(0, min(left, policy.parallel - running))


@dataclass
class FleetOutcome:
    parent: Run
    results: dict[str, str] = field(default_factory=dict)  # member -> Run state
    skipped: list[str] = field(default_factory=list)

    def count(self, *states) -> int:
        return sum(1 for state in self.results.values() if state in states)

    @property
    def exit_code(self) -> int:
        if self.count(Run.State.FAILED, Run.State.ERROR, Run.State.REFUSED):
            return 1
        if self.count(Run.State.LOCKED):
            return 3
        return 1 if self.skipped else 0

    def summary(self) -> str:
        applied = self.count(Run.State.SUCCESS)
        current = self.count(Run.State.UP_TO_DATE)
        bad = sorted(m for m, s in self.results.items() if s not in OK_STATES)
        text = (
            f"{len(self.results) + len(self.skipped)} member(s): {applied} applied, "
            f"{current} up to date, {len(bad)} failed, {len(self.skipped)} skipped"
        )
        if bad:
            text += f" (failed: {', '.join(bad[:10])}{' …' if len(bad) > 10 else ''})"
        return text


def group_parent_create(
    group: GroupConfig, caller: Caller, members: list[str], policy: FleetPolicy, plan_hash: str
) -> Run:
    parent = run_create(target_name=group.name, caller=caller, plan_hash=plan_hash, action="run")
    parent.planned = list(members)
    parent.arguments = {GROUP_KEY: group.name, MEMBERS_KEY: list(members), **policy.as_dict()}
    parent.save(update_fields=["planned", "arguments"])
    return parent


def group_parent_finish(parent: Run, outcome: FleetOutcome, caller: Caller) -> None:
    failed = outcome.exit_code != 0
    parent.state = Run.State.FAILED if failed else Run.State.SUCCESS
    audit_outcome = AuditEvent.Outcome.FAILED if failed else AuditEvent.Outcome.SUCCESS
    parent.message = outcome.summary()
    if parent.cancel_requested_by:
        parent.state, audit_outcome = Run.State.CANCELLED, AuditEvent.Outcome.CANCELLED
        parent.message = f"cancelled by {parent.cancel_requested_by}; {parent.message}"
    parent.finished_at = timezone.now()
    parent.save(update_fields=["state", "message", "finished_at"])
    audit_record(
        caller=caller,
        action="run",
        outcome=audit_outcome,
        target=parent.target,
        migrations=[],
        message=f"group {parent.target}: {parent.message}",
        run=parent,
    )
    from migration_console.ops.webhook import notify_run_finished

    notify_run_finished(parent)


def fleet_run(
    *,
    group: GroupConfig,
    members: list,
    caller: Caller,
    policy: FleetPolicy,
    options: RunOptions,
    plan_hash: str = "",
    on_member_done: Callable[[str, str, str], None] = lambda name, state, message: None,
) -> FleetOutcome:
    """Run ``members`` (Targets) in this process under ``policy``; every member gets
    its own Run row (child of the group's) and audit row, the group one of each."""
    names = [member.name for member in members]
    parent = group_parent_create(group, caller, names, policy, plan_hash)
    parent.state = Run.State.RUNNING
    parent.started_at = timezone.now()
    parent.save(update_fields=["state", "started_at"])
    outcome = FleetOutcome(parent)
    lock = threading.Lock()
    # Each pool thread keeps its console connection from member to member (a new one
    # per member cost a PostgreSQL backend each); they are closed once the pool is done.
    console_connections: list = []

    def run_member(member) -> tuple[str, str, str]:
        close_old_connections()
        console = connections[DEFAULT_DB_ALIAS]
        with lock:
            if not any(known is console for known in console_connections):
                console.inc_thread_sharing()  # closed from the calling thread below
                console_connections.append(console)
        run = run_create(target_name=member.name, caller=caller, action="run")
        run.parent = parent
        run.save(update_fields=["parent"])
        try:
            result = run_execute(target_name=member.name, caller=caller, options=options, run=run)
            state = {
                "success": Run.State.SUCCESS,
                "up_to_date": Run.State.UP_TO_DATE,
                "cancelled": Run.State.CANCELLED,
            }.get(result.status, Run.State.FAILED)
            failure = result.failure
            message = (
                f"{failure.version}_{failure.name}: {failure.error}"
                if failure
                else f"{len(result.applied)} applied"
            )
        except LockNotAcquired as exc:
            state, message = Run.State.LOCKED, exc.message
        except MigrationConsoleError as exc:
            state, message = Run.State.ERROR, exc.message
        return member.name, state, message

    queue = list(members)
    running: dict = {}
    with ThreadPoolExecutor(max_workers=policy.parallel, thread_name_prefix="fleet") as pool:
        while queue or running:
            failed = outcome.count(
                Run.State.FAILED, Run.State.ERROR, Run.State.REFUSED, Run.State.LOCKED
            )
            canaries = [m.name for m in members[: policy.canary]]
            can = members_to_start(
                policy,
                total=len(members),
                started=len(members) - len(queue),
                running=len(running),
                failed=failed,
                canaries_done=all(name in outcome.results for name in canaries),
                canaries_ok=all(
                    outcome.results.get(n, OK_STATES[0]) in OK_STATES for n in canaries
                ),
            )
            for _ in range(can):
                member = queue.pop(0)
                running[pool.submit(run_member, member)] = member
            if not running:
                break  # stopped: nothing runs and nothing may start
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                running.pop(future)
                name, state, message = future.result()
                with lock:
                    outcome.results[name] = state
                on_member_done(name, state, message)
    for console in console_connections:
        console.close()
        console.dec_thread_sharing()
    outcome.skipped = [member.name for member in queue]
    group_parent_finish(parent, outcome, caller)
    return outcome


def group_advance(parent_id: int) -> None:
    """The job executor's step (console and API group runs): start what the policy
    allows now, or settle the parent once every started member has ended."""
    from migration_console.core.services.jobs import job_defer

    with transaction.atomic():
        parent = Run.objects.select_for_update().filter(pk=parent_id).first()
        if parent is None or parent.finished:
            return
        arguments = parent.arguments or {}
        names = list(arguments.get(MEMBERS_KEY, []))
        policy = FleetPolicy(
            parallel=int(arguments.get("parallel", 4)),
            canary=int(arguments.get("canary", 0)),
            on_error=str(arguments.get("on_error", "stop")),
        )
        # Names and states only: a member's steps can be large, and this runs once per
        # member of a thousand-member group.
        children = dict(parent.members.values_list("target", "state"))
        finished = {name: state for name, state in children.items() if state in Run.FINISHED_STATES}
        running = len(children) - len(finished)
        failed = sum(1 for state in finished.values() if state not in OK_STATES)
        canaries = names[: policy.canary]
        can = members_to_start(
            policy,
            total=len(names),
            started=len(children),
            running=running,
            failed=failed,
            canaries_done=all(name in finished for name in canaries),
            canaries_ok=all(finished.get(n, OK_STATES[0]) in OK_STATES for n in canaries),
        )
        if parent.cancel_requested_by:
            can = 0  # cancelled: the members running end, none starts
        caller = Caller.of_run(parent)
        for name in names[len(children) : len(children) + can]:
            child = run_create(target_name=name, caller=caller, action="run")
            child.parent = parent
            child.save(update_fields=["parent"])
            # A worker defers on procrastinate's own connection: a job made visible
            # before this transaction commits is taken by an idle worker that finds no
            # Run yet, and the member stays queued forever.
            transaction.on_commit(lambda child=child: _member_defer(child, job_defer))
            running += 1
        if parent.state == Run.State.QUEUED:
            parent.state, parent.started_at = Run.State.RUNNING, timezone.now()
            parent.save(update_fields=["state", "started_at"])
        if running:
            return
        outcome = FleetOutcome(parent, results=finished, skipped=names[len(children) :])
        group_parent_finish(parent, outcome, caller)


def _member_defer(child: Run, job_defer) -> None:
    job_defer(child, None)  # the row is already queued; a worker may have claimed it since
    Run.objects.filter(pk=child.pk).update(job_id=child.job_id)


def group_plan_hash(group: GroupConfig, members: list) -> str:
    """The members found now and the group's files: a change to either before the run
    starts makes an approved request stale."""
    import hashlib

    from migration_console.core.services.discovery import discover_set

    digest = hashlib.sha256(group.name.encode())
    for member in members:
        digest.update(b"\0" + member.name.encode())
    if group.path:
        for migration in discover_set(group.path).files:
            digest.update(f"\0{migration.version}:{migration.checksum}".encode())
    return digest.hexdigest()


def group_run_start(
    *,
    group: GroupConfig,
    caller: Caller,
    run_at=None,
    policy=None,
    expected_plan_hash: str | None = None,
) -> Run:
    """A console or API run of every member: the group's parent Run, executed by the
    workers one member job at a time per member (``group_advance``), subject to the
    group's approvals and window like any run. ``expected_plan_hash``: the plan the
    caller confirmed; a member or file added since refuses the run."""
    from migration_console.core.services.groups import group_members
    from migration_console.core.services.jobs import run_start

    members = group_members(group)
    plan_hash = group_plan_hash(group, members)
    if expected_plan_hash and expected_plan_hash != plan_hash:
        raise RunRefused(
            f"group {group.name} changed since the plan was shown (a member or a file was "
            "added, removed or changed); review the new plan and confirm again",
            reason="plan_changed",
        )
    policy = policy or FleetPolicy.of(group)
    return run_start(
        target_name=group.name,
        caller=caller,
        plan_hash=plan_hash,
        planned=[member.name for member in members],
        arguments={
            GROUP_KEY: group.name,
            MEMBERS_KEY: [m.name for m in members],
            **policy.as_dict(),
        },
        run_at=run_at,
    )


def group_status_answer(group: GroupConfig) -> dict:
    from migration_console.core.services.groups import group_status

    members = [summary.as_dict() for summary in group_status(group)]
    columns = ("applied_count", "pending_count", "failed_count", "drifted_count")
    return {
        "group": group.name,
        "members": members,
        "total_members": len(members),
        "totals": {column: sum(m[column] for m in members) for column in columns},
    }
