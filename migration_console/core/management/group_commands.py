"""``migrate_sql status --group NAME`` and ``migrate_sql run --group NAME [--parallel N]
[--canary N] [--on-error stop|continue]``: a group's members in this process (no
worker needed). Exit codes: status 0 when every member is up to date, 1 otherwise;
run 0 all succeeded, 1 any failed (or skipped after a failure), 3 any locked."""

import sys

from django.core.management.base import CommandError

from migration_console.core.services.caller import Caller
from migration_console.core.services.errors import EXIT_BAD_INPUT, EXIT_FAILED
from migration_console.core.services.fleet import FleetPolicy, fleet_run, group_status_answer
from migration_console.core.services.groups import group_get, group_members
from migration_console.core.services.runner import RunOptions

GROUP_ACTIONS = ("status", "run")


def status(command, group_name: str, options) -> None:
    group = group_get(group_name)
    answer = group_status_answer(group)
    members, totals = answer["members"], answer["totals"]
    attention = sum(
        1
        for m in members
        if m["problems"] or m["pending_count"] or m["failed_count"] or m["drifted_count"]
    )
    if command.as_json:
        command.emit_json(answer)
    else:
        command.say(f" group {group.name}: {len(members)} member(s)")
        width = max((len(m["database"]) for m in members), default=8)
        command.say(f" {'member':<{width}}  applied  pending  failed  drifted  problems")
        lines = [
            f" {m['database']:<{width}}  {m['applied_count']:>7}  {m['pending_count']:>7}  "
            f"{m['failed_count']:>6}  {m['drifted_count']:>7}  "
            + "; ".join(p["message"] for p in m["problems"])[:120]
            for m in members
        ]
        command.say("\n".join(lines))
        command.say(
            f" total: {totals['applied_count']} applied, {totals['pending_count']} pending, "
            f"{totals['failed_count']} failed, {totals['drifted_count']} drifted; "
            f"{attention} member(s) need attention"
        )
    if attention:
        raise CommandError(
            f"group {group.name}: {attention} member(s) not up to date", returncode=EXIT_FAILED
        )


def run(command, group_name: str, options, *, break_glass: bool) -> None:
    group = group_get(group_name)
    policy = FleetPolicy.of(
        group,
        parallel=options["parallel"],
        canary=options["canary"],
        on_error=options["on_error"],
    )
    members = group_members(group)
    if not options["yes"]:
        if not sys.stdin.isatty():
            raise CommandError(
                f"confirmation needed but there is no terminal; pass --yes to run the "
                f"{len(members)} member(s) of {group.name}",
                returncode=EXIT_BAD_INPUT,
            )
        answer = input(f"Run the pending migrations of {len(members)} member(s)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise CommandError("aborted, nothing applied", returncode=EXIT_BAD_INPUT)
    command.say(
        f" group {group.name}: {len(members)} member(s), parallel {policy.parallel}, "
        f"canary {policy.canary}, on error {policy.on_error}"
    )
    style = command.style

    def member_done(name: str, state: str, message: str) -> None:
        look = style.SUCCESS if state in ("success", "up_to_date") else style.ERROR
        command.say(look(f"  -> {name}: {state}") + f" ({message})")

    outcome = fleet_run(
        group=group,
        members=members,
        caller=Caller.cli(break_glass=break_glass),
        policy=policy,
        options=RunOptions(
            allow_out_of_order=options["allow_out_of_order"],
            allow_drift=options["allow_drift"],
            use_lock=not options["no_lock"] and options["safe"],
            strict_lint=options["strict_lint"],
        ),
        on_member_done=member_done,
    )
    if command.as_json:
        command.emit_json(
            {
                "group": group.name,
                "run": outcome.parent.pk,
                "status": "success" if outcome.exit_code == 0 else "failed",
                "message": outcome.summary(),
                "members": [
                    {"database": name, "state": state} for name, state in outcome.results.items()
                ],
                "skipped": outcome.skipped,
            }
        )
    command.say(f" {outcome.summary()}")
    if outcome.exit_code:
        raise CommandError(f"group {group.name}: {outcome.summary()}", returncode=outcome.exit_code)
