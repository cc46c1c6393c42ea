"""``/healthz`` (the process answers; no database) and ``/readyz`` (the console
database and every target accept a connection).

Neither needs a login: probes and load balancers call them. ``/readyz`` names
what fails but keeps connection details in the log, not in the answer.

Because anyone may call ``/readyz``, it probes at most once per
``PROBE_INTERVAL`` seconds per process and answers from that result: a flood of
requests never becomes a flood of database logins (against a target with a
wrong password, each one a failed login in the server's log). Requests arriving
while a probe runs wait for it instead of starting their own.
"""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from django.conf import settings
from django.db import connections
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from migration_console.core.services.targets import target_connect, target_get, target_names

logger = logging.getLogger(__name__)

CONSOLE = "console"
# libpq's connect_timeout (it rounds anything below 2 up to 2 seconds).
TARGET_CONNECT_TIMEOUT = 3
PROBE_INTERVAL = 10.0  # seconds a probe's result is answered from

_probe_lock = threading.Lock()
_last_probe: tuple[float, object, dict[str, str | None]] | None = None  # (when, key, problems)


@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


def _console_reachable() -> str | None:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc) else ''}"
    finally:
        connections.close_all()


def _target_reachable(name: str) -> str | None:
    from psycopg.conninfo import make_conninfo

    try:
        target = target_get(name)
        quick = replace(
            target, dsn=make_conninfo(target.dsn, connect_timeout=TARGET_CONNECT_TIMEOUT)
        )
        with target_connect(quick, application_name="migration-console readyz"):
            pass
        return None
    except Exception as exc:
        return getattr(exc, "message", None) or type(exc).__name__


def _probe() -> dict[str, str | None]:
    """Connect once to the console database and to every target: name -> problem."""
    names = target_names()
    with ThreadPoolExecutor(max_workers=min(8, len(names) + 1)) as pool:
        console = pool.submit(_console_reachable)
        targets = {name: pool.submit(_target_reachable, name) for name in names}
        problems = {CONSOLE: console.result()}
        problems.update({name: future.result() for name, future in targets.items()})
    for name, problem in problems.items():
        if problem:
            logger.warning("readyz: %s unreachable: %s", name, problem)
    return problems


def _configuration() -> tuple:
    """What a probe's result depends on: a changed configuration (tests do that)
    is probed afresh."""
    console = settings.DATABASES["default"]
    targets = tuple(
        (name, config.dsn) for name, config in sorted(settings.MIGRATION_TARGETS.items())
    )
    return console.get("NAME"), console.get("HOST"), console.get("PORT"), targets


def readyz_problems() -> dict[str, str | None]:
    """The latest probe's result, probing again only when it is older than
    ``PROBE_INTERVAL``; concurrent callers share one probe."""
    global _last_probe
    key = _configuration()
    with _probe_lock:
        last = _last_probe
        if last is not None and last[1] == key and time.monotonic() - last[0] < PROBE_INTERVAL:
            return last[2]
        problems = _probe()
        _last_probe = (time.monotonic(), key, problems)
        return problems


def readyz_forget() -> None:
    """Drop the remembered probe (tests)."""
    global _last_probe
    with _probe_lock:
        _last_probe = None


@never_cache
@require_GET
def readyz(request):
    problems = readyz_problems()
    failing = [name for name, problem in problems.items() if problem]
    checks = {name: ("unreachable" if problem else "ok") for name, problem in problems.items()}
    if failing:
        return JsonResponse(
            {"status": "unavailable", "failing": failing, "checks": checks}, status=503
        )
    return JsonResponse({"status": "ready", "checks": checks})
