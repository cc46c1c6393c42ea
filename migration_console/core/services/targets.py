"""Look up configured targets and open connections to them."""

import os
from dataclasses import dataclass, field

from django.conf import settings

from migration_console.core.services.errors import TargetUnavailable, UnknownTarget
from migration_console.targets import DEFAULT_TARGET, TargetConfig

# A killed runner's backend notices the closed socket within this interval even
# while it is busy in a long statement, and releases its transaction and lock.
CONNECTION_CHECK_INTERVAL = "2s"
CONNECT_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Target:
    name: str
    dsn: str = field(repr=False)  # may hold a password
    schema: str
    path: str

    @property
    def display_dsn(self) -> str:
        """host/port/dbname/user only: safe for pages, logs, JSON and audit rows."""
        from psycopg.conninfo import conninfo_to_dict

        try:
            params = conninfo_to_dict(self.dsn)
        except Exception:
            return "(unparsable dsn)"
        keys = ("host", "port", "dbname", "user")
        return " ".join(f"{key}={params[key]}" for key in keys if params.get(key))


def target_names() -> list[str]:
    return list(settings.MIGRATION_TARGETS)


def target_get(name: str | None = None, *, path: str | None = None) -> Target:
    name = name or DEFAULT_TARGET
    config: TargetConfig | None = settings.MIGRATION_TARGETS.get(name)
    if config is None:
        raise UnknownTarget(f"unknown database {name!r}")
    return Target(
        name=config.name,
        dsn=config.dsn,
        schema=config.schema,
        path=os.path.abspath(path) if path else config.path,
    )


def target_connect(target: Target, *, application_name: str, autocommit: bool = True):
    """A psycopg connection to a target, recognisable in pg_stat_activity."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(target.dsn)
    options = params.pop("options", "")
    options = f"{options} -c client_connection_check_interval={CONNECTION_CHECK_INTERVAL}".strip()
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    conninfo = make_conninfo(**params, application_name=application_name[:63], options=options)
    try:
        return psycopg.connect(conninfo, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines()) or "connection failed"
        raise TargetUnavailable(
            f"cannot connect to {target.name} ({target.display_dsn}): {reason}"
        ) from None
