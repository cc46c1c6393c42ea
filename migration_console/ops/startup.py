"""What happens when the console starts serving (wsgi.py; once in gunicorn's master
with ``preload_app``). Management commands never come through here.

* With ``DJANGO_DEBUG`` off, serving needs ``REDIS_URL``: rate limits must be shared
  by every worker (a per-process memory cache would multiply each limit).
* ``SKIP_MIGRATIONS=false`` applies the pending migrations of every target through
  ``run_execute`` (channel ``startup``): same runner, lock and audit as any channel.
  A failure is logged and recorded, and the console still starts so that it can
  show what went wrong.
"""

import logging

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

logger = logging.getLogger(__name__)

STARTUP_ACTOR = "startup"

_migrated = False


def require_serving_settings() -> None:
    if not settings.DEBUG and not settings.REDIS_URL:
        raise ImproperlyConfigured(
            "REDIS_URL is required to serve the console with DJANGO_DEBUG off: rate limits "
            "need a cache shared by every worker (e.g. REDIS_URL=redis://redis:6379/0). "
            "Management commands such as migrate_sql do not need it."
        )


def migrate_on_startup() -> dict[str, str]:
    """Apply pending migrations of every target unless SKIP_MIGRATIONS; once per process.

    Returns target name -> outcome (``success``, ``up_to_date``, ``failed``, or the
    error class) for the log and for tests.
    """
    global _migrated
    if settings.SKIP_MIGRATIONS or _migrated:
        return {}
    _migrated = True

    from migration_console.core.models import Channel
    from migration_console.core.services.caller import Caller
    from migration_console.core.services.errors import MigrationConsoleError
    from migration_console.core.services.runner import RunOptions
    from migration_console.core.services.runs import run_execute
    from migration_console.core.services.targets import target_names

    caller = Caller(actor=STARTUP_ACTOR, channel=Channel.STARTUP)
    results: dict[str, str] = {}
    try:
        for name in target_names():
            try:
                outcome = run_execute(target_name=name, caller=caller, options=RunOptions())
            except MigrationConsoleError as exc:
                results[name] = type(exc).__name__
                logger.error("startup: migrating %s refused: %s", name, exc.message)
                continue
            except Exception:
                results[name] = "error"
                logger.exception("startup: migrating %s failed", name)
                continue
            results[name] = outcome.status
            if outcome.failure:
                logger.error(
                    "startup: %s: %s_%s failed: %s",
                    name,
                    outcome.failure.version,
                    outcome.failure.name,
                    outcome.failure.error,
                )
            else:
                logger.info(
                    "startup: %s: %s (%d applied)", name, outcome.status, len(outcome.applied)
                )
    finally:
        # gunicorn forks its workers after this: no connection may be shared with them.
        connections.close_all()
    return results


def serving_started() -> None:
    require_serving_settings()
    migrate_on_startup()
