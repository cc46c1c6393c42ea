"""Look up configured targets and open connections to them."""

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from django.conf import settings

from migration_console.core.services.errors import TargetUnavailable, UnknownTarget
from migration_console.targets import DEFAULT_TARGET, TargetConfig

# A killed runner's backend notices the closed socket within this interval even
# while it is busy in a long statement, and releases its transaction and lock.
CONNECTION_CHECK_INTERVAL = "2s"
CONNECT_TIMEOUT_SECONDS = 10
MEMBER_SEPARATOR = "/"  # <group>/<schema>: a member of a schema group
T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    name: str
    dsn: str = field(repr=False)  # may hold a password
    schema: str
    path: str
    # Members of a schema group run with their schema first on the search_path, so a
    # tenant's files create their objects in the tenant's schema.
    search_path: str | None = None
    group: str = ""  # the group it is a member of, if any

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
    if MEMBER_SEPARATOR in name:
        from migration_console.core.services.groups import member_target

        return member_target(name, path=path)
    config: TargetConfig | None = settings.MIGRATION_TARGETS.get(name)
    if config is None:
        raise UnknownTarget(f"unknown database {name!r}")
    return Target(
        name=config.name,
        dsn=config.dsn,
        schema=config.schema,
        path=os.path.abspath(path) if path else config.path,
    )


def target_connect(
    target: Target, *, application_name: str, autocommit: bool = True, read_only: bool = False
):
    """A psycopg connection to a target, recognisable in pg_stat_activity.
    ``read_only``: every transaction of the session is READ ONLY (set at start-up,
    no extra round trip)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(target.dsn)
    options = params.pop("options", "")
    options = f"{options} -c client_connection_check_interval={CONNECTION_CHECK_INTERVAL}".strip()
    if read_only:
        options += " -c default_transaction_read_only=on"
    if target.search_path:
        options += f" -c search_path={target.search_path}"
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    conninfo = make_conninfo(**params, application_name=application_name[:63], options=options)
    try:
        return psycopg.connect(conninfo, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines()) or "connection failed"
        raise TargetUnavailable(
            f"cannot connect to {target.name} ({target.display_dsn}): {reason}"
        ) from None


class SharedReadConnection:
    """One reusable read-only session to a target, private to a thread of one
    process; ``facts`` caches what cannot change during the session (e.g. the
    database name)."""

    def __init__(self, target: Target, conn) -> None:
        self.dsn = target.dsn
        self.pid = os.getpid()
        self.conn = conn
        self.facts: dict = {}

    def usable_for(self, target: Target) -> bool:
        return (
            self.dsn == target.dsn
            and self.pid == os.getpid()
            and not self.conn.closed
            and not self.conn.broken
        )


_read_local = threading.local()
# Sessions inherited through fork() (gunicorn's preload_app) belong to the parent:
# the child must neither use nor close them (closing sends Terminate on the shared
# socket), so it keeps them here, untouched, for the life of the process.
_inherited: list = []


def _discard(entry: SharedReadConnection) -> None:
    if entry.pid != os.getpid():
        _inherited.append(entry)
        return
    with contextlib.suppress(Exception):
        entry.conn.close()


def target_read(target: Target, work: Callable[[SharedReadConnection], T]) -> T:
    """Run ``work`` on this thread's reusable read-only session to ``target``.

    For selectors only (status): runs, rollbacks and repairs open their own
    dedicated connections with ``target_connect``. The session is opened on first
    use, replaced when the target's DSN changes, the process forked or the
    connection broke, and a reused session that fails mid-way (server restart,
    idle timeout) is replaced and ``work`` retried once.
    """
    import psycopg

    sessions: dict[str, SharedReadConnection] = _read_local.__dict__.setdefault("sessions", {})
    entry = sessions.get(target.name)
    if entry is not None and not entry.usable_for(target):
        del sessions[target.name]
        _discard(entry)
        entry = None
    reused = entry is not None
    if entry is None:
        conn = target_connect(target, application_name="migration-console status", read_only=True)
        entry = sessions[target.name] = SharedReadConnection(target, conn)
    try:
        return work(entry)
    except (psycopg.OperationalError, psycopg.InterfaceError):
        if not (entry.conn.closed or entry.conn.broken):
            raise  # a query error (e.g. statement timeout) on a healthy session
        sessions.pop(target.name, None)
        _discard(entry)
        if not reused:
            raise TargetUnavailable(
                f"lost the connection to {target.name} ({target.display_dsn})"
            ) from None
    # The reused session had died: one retry on a fresh one.
    return target_read(target, work)
