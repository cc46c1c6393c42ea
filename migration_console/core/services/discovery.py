"""Find, validate and checksum the migration files of one directory.

A bad set is refused as a whole before anything runs, naming the file.
Results are cached by (path, size, mtime, inode) so a status page that is
polled does not re-read and re-hash every file each time.
"""

import hashlib
import os
import re
from dataclasses import dataclass

from migration_console.core.services.errors import MigrationSetError

NO_TRANSACTION_DIRECTIVE = "-- migrate:no-transaction"
_FILENAME = re.compile(r"^(?P<version>[0-9]+)_(?P<name>[a-z0-9_]+?)(?P<down>\.down)?\.sql$")


@dataclass(frozen=True)
class MigrationFile:
    version: str
    name: str
    filename: str
    path: str
    sql: str
    checksum: str
    no_transaction: bool
    down_path: str | None = None

    @property
    def sort_key(self) -> tuple[int, str]:
        return (int(self.version), self.version)


@dataclass(frozen=True)
class _ParsedFile:
    sql: str
    checksum: str
    no_transaction: bool


_cache: dict[str, tuple[tuple[int, int, int], _ParsedFile]] = {}


def version_key(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (-1, version)


def _read(path: str, filename: str, stat: os.stat_result) -> _ParsedFile:
    signature = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    cached = _cache.get(path)
    if cached and cached[0] == signature:
        return cached[1]
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise MigrationSetError(filename, f"unreadable ({exc.strerror})") from None
    normalised = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in raw else raw
    try:
        sql = normalised.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MigrationSetError(filename, f"not valid UTF-8 (byte {exc.start})") from None
    if sql.startswith("\ufeff"):
        sql = sql[1:]
    if not sql.strip():
        raise MigrationSetError(filename, "empty file")
    first_line = sql.partition("\n")[0].strip()
    parsed = _ParsedFile(
        sql=sql,
        checksum=hashlib.sha256(normalised).hexdigest(),
        no_transaction=first_line == NO_TRANSACTION_DIRECTIVE,
    )
    _cache[path] = (signature, parsed)
    return parsed


# The last good result per directory, keyed by every .sql entry's name and stat
# signature: a polled status page pays one stat per file and nothing else.
_listing_cache: dict[str, tuple[tuple, list[MigrationFile]]] = {}


def discover(directory: str) -> list[MigrationFile]:
    """Return the up-migrations of ``directory`` in version order, or raise MigrationSetError."""
    try:
        entries = [entry for entry in os.scandir(directory) if entry.name.endswith(".sql")]
        listing = tuple(
            (entry.name, stat.st_size, stat.st_mtime_ns, stat.st_ino, entry.is_file())
            for entry, stat in ((entry, entry.stat()) for entry in entries)
        )
    except FileNotFoundError as exc:
        if not os.path.isdir(directory):
            raise MigrationSetError(directory, f"cannot list directory ({exc.strerror})") from None
        listing = None  # a file vanished between listing and stat: take the slow path
    except OSError as exc:
        raise MigrationSetError(directory, f"cannot list directory ({exc.strerror})") from None
    cached = _listing_cache.get(directory)
    if listing is not None and cached is not None and cached[0] == listing:
        return list(cached[1])
    files = _discover_entries(entries)
    if listing is not None:
        _listing_cache[directory] = (listing, files)
    return list(files)


def _discover_entries(entries: list[os.DirEntry]) -> list[MigrationFile]:
    ups: dict[str, tuple[str, str, str, os.stat_result]] = {}
    downs: dict[str, str] = {}
    for entry in entries:
        filename = entry.name
        if not filename.endswith(".sql"):
            continue
        match = _FILENAME.match(filename)
        if not match:
            raise MigrationSetError(
                filename, "name does not match <version>_<name>.sql (name: a-z, 0-9, _)"
            )
        if not entry.is_file():
            raise MigrationSetError(filename, "not a regular file")
        version = match["version"]
        if match["down"]:
            if version in downs:
                raise MigrationSetError(filename, f"duplicate down file for version {version}")
            downs[version] = entry.path
            continue
        if version in ups:
            raise MigrationSetError(
                filename, f"duplicate version {version} (also {ups[version][1]})"
            )
        ups[version] = (match["name"], filename, entry.path, entry.stat())

    numeric: dict[int, str] = {}
    for version, (_, filename, _, _) in ups.items():
        other = numeric.setdefault(int(version), filename)
        if other != filename:
            raise MigrationSetError(filename, f"duplicate version {int(version)} (also {other})")

    files = []
    for version, (name, filename, path, stat) in ups.items():
        parsed = _read(path, filename, stat)
        files.append(
            MigrationFile(
                version=version,
                name=name,
                filename=filename,
                path=path,
                sql=parsed.sql,
                checksum=parsed.checksum,
                no_transaction=parsed.no_transaction,
                down_path=downs.get(version),
            )
        )
    for version, path in downs.items():
        if version not in ups:
            raise MigrationSetError(os.path.basename(path), "down file without an up file")
    files.sort(key=lambda f: f.sort_key)
    return files
