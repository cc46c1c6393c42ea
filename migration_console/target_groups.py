"""Groups of targets (fleets): the targets file's reserved ``groups:`` mapping.

A group's members are either the schemas a ``schemas:`` query finds on the group's
``dsn`` (each member ``<group>/<schema>``, with its own tracking table and advisory
lock, all sharing the group's ``path``), or existing targets (``targets: [...]``).
Read once by settings at start-up; a bad entry stops start-up naming its key.
"""

import os
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from migration_console.targets import (
    _NAME,
    GROUPS_KEY,
    TargetConfig,
    _check_dsn,
    _policy,
    _resolve_path,
    expand_env,
    read_targets_yaml,
)

_KEYS = {
    "dsn",
    "path",
    "schemas",
    "targets",
    "parallel",
    "canary",
    "on_error",
    "approvals",
    "window",
}
ON_ERROR = ("stop", "continue")
MAX_PARALLEL = 64


@dataclass(frozen=True)
class GroupConfig:
    name: str
    dsn: str  # schema groups: where the schemas live (may hold a password: never shown)
    path: str  # schema groups: the members' migration files
    schemas_query: str  # schema groups: one row per member, its schema name first
    targets: tuple[str, ...]  # target groups: the member targets
    parallel: int = 4
    canary: int = 0
    on_error: str = "stop"
    approvals: int = 0
    window: str = ""

    def __repr__(self) -> str:  # the dsn may hold a password
        return (
            f"GroupConfig({self.name!r}, members={'query' if self.schemas_query else self.targets})"
        )

    @property
    def has_policy(self) -> bool:
        return bool(self.approvals or self.window)


def _whole(entry: dict, key: str, where: str, default: int, low: int, high: int) -> int:
    value = entry.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ImproperlyConfigured(f"{where}.{key}: expected a whole number from {low} to {high}")
    return value


def _group(name: str, entry, targets: dict[str, TargetConfig]) -> GroupConfig:
    where = f"MIGRATION_TARGETS_FILE groups.{name}"
    if not _NAME.match(name):
        raise ImproperlyConfigured(f"{where}: group name {name!r} is not a valid identifier")
    if name in targets:
        raise ImproperlyConfigured(f"{where}: {name!r} is already a target's name")
    if not isinstance(entry, dict):
        raise ImproperlyConfigured(f"{where}: expected a mapping (schemas: or targets:)")
    unknown = sorted(set(map(str, entry)) - _KEYS)
    if unknown:
        raise ImproperlyConfigured(
            f"{where}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(_KEYS))})"
        )
    if ("schemas" in entry) == ("targets" in entry):
        raise ImproperlyConfigured(f"{where}: give exactly one of schemas: (a query) or targets:")
    dsn = path = query = ""
    members: tuple[str, ...] = ()
    if "schemas" in entry:
        query = entry["schemas"]
        if not isinstance(query, str) or not query.strip():
            raise ImproperlyConfigured(f"{where}.schemas: expected a SELECT returning schema names")
        if not isinstance(entry.get("dsn"), str):
            raise ImproperlyConfigured(f"{where}.dsn: missing")
        dsn = expand_env(entry["dsn"], f"{where}.dsn")
        _check_dsn(dsn, f"{where}.dsn")
        path = _resolve_path(
            expand_env(str(entry.get("path") or "migrations_sql"), f"{where}.path")
        )
        if not os.path.isdir(path) or not os.access(path, os.R_OK | os.X_OK):
            raise ImproperlyConfigured(f"{where}.path: {path} is not a readable directory")
    else:
        listed = entry["targets"]
        if not isinstance(listed, list) or not listed:
            raise ImproperlyConfigured(f"{where}.targets: expected a list of target names")
        for member in listed:
            if str(member) not in targets:
                raise ImproperlyConfigured(f"{where}.targets: {member!r} is not a target")
        members = tuple(str(member) for member in listed)
        for key in ("dsn", "path"):
            if key in entry:
                raise ImproperlyConfigured(f"{where}.{key}: only for schemas: groups")
    on_error = entry.get("on_error", "stop")
    if on_error not in ON_ERROR:
        raise ImproperlyConfigured(f"{where}.on_error: expected stop or continue")
    return GroupConfig(
        name=name,
        dsn=dsn,
        path=path,
        schemas_query=query.strip(),
        targets=members,
        parallel=_whole(entry, "parallel", where, 4, 1, MAX_PARALLEL),
        canary=_whole(entry, "canary", where, 0, 0, 1000),
        on_error=on_error,
        **_policy(entry, where),
    )


def load_groups(targets: dict[str, TargetConfig]) -> dict[str, GroupConfig]:
    """The groups of MIGRATION_TARGETS_FILE (none without one)."""
    file_path = os.environ.get("MIGRATION_TARGETS_FILE")
    if not file_path:
        return {}
    groups = read_targets_yaml(file_path).get(GROUPS_KEY) or {}
    if not isinstance(groups, dict):
        raise ImproperlyConfigured(
            f"MIGRATION_TARGETS_FILE {GROUPS_KEY}: expected a mapping of group names"
        )
    return {str(name): _group(str(name), entry, targets) for name, entry in groups.items()}
