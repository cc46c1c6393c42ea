"""Start a queued run outside the request: a detached ``migrate_sql <action> --run-id N``.

The web console creates the Run row (``runs.run_create``) and calls
``run_launch``; the child process claims the row, executes it through
``run_execute`` and keeps the row's progress current. It lives in its own
session, so a request timeout, a closed browser or a restarted web worker do
not stop it. A small thread in the launching process reaps the child and, if
it died before recording an outcome (import error, bad settings, killed),
marks the run ``error`` with the tail of its log and writes the audit row the
child could not write.

Run logs live in a private directory (``CONSOLE_RUN_LOG_DIR``, else
``$TMPDIR/migration-console-runs``): used only when it is a real directory that
this user owns and no one else can write, else a fresh ``mkdtemp`` one; each log
is created anew, 0600, never through a symlink.
"""

import logging
import os
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.utils import timezone

from migration_console.core.models import AuditEvent, Run
from migration_console.core.services.audit import audit_record
from migration_console.core.services.caller import Caller
from migration_console.core.services.runs import run_create

LOG_TAIL_BYTES = 2000
LOG_DIR_NAME = "migration-console-runs"
LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

logger = logging.getLogger(__name__)
_fallback_lock = threading.Lock()
_fallback_dir: Path | None = None


def run_log_dir() -> Path:
    configured = getattr(settings, "CONSOLE_RUN_LOG_DIR", None)
    path = Path(configured) if configured else Path(tempfile.gettempdir()) / LOG_DIR_NAME
    if _private_dir(path):
        return path
    logger.warning(
        "run logs: %s is not a private directory of this user (a symlink, another "
        "owner, or writable by others); using a fresh one instead",
        path,
    )
    return _fresh_private_dir()


def _private_dir(path: Path) -> bool:
    """Create ``path`` 0700, or accept an existing one only if it is a real directory
    owned by this user that nobody else can write to (then made 0700)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        return False
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return False  # someone else may already have planted entries in it
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700, follow_symlinks=False)
    return True


def _fresh_private_dir() -> Path:
    global _fallback_dir
    with _fallback_lock:
        if _fallback_dir is None or not _private_dir(_fallback_dir):
            _fallback_dir = Path(tempfile.mkdtemp(prefix=f"{LOG_DIR_NAME}-"))
        return _fallback_dir


def run_log_path(run: Run) -> Path:
    return run_log_dir() / f"run-{run.pk}.log"


def run_log_open(log_path: Path) -> int:
    """A new, empty 0600 log file at ``log_path``, never reached through a symlink.
    A file already there (a run id reused after the console database was recreated)
    is removed first: in a private directory only this user could have made it."""
    try:
        return os.open(log_path, LOG_FLAGS, 0o600)
    except FileExistsError:
        os.unlink(log_path)
        return os.open(log_path, LOG_FLAGS, 0o600)


def run_command(run: Run, action_args: list[str] | tuple[str, ...] = ()) -> list[str]:
    """argv of the runner process: ``migrate_sql <action> [args] --database T --run-id N --yes``."""
    return [
        sys.executable,
        str(Path(settings.BASE_DIR) / "manage.py"),
        "migrate_sql",
        run.action,
        *action_args,
        "--database",
        run.target,
        "--run-id",
        str(run.pk),
        "--yes",
    ]


def run_launch(
    *,
    run: Run,
    action_args: list[str] | tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    reap: bool = True,
) -> subprocess.Popen:
    """Spawn the detached runner for a queued ``run`` and return at once."""
    log_path = run_log_path(run)
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("DJANGO_SETTINGS_MODULE", "migration_console.settings")
    child_env["PYTHONUNBUFFERED"] = "1"
    try:
        log_fd = run_log_open(log_path)
    except OSError as exc:
        _mark_dead(run, f"could not open the run log: {exc}")
        raise
    with os.fdopen(log_fd, "wb") as log:
        try:
            process = subprocess.Popen(
                run_command(run, action_args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env,
                cwd=str(settings.BASE_DIR),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            _mark_dead(run, f"could not start the runner: {exc}")
            raise
    Run.objects.filter(pk=run.pk, state=Run.State.QUEUED).update(pid=process.pid)
    run.pid = process.pid
    if reap:
        threading.Thread(
            target=_reap, args=(process, run, log_path), name=f"reap-run-{run.pk}", daemon=True
        ).start()
    return process


def run_start(
    *,
    target_name: str,
    caller: Caller,
    plan_hash: str,
    planned: list[str] | None = None,
    action: str = "run",
    action_args: list[str] | tuple[str, ...] = (),
) -> Run:
    """Queue a run for ``caller`` bound to ``plan_hash`` and start its detached runner
    (any console action; the runner records it as ``caller``)."""
    run = run_create(target_name=target_name, caller=caller, plan_hash=plan_hash, action=action)
    if planned:
        run.planned = list(planned)
        run.save(update_fields=["planned"])
    try:
        run_launch(run=run, action_args=action_args)
    except OSError:
        run.refresh_from_db()  # marked ``error`` with the reason; the progress page shows it
    return run


def _log_tail(log_path: Path) -> str:
    try:
        with os.fdopen(os.open(log_path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _mark_dead(run: Run, message: str) -> bool:
    """Record an outcome for a run whose process ended without recording one."""
    updated = Run.objects.filter(pk=run.pk, state__in=[Run.State.QUEUED, Run.State.RUNNING]).update(
        state=Run.State.ERROR, message=message, finished_at=timezone.now(), current_version=""
    )
    if updated:
        audit_record(
            caller=Caller.of_run(run),
            action=run.action,
            outcome=AuditEvent.Outcome.ERROR,
            target=run.target,
            message=message,
            run=run,
        )
    return bool(updated)


def _reap(process: subprocess.Popen, run: Run, log_path: Path) -> None:
    code = process.wait()
    if code == 0:
        return
    try:
        reason = f"signal {-code}" if code < 0 else f"exit code {code}"
        tail = _log_tail(log_path)
        _mark_dead(
            run,
            f"the runner ended ({reason}) without recording an outcome"
            + (f":\n{tail}" if tail else ""),
        )
    finally:
        connection.close()
