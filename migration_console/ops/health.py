"""``/healthz`` (the process answers; no database) and ``/readyz`` (the console
database and every target accept a connection).

Neither needs a login: probes and load balancers call them. ``/readyz`` names
what fails but keeps connection details in the log, not in the answer.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from django.db import connections
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from migration_console.core.services.targets import target_connect, target_get, target_names

logger = logging.getLogger(__name__)

CONSOLE = "console"
# libpq's connect_timeout (it rounds anything below 2 up to 2 seconds).
TARGET_CONNECT_TIMEOUT = 3


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


@never_cache
@require_GET
def readyz(request):
    names = target_names()
    with ThreadPoolExecutor(max_workers=min(8, len(names) + 1)) as pool:
        console = pool.submit(_console_reachable)
        targets = {name: pool.submit(_target_reachable, name) for name in names}
        problems = {CONSOLE: console.result()}
        problems.update({name: future.result() for name, future in targets.items()})
    failing = [name for name, problem in problems.items() if problem]
    for name in failing:
        logger.warning("readyz: %s unreachable: %s", name, problems[name])
    checks = {name: ("unreachable" if problem else "ok") for name, problem in problems.items()}
    if failing:
        return JsonResponse(
            {"status": "unavailable", "failing": failing, "checks": checks}, status=503
        )
    return JsonResponse({"status": "ready", "checks": checks})
