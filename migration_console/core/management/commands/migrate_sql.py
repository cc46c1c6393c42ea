"""``manage.py migrate_sql``: the emergency, CI/CD and Kubernetes Job door.

Only translates argv to service calls and results to text or JSON; exit codes:
0 success, 1 a migration failed (or ``check`` found work), 2 bad input or a
refused run, 3 lock not acquired in time.
"""

import sys
from functools import cached_property

import psycopg
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from migration_console.core.formatting import (
    STATE_MARKS,
    format_duration,
    readable_json,
    run_answer,
)
from migration_console.core.management import cancel_unlock
from migration_console.core.models import AuditEvent
from migration_console.core.services.audit import audit_record
from migration_console.core.services.caller import Caller
from migration_console.core.services.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    MigrationConsoleError,
    RunRefused,
)
from migration_console.core.services.runner import RunObserver, RunOptions
from migration_console.core.services.scheduling import target_config
from migration_console.core.services.status import target_status
from migration_console.core.services.targets import target_get
from migration_console.targets import DEFAULT_TARGET

ACTIONS = (
    "run",
    "status",
    "history",
    "check",
    "plan",
    "rollback",
    "baseline",
    "repair",
    "cancel",
    "unlock",
)
MAINTENANCE_ACTIONS = ("rollback", "baseline", "repair")
POSITIONAL_ACTIONS = (*MAINTENANCE_ACTIONS, "cancel")  # the version positional: a run id
RULE = "=" * 72


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ValueError(value)


def describe_settings(effective) -> str:
    """``one transaction, lock_timeout 1s x11 attempts``: what a file runs with, for ``plan``."""
    mode = "one transaction" if effective.transaction else "no transaction"
    text = f"{mode}, lock_timeout {effective.lock_timeout}"
    if effective.transaction:
        text += f" x{1 + effective.lock_retries} attempts"
    if effective.statement_timeout:
        text += f", statement_timeout {effective.statement_timeout}"
    return text


CHANGING_ACTIONS = ("run", "rollback", "baseline", "repair")


def describe_policy(config) -> str:
    parts = []
    if config.approvals:
        parts.append(f"requires {config.approvals} approval(s)")
    if config.window:
        parts.append(f"changes only inside its window {config.window!r}")
    return " and ".join(parts)


class ConsoleOutput(RunObserver):
    """Prints progress in the seed guide's look."""

    def __init__(self, command: "Command"):
        self.command = command
        self._last_wait = None  # what the last lock-wait line said, not to repeat it

    def migration_started(self, migration) -> None:
        self._last_wait = None
        self.command.say(f"  -> Running {migration.filename} ...", ending="")
        self.command.stdout.flush()

    def lock_waiting(self, wait) -> None:
        said = (wait.attempt, wait.next_attempt_in_seconds is None, [b.pid for b in wait.blockers])
        if said == self._last_wait:
            return
        if self._last_wait is None:
            self.command.say("")  # end the running line
        self._last_wait = said
        self.command.say(self.command.style.WARNING(f"     {wait.message}"))
        self.command.stdout.flush()

    def migration_finished(self, step) -> None:
        style = self.command.style
        if self._last_wait is not None:
            self.command.say("    ", ending="")  # the result goes under the wait lines
        if step.status == "completed":
            tries = f", {step.attempts} attempts" if step.attempts > 1 else ""
            self.command.say(style.SUCCESS(f" OK ({format_duration(step.duration_ns)}{tries})"))
        elif step.status == "cancelled":
            self.command.say(style.WARNING(f" CANCELLED, rolled back ({step.error})"))
        else:
            self.command.say(style.ERROR(f" FAILED ({format_duration(step.duration_ns)})"))
            for line in (step.error or "").splitlines():
                self.command.say(style.ERROR(f"     {line}"))


class MaintenanceOutput(ConsoleOutput):
    """Progress of rollback, baseline and repair: the same look, the right verb."""

    VERBS = {"rollback": "Rolling back", "baseline": "Recording", "repair": "Repairing"}

    def __init__(self, command: "Command", action: str):
        super().__init__(command)
        self.verb = self.VERBS[action]

    def migration_started(self, migration) -> None:
        self.command.say(f"  -> {self.verb} {migration.filename} ...", ending="")
        self.command.stdout.flush()


class Command(BaseCommand):
    help = "Show, check and apply the SQL migrations of a target database."
    # System checks would import every URLconf, view and admin module first; a
    # Kubernetes Job or readiness probe needs none of them (`manage.py check` does).
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("action", nargs="?", default="run", choices=ACTIONS)
        parser.add_argument(
            "version",
            nargs="?",
            help="rollback/baseline/repair: the migration version; cancel: the run id",
        )
        parser.add_argument(
            "--status",
            action="store_const",
            const="status",
            dest="status_flag",
            help="alias of the status action",
        )
        parser.add_argument(
            "--database", default=DEFAULT_TARGET, help="target name (default db_main)"
        )
        parser.add_argument("--path", help="directory of migration files (default: the target's)")
        parser.add_argument(
            "--group", help="status/run: every member of this group of targets (a fleet)"
        )
        parser.add_argument(
            "--parallel", type=int, help="run --group: members at once (default: the group's)"
        )
        parser.add_argument(
            "--canary",
            type=int,
            help="run --group: members that run first, alone (default: the group's)",
        )
        parser.add_argument(
            "--on-error",
            choices=("stop", "continue"),
            help="run --group: after a failed member, start no other (stop) or go on",
        )
        parser.add_argument(
            "--yes",
            "-y",
            "--no-input",
            "--noinput",
            action="store_true",
            dest="yes",
            help="do not ask for confirmation",
        )
        parser.add_argument(
            "--no-lock",
            action="store_true",
            dest="no_lock",
            help="skip the advisory lock (one-instance use only)",
        )
        parser.add_argument(
            "--safe",
            type=parse_bool,
            default=True,
            metavar="BOOL",
            help="--safe=false is an alias of --no-lock",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help="machine-readable output (the API's shapes)",
        )
        parser.add_argument(
            "--allow-out-of-order",
            action="store_true",
            help="run: also apply pending files older than the newest applied one",
        )
        parser.add_argument(
            "--allow-drift",
            action="store_true",
            help="run: proceed although applied migrations are drifted or missing",
        )
        parser.add_argument(
            "--backup",
            dest="backup_dir",
            metavar="DIR",
            help="run: pg_dump the target into DIR before the first change "
            "(default MIGRATION_BACKUP_DIR)",
        )
        parser.add_argument(
            "--strict-lint", action="store_true", help="run: refuse on error-level squawk findings"
        )
        parser.add_argument(
            "--mark-applied",
            action="store_true",
            help="repair: record a failed migration as completed (fixed by hand)",
        )
        parser.add_argument(
            "--break-glass",
            action="store_true",
            help="run/rollback/baseline/repair on a target with approvals or a window: "
            "an emergency change past that policy, audited and posted as break-glass",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="unlock: terminate the holder even when it is a live run of this console",
        )

    # --- output helpers -----------------------------------------------------
    def say(self, message: str = "", ending: str | None = None) -> None:
        if self.verbosity > 0 and not self.as_json:
            self.stdout.write(message, ending=ending)

    def emit_json(self, data: dict) -> None:
        self.stdout.write(readable_json(data))

    def banner(self, target, title: str) -> None:
        self.say(RULE)
        self.say(self.style.MIGRATE_HEADING(f" Migration Console: {title}"))
        self.say(f" database: {target.name} ({target.display_dsn}), schema: {target.schema}")
        self.say(f" path:     {target.path}")
        self.say(RULE)

    def status_line(self, item) -> str:
        styled = self.styled_marks[item.status]
        label = f"{item.version}_{item.name}"
        line = f" {styled} {label}"
        row = item.row
        if row is not None:
            line = (
                f" {styled} {label:<36} {row.applied_at:%Y-%m-%d %H:%M:%S} "
                f"{format_duration(row.duration_ns):>8}  {row.applied_by}"
            )
        if item.status == "drifted":
            line += f"\n{'':16}recorded {item.checksum[:12]}, file now {item.file_checksum[:12]}"
        if item.error:
            line += f"\n{'':16}{item.error.splitlines()[0]}"
        return line

    @cached_property  # 10,000 status lines share these
    def styled_marks(self) -> dict[str, str]:
        style = {
            "completed": self.style.SUCCESS,
            "pending": self.style.WARNING,
            "failed": self.style.ERROR,
            "drifted": self.style.ERROR,
            "missing": self.style.ERROR,
            "out_of_order": self.style.WARNING,
        }
        return {status: paint(f"[{STATE_MARKS[status]:^12}]") for status, paint in style.items()}

    def say_problems(self, status, consequence: str) -> None:
        """The file set's problems, after the rows that could be read despite them."""
        if not status.problems:
            return
        self.say(RULE)
        self.say(self.style.ERROR(f" PROBLEMS in the migration files ({consequence}):"))
        for problem in status.problems:
            self.say(self.style.ERROR(f"   {problem.file}: {problem.message}"))

    @staticmethod
    def problems_error(target, status) -> CommandError:
        first = status.problems[0]
        return CommandError(
            f"{target.name}: {len(status.problems)} problem(s) in the migration files, "
            f"first {first.file}: {first.message}",
            returncode=EXIT_FAILED,
        )

    # --- entry ----------------------------------------------------------------
    def handle(self, *args, **options):
        self.verbosity = options["verbosity"]
        self.as_json = options["as_json"]
        action = options["status_flag"] or options["action"]
        if options["version"] and action not in POSITIONAL_ACTIONS:
            raise CommandError(
                f"unexpected argument {options['version']!r} for {action}",
                returncode=EXIT_BAD_INPUT,
            )
        try:
            if options["group"]:
                return self.handle_group(action, options)
            target = target_get(options["database"], path=options["path"])
            self.break_glass = self.policy_gate(target, action, options["break_glass"])
            return getattr(self, f"handle_{action}")(target, options)
        except MigrationConsoleError as exc:
            if self.as_json:
                self.emit_json(exc.as_dict())
            raise CommandError(exc.message, returncode=exc.exit_code) from None
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())
            raise CommandError(
                f"{options['database']}: database error: {reason}", returncode=EXIT_FAILED
            ) from None
        except DatabaseError as exc:
            # The console's own database (DATABASE_URL): runs and audit rows live there,
            # and a run is refused before touching the target when it cannot be recorded.
            reason = " ".join(str(exc).split())
            if getattr(exc.__cause__, "sqlstate", None) in ("42703", "42P01"):
                reason += (
                    "; the console database is older than this version of Migration Console: "
                    "run `python manage.py migrate` first"
                )
            raise CommandError(
                f"console database (DATABASE_URL) error: {reason}", returncode=EXIT_FAILED
            ) from None

    def handle_group(self, action: str, options) -> None:
        from migration_console.core.management import group_commands
        from migration_console.core.services.groups import group_get

        if action not in group_commands.GROUP_ACTIONS:
            raise CommandError(
                f"--group works with status and run, not {action}", returncode=EXIT_BAD_INPUT
            )
        for flag in ("parallel", "canary"):
            if options[flag] is not None and options[flag] < (1 if flag == "parallel" else 0):
                raise CommandError(
                    f"--{flag} must be at least {1 if flag == 'parallel' else 0}",
                    returncode=EXIT_BAD_INPUT,
                )
        group = group_get(options["group"])
        if action == "status":
            return group_commands.status(self, group.name, options)
        self.break_glass = self.policy_gate(group, action, options["break_glass"])
        return group_commands.run(self, group.name, options, break_glass=self.break_glass)

    def policy_gate(self, target, action: str, break_glass: bool) -> bool:
        """Refuse (exit 2, audited) a change to a target (or group) whose policy asks for
        approvals or a window, unless --break-glass; True for a break-glass change."""
        config = target_config(target.name)
        if action not in CHANGING_ACTIONS or config is None or not config.has_policy:
            return False
        if break_glass:
            self.say(
                self.style.ERROR(
                    f" BREAK-GLASS: {target.name} {describe_policy(config)}; this {action} "
                    "goes past it and is audited and posted as break-glass"
                )
            )
            return True
        message = (
            f"{target.name} {describe_policy(config)}: use the console or the API, or pass "
            "--break-glass for an emergency change (audited and posted as break-glass)"
        )
        audit_record(
            caller=Caller.cli(),
            action=action,
            outcome=AuditEvent.Outcome.REFUSED,
            target=target.name,
            message=message,
        )
        raise RunRefused(message, reason="policy")

    def handle_status(self, target, options):
        status = target_status(target)
        if self.as_json:
            self.emit_json(status.as_dict(lint=True))
            if status.problems:
                raise self.problems_error(target, status)
            return
        self.banner(target, "status")
        if status.items:  # one write for all lines rather than one per migration
            self.say("\n".join(self.status_line(item) for item in status.items))
        counts = status.counts()
        self.say(RULE)
        self.say(
            " " + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
            if status.items
            else " no migration files"
        )
        if status.lock_holder:
            self.say(f" locked by {status.lock_holder.describe()}")
        self.say_problems(status, "run, rollback, baseline and repair refuse until they are fixed")
        if status.problems:
            raise self.problems_error(target, status)

    def handle_history(self, target, options):
        status = target_status(target, with_lock_holder=False)
        applied = sorted(
            (i for i in status.items if i.row is not None),
            key=lambda i: i.applied_at,
            reverse=True,
        )
        # The tracking table is complete whatever the files say: history lists the
        # set's problems but exits 0 (``status`` and ``check`` are the gates).
        if self.as_json:
            self.emit_json(
                {
                    "total": len(applied),
                    "migrations": [i.as_dict() for i in applied],
                    "problems": [p.as_dict() for p in status.problems],
                }
            )
            return
        self.banner(target, "history")
        for item in applied:
            self.say(
                f" {item.applied_at:%Y-%m-%d %H:%M:%S}  {item.version}_{item.name:<40} "
                f"{format_duration(item.duration_ns):>9}  {item.applied_by:<16} {item.row.status}"
            )
        self.say(RULE)
        self.say(f" {len(applied)} recorded")
        self.say_problems(status, "the rows above come from the tracking table")

    def handle_check(self, target, options):
        status = target_status(target, with_lock_holder=False)
        attention = [i for i in status.items if i.status != "completed"]
        if self.as_json:
            self.emit_json(
                {
                    "database": target.name,
                    "ok": not attention and not status.problems,
                    "counts": status.counts(),
                    "needs_attention": [i.as_dict() for i in attention],
                    "problems": [p.as_dict() for p in status.problems],
                }
            )
        else:
            for item in attention:
                self.say(self.status_line(item))
            self.say(
                f"{target.name}: "
                + (
                    "up to date"
                    if not attention
                    else f"{len(attention)} migration(s) need attention"
                )
            )
            self.say_problems(status, "run refuses until they are fixed")
        if status.problems:
            raise self.problems_error(target, status)
        if attention:
            raise CommandError(f"{target.name} is not up to date", returncode=EXIT_FAILED)

    def handle_plan(self, target, options):
        from migration_console.core.services.lint import lint_files

        status = target_status(target, with_lock_holder=False)
        pending = status.pending
        lint = lint_files([i.file for i in pending])
        if self.as_json:
            self.emit_json(
                {
                    "database": target.name,
                    "plan_hash": status.plan_hash,
                    "pending_migrations": [
                        {
                            **i.as_dict(),
                            "sql": i.file.sql,
                            "lint": lint[i.version].as_dict(),
                            "settings": i.file.settings.as_dict(),
                            "access_exclusive": [lock._asdict() for lock in i.file.exclusive_locks],
                        }
                        for i in pending
                    ],
                    "problems": [p.as_dict() for p in status.problems],
                }
            )
            return
        self.banner(target, "plan (nothing is executed)")
        for item in pending:
            self.say(
                self.style.MIGRATE_LABEL(
                    f"-- {item.file.filename}  [{STATE_MARKS[item.status]}, "
                    f"{describe_settings(item.file.settings)}, sha256 {item.checksum[:12]}]"
                )
            )
            self.say(item.file.sql.rstrip("\n"))
            self.say_lint(lint[item.version])
            for lock in item.file.exclusive_locks:
                self.say(
                    self.style.WARNING(
                        f"   lock: {lock.statement} on {lock.table} (line {lock.line}) takes an "
                        "ACCESS EXCLUSIVE lock; queries on it wait while it waits "
                        + (
                            "(lock_timeout per attempt, then retried)"
                            if item.file.settings.lock_retries
                            else "(lock_timeout, not retried)"
                        )
                    )
                )
            self.say("")
        self.say(RULE)
        self.say(f" {len(pending)} pending, plan {status.plan_hash}")
        self.say_problems(status, "run would refuse until they are fixed")

    def handle_run(self, target, options):
        from migration_console.core.services.runs import run_execute

        run_options = RunOptions(
            allow_out_of_order=options["allow_out_of_order"],
            allow_drift=options["allow_drift"],
            use_lock=not options["no_lock"] and options["safe"],
            backup_dir=options["backup_dir"],
            strict_lint=options["strict_lint"],
        )
        caller = Caller.cli(break_glass=self.break_glass)
        if not options["yes"]:
            status = target_status(target)
            status.refuse_problems()
            self.banner(target, "run")
            for item in status.items:
                self.say(self.status_line(item))
            if not status.pending:
                self.say(self.style.SUCCESS(" Database is up to date."))
                return
            if not sys.stdin.isatty():
                raise CommandError(
                    "confirmation needed but there is no terminal; pass --yes to apply "
                    f"{len(status.pending)} pending migration(s) without asking",
                    returncode=EXIT_BAD_INPUT,
                )
            answer = input(f"\n{len(status.pending)} pending. Continue? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                raise CommandError("aborted, nothing applied", returncode=EXIT_BAD_INPUT)
            run_options.expected_plan_hash = status.plan_hash
        else:
            self.banner(target, "run")

        outcome = run_execute(
            target_name=target.name,
            caller=caller,
            options=run_options,
            observer=ConsoleOutput(self),
            path=options["path"],
        )
        failure = outcome.failure
        if self.as_json:
            _, data = run_answer(outcome)
            if outcome.status == "cancelled":
                data = {**data, "status": "cancelled", "message": outcome.stopped}
                data.pop("error", None)
            if outcome.backup_file:
                data["backup_file"] = outcome.backup_file
            self.emit_json(data)
        if outcome.backup_file:
            self.say(f" Backup before the run: {outcome.backup_file}")
        if outcome.status == "cancelled":  # the plan did not complete: not a success
            applied = ", ".join(step.version for step in outcome.applied) or "none"
            raise CommandError(
                f"run {outcome.stopped}; applied before it: {applied}", returncode=EXIT_FAILED
            )
        if failure:
            raise CommandError(
                f"{failure.version}_{failure.name} failed: {failure.error}",
                returncode=EXIT_FAILED,
            )
        self.say(RULE)
        if outcome.status == "up_to_date":
            self.say(self.style.SUCCESS(" Database is up to date; no pending migrations."))
        else:
            total = sum(step.duration_ns for step in outcome.steps)
            self.say(
                self.style.SUCCESS(
                    f" Applied {len(outcome.applied)} migration(s) in {format_duration(total)}."
                )
            )

    def say_lint(self, result) -> None:
        if result.unavailable:
            self.say(self.style.WARNING(f"-- lint: {result.unavailable}"))
            return
        if not result.findings:
            self.say("-- lint: no findings")
            return
        for finding in result.findings:
            style = self.style.ERROR if finding.level == "error" else self.style.WARNING
            self.say(style(f"-- lint {finding.describe()}"))

    def handle_cancel(self, target, options):
        cancel_unlock.cancel(self, options)

    def handle_unlock(self, target, options):
        cancel_unlock.unlock(self, target, options)

    def handle_rollback(self, target, options):
        self.handle_maintenance("rollback", target, options)

    def handle_baseline(self, target, options):
        self.handle_maintenance("baseline", target, options)

    def handle_repair(self, target, options):
        self.handle_maintenance("repair", target, options)

    def handle_maintenance(self, action, target, options):
        from migration_console.core.services.maintenance import (
            maintenance_execute,
            maintenance_preview,
            maintenance_result,
        )

        version = options["version"]
        if not version:
            raise CommandError(
                f"{action} needs a version, e.g. `migrate_sql {action} 003`",
                returncode=EXIT_BAD_INPUT,
            )
        if options["mark_applied"] and action != "repair":
            raise CommandError("--mark-applied belongs to repair", returncode=EXIT_BAD_INPUT)
        caller, expected = Caller.cli(break_glass=self.break_glass), None
        if not options["yes"]:
            plan = maintenance_preview(
                action=action,
                target_name=target.name,
                version=version,
                caller=caller,
                mark_applied=options["mark_applied"],
                path=options["path"],
            )
            self.banner(target, f"{action} {version}")
            for change in plan.changes:
                self.say(f"  - {change.description}")
            if plan.changes:
                if not sys.stdin.isatty():
                    raise CommandError(
                        f"confirmation needed but there is no terminal; pass --yes to {action} "
                        f"({len(plan.changes)} change(s)) without asking",
                        returncode=EXIT_BAD_INPUT,
                    )
                answer = input(f"\n{len(plan.changes)} change(s). Continue? [y/N] ")
                if answer.strip().lower() not in ("y", "yes"):
                    raise CommandError("aborted, nothing changed", returncode=EXIT_BAD_INPUT)
            expected = plan.plan_hash
        else:
            self.banner(target, f"{action} {version}")

        outcome = maintenance_execute(
            action=action,
            target_name=target.name,
            version=version,
            caller=caller,
            mark_applied=options["mark_applied"],
            use_lock=not options["no_lock"] and options["safe"],
            expected_plan_hash=expected,
            observer=MaintenanceOutput(self, action),
            path=options["path"],
        )
        failure = outcome.failure
        if self.as_json:
            self.emit_json(maintenance_result(action, outcome))
        if failure:
            raise CommandError(outcome.message, returncode=EXIT_FAILED)
        self.say(RULE)
        self.say(self.style.SUCCESS(f" {outcome.message[:1].upper()}{outcome.message[1:]}."))
