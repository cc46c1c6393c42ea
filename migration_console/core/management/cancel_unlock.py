"""``migrate_sql cancel <run id>`` and ``migrate_sql unlock``: argv to the control
services (core/services/control.py) and their answers to text, JSON and exit codes:
0 done (or nothing locked), 2 refused or bad input, 1 the run did not stop or the
lock is still held."""

import sys

from django.core.management.base import CommandError

from migration_console.core.services.caller import Caller
from migration_console.core.services.errors import EXIT_BAD_INPUT, EXIT_FAILED


def cancel(command, options) -> None:
    from migration_console.core.services.control import run_cancel

    raw = options["version"] or ""
    if not raw.isdigit():
        raise CommandError(
            "cancel needs a run id, e.g. `migrate_sql cancel 42`", returncode=EXIT_BAD_INPUT
        )
    run = run_cancel(run_id=int(raw), caller=Caller.cli())
    if command.as_json:
        command.emit_json(
            {
                "id": run.pk,
                "target": run.target,
                "action": run.action,
                "state": run.state,
                "finished": run.finished,
                "cancel_requested_by": run.cancel_requested_by,
                "message": run.message,
            }
        )
    if run.state == run.State.CANCELLED:
        command.say(command.style.SUCCESS(f"Run #{run.pk} cancelled: {run.message}"))
        return
    if run.finished:
        raise CommandError(
            f"run #{run.pk} ended {run.state} before the cancel took effect: {run.message}",
            returncode=EXIT_FAILED,
        )
    raise CommandError(
        f"run #{run.pk} was asked to stop but is still running (its runner is frozen or busy "
        f"outside the database); it stops before its next file, or free its lock with "
        f"`migrate_sql unlock --database {run.target} --force`",
        returncode=EXIT_FAILED,
    )


def unlock(command, target, options) -> None:
    from migration_console.core.services.control import lock_break, lock_inspect

    caller = Caller.cli()
    expected_pid = None
    if not options["yes"]:
        seen = lock_inspect(target_name=target.name)
        if seen.holder is None:
            command.say(f"{target.name} is not locked; nothing to break.")
            if command.as_json:
                command.emit_json(
                    {"database": target.name, "status": "not_locked", "holder": None, "run": None}
                )
            return
        command.say(seen.describe())
        if seen.run is not None and not options["force"]:
            command.say(
                command.style.WARNING(
                    f"That is a live run of this console: `migrate_sql cancel {seen.run.pk}` "
                    "stops it cleanly; --force terminates its session instead."
                )
            )
        if not sys.stdin.isatty():
            raise CommandError(
                "confirmation needed but there is no terminal; pass --yes to terminate the "
                "holder's session without asking",
                returncode=EXIT_BAD_INPUT,
            )
        answer = input(f"Terminate pid {seen.holder.pid} to free the lock? Continue? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise CommandError("aborted, nothing changed", returncode=EXIT_BAD_INPUT)
        expected_pid = seen.holder.pid
    result = lock_break(
        target_name=target.name, caller=caller, force=options["force"], expected_pid=expected_pid
    )
    if command.as_json:
        command.emit_json(result)
    style = command.style.SUCCESS if result["status"] == "unlocked" else (lambda text: text)
    command.say(style(result["message"] + "."))
