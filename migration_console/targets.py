"""Target databases: built from DB_DSN/DB_SCHEMA/MIGRATIONS_PATH and MIGRATION_TARGETS_FILE.

Read once by settings at start-up. A bad targets file stops start-up with a
message naming the offending key; nothing here ever prints a password.
"""

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

DEFAULT_TARGET = "db_main"
GROUPS_KEY = "groups"  # reserved at the top of the targets file
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_ALLOWED_KEYS = {"dsn", "schema", "path", "approvals", "window"}
MAX_APPROVALS = 10
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")


@dataclass(frozen=True)
class TargetConfig:
    name: str
    dsn: str = field(repr=False)  # may hold a password: never in reprs, logs or debug pages
    schema: str
    path: str
    # Change management (SPEC "Approvals, schedules, maintenance windows").
    approvals: int = 0  # distinct superusers who must approve a console/API run
    window: str = ""  # "<days> HH:MM-HH:MM <zone>": runs start only inside it

    @property
    def has_policy(self) -> bool:
        return bool(self.approvals or self.window)


def expand_env(value: str, where: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:default}`` (default = all after the first colon)."""

    def replace(match: re.Match) -> str:
        var, default = match.group(1), match.group(2)
        if var in os.environ:
            return os.environ[var]
        if default is not None:
            return default
        raise ImproperlyConfigured(f"{where}: environment variable {var} is not set")

    return _VAR.sub(replace, value)


def _resolve_path(raw: str) -> str:
    """Relative to the working directory, as a shell user means it."""
    path = Path(raw)
    return str(path if path.is_absolute() else (Path.cwd() / path).resolve())


def _check_dsn(dsn: str, key: str) -> None:
    """A DSN psycopg can parse; the message never repeats the DSN (it may hold a password)."""
    from psycopg.conninfo import conninfo_to_dict

    if not dsn.strip():
        raise ImproperlyConfigured(f"{key}: missing")
    try:
        conninfo_to_dict(dsn)
    except Exception:
        raise ImproperlyConfigured(
            f"{key}: not a valid PostgreSQL connection string (URI or key=value)"
        ) from None


def _validate(
    name: str,
    dsn: str,
    schema: str,
    path: str,
    where: str,
    keys: tuple[str, str, str] | None = None,
) -> TargetConfig:
    """``keys`` names the dsn, schema and path settings in messages (default ``where.dsn`` ...)."""
    dsn_key, schema_key, path_key = keys or (f"{where}.dsn", f"{where}.schema", f"{where}.path")
    if not _NAME.match(name) or name == "default":
        raise ImproperlyConfigured(f"{where}: target name {name!r} is not a valid identifier")
    _check_dsn(dsn, dsn_key)
    if not _SCHEMA.match(schema):
        raise ImproperlyConfigured(f"{schema_key}: {schema!r} is not a plain identifier")
    if not os.path.isdir(path) or not os.access(path, os.R_OK | os.X_OK):
        raise ImproperlyConfigured(f"{path_key}: {path} is not a readable directory")
    return TargetConfig(name=name, dsn=dsn, schema=schema, path=path)


def read_targets_yaml(file_path: str) -> dict:
    """The targets file, parsed (duplicate keys refused): target names and ``groups``."""
    import yaml

    try:
        with open(file_path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ImproperlyConfigured(
            f"MIGRATION_TARGETS_FILE: cannot read {file_path}: {exc.strerror}"
        ) from None

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise ImproperlyConfigured(
                    f"MIGRATION_TARGETS_FILE {file_path}: duplicate key {key!r} "
                    f"(line {key_node.start_mark.line + 1})"
                )
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    UniqueKeyLoader.add_constructor(
        yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping
    )
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ImproperlyConfigured(f"MIGRATION_TARGETS_FILE {file_path}: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise ImproperlyConfigured(
            f"MIGRATION_TARGETS_FILE {file_path}: expected a mapping of target names"
        )

    return data


def load_targets_file(file_path: str) -> dict[str, TargetConfig]:
    data = read_targets_yaml(file_path)
    targets = {}
    for name, entry in data.items():
        if name == GROUPS_KEY:
            continue  # groups of targets (fleets): target_groups.py
        where = f"MIGRATION_TARGETS_FILE {name}"
        if not isinstance(entry, dict):
            raise ImproperlyConfigured(f"{where}: expected a mapping with dsn, schema, path")
        unknown = sorted(set(map(str, entry)) - _ALLOWED_KEYS)
        if unknown:
            raise ImproperlyConfigured(
                f"{where}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(_ALLOWED_KEYS))})"
            )
        if "dsn" not in entry or entry["dsn"] is None:
            raise ImproperlyConfigured(f"{where}.dsn: missing")
        values = {}
        for key, default in (("dsn", ""), ("schema", "public"), ("path", "migrations_sql")):
            raw = entry.get(key)
            if raw is None:
                raw = default
            if not isinstance(raw, str | int):
                raise ImproperlyConfigured(f"{where}.{key}: expected a string")
            values[key] = expand_env(str(raw), f"{where}.{key}")
        config = _validate(
            str(name),
            values["dsn"],
            values["schema"],
            _resolve_path(values["path"]),
            where,
        )
        targets[str(name)] = replace(config, **_policy(entry, where))
    return targets


def _policy(entry: dict, where: str) -> dict:
    from migration_console.core.services.windows import WindowError, parse_window

    approvals = entry.get("approvals", 0)
    if approvals is None:
        approvals = 0
    if isinstance(approvals, bool) or not isinstance(approvals, int):
        raise ImproperlyConfigured(f"{where}.approvals: expected a whole number")
    if not 0 <= approvals <= MAX_APPROVALS:
        raise ImproperlyConfigured(f"{where}.approvals: must be from 0 to {MAX_APPROVALS}")
    window = entry.get("window") or ""
    if not isinstance(window, str):
        raise ImproperlyConfigured(
            f"{where}.window: expected a string such as 'sat,sun 02:00-05:00 UTC'"
        )
    if window:
        try:
            parse_window(expand_env(window, f"{where}.window"))
        except WindowError as exc:
            raise ImproperlyConfigured(f"{where}.window: {exc}") from None
    return {"approvals": approvals, "window": expand_env(window, f"{where}.window")}


def load_targets(base_dir: Path, default_dsn: str) -> dict[str, TargetConfig]:
    targets: dict[str, TargetConfig] = {}
    dsn = os.environ.get("DB_DSN") or default_dsn
    path_raw = os.environ.get("MIGRATIONS_PATH")
    path = _resolve_path(path_raw) if path_raw else str(base_dir / "migrations_sql")
    schema = os.environ.get("DB_SCHEMA") or "public"
    targets_file = os.environ.get("MIGRATION_TARGETS_FILE")
    from_file = load_targets_file(targets_file) if targets_file else {}
    if DEFAULT_TARGET not in from_file:
        targets[DEFAULT_TARGET] = _validate(
            DEFAULT_TARGET,
            dsn,
            schema,
            path,
            "DB_DSN",
            keys=("DB_DSN", "DB_SCHEMA", "MIGRATIONS_PATH"),
        )
    targets.update(from_file)
    return targets


def django_database(target: TargetConfig) -> dict:
    """A DATABASES entry for a target, so the unmanaged tracking model can read it."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(target.dsn)
    entry = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.pop("dbname", ""),
        "USER": params.pop("user", ""),
        "PASSWORD": params.pop("password", ""),
        "HOST": params.pop("host", ""),
        "PORT": str(params.pop("port", "")),
        "OPTIONS": {**params, "options": f"-c search_path={target.schema}"},
        "TEST": {"MIGRATE": False},
    }
    return entry
