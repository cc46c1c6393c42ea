"""Find, validate and checksum the migration files of one directory.

A bad set is refused as a whole before anything runs, naming the file.
Results are cached by (path, size, mtime, inode) so a status page that is
polled does not re-read and re-hash every file each time.
"""

import hashlib
import itertools
import os
import re
import struct
import sys
import threading
import time
from dataclasses import dataclass

from migration_console.core.services.errors import MigrationSetError
from migration_console.core.services.sqlsplit import transaction_control

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
    no_transaction = first_line == NO_TRANSACTION_DIRECTIVE
    if not no_transaction:
        found = transaction_control(sql)
        if found:
            keyword, line = found
            raise MigrationSetError(
                filename,
                f"{keyword} on line {line}: the file already runs in one transaction with "
                "its tracking row; remove it (or make the file "
                f"'{NO_TRANSACTION_DIRECTIVE}')",
            )
    parsed = _ParsedFile(
        sql=sql,
        checksum=hashlib.sha256(normalised).hexdigest(),
        no_transaction=no_transaction,
    )
    _cache[path] = (signature, parsed)
    return parsed


# The last good result per directory, keyed by every .sql entry's name and stat
# signature: a polled status page pays one stat per file and nothing else. Each
# cached result carries a generation number, unique in the process, that changes
# whenever the listing or any file's stat does.
_listing_cache: dict[str, tuple[tuple, list[MigrationFile], int]] = {}
_generations = itertools.count(1)


def discover(directory: str) -> list[MigrationFile]:
    """Return the up-migrations of ``directory`` in version order, or raise MigrationSetError."""
    return discover_versioned(directory)[1]


def discover_versioned(directory: str) -> tuple[int, list[MigrationFile]]:
    """``discover`` plus a generation number: equal numbers mean the same files with
    the same contents (same names, sizes, mtimes and inodes), so whatever is derived
    from the files can be cached under it."""
    cached = _listing_cache.get(directory)
    if cached is not None and _watch.unchanged(directory):
        return cached[2], list(cached[1])
    _watch.arm(directory)  # before listing: any change from here on shows next time
    try:
        generation, files, links = _scan(directory)
    except BaseException:
        _watch.forget(directory)
        raise
    if links or generation is None:
        _watch.forget(directory)  # symlinked files change without an event here
    return (generation or next(_generations)), files


def _scan(directory: str) -> tuple[int | None, list[MigrationFile], bool]:
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
    links = any(entry.is_symlink() for entry in entries)
    cached = _listing_cache.get(directory)
    if listing is not None and cached is not None and cached[0] == listing:
        return cached[2], list(cached[1]), links
    files = _discover_entries(entries)
    if listing is None:
        return None, list(files), links
    generation = next(_generations)
    _listing_cache[directory] = (listing, files, generation)
    return generation, list(files), links


class _DirectoryWatch:
    """Linux inotify on the migration directories, so a polled status skips the
    stat of every file when nothing in the directory was touched.

    One inotify instance per process (never shared across fork), one watch per
    directory (at most ``MAX_DIRECTORIES``). A directory counts as unchanged only
    if it was armed before its last complete scan, no event arrived since (a file
    written, its attributes changed, an entry created, deleted or renamed, the
    directory itself moved or deleted, or the event queue overflowed), the path
    still names the same directory, none of its files is a symlink, and that scan
    is younger than ``RESCAN_SECONDS`` (a bound for file systems whose remote
    changes raise no event, e.g. NFS). Anything else, or no inotify: stat all.
    """

    MASK = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800
    Q_OVERFLOW, IGNORED = 0x4000, 0x8000
    MAX_DIRECTORIES = 32
    RESCAN_SECONDS = 2.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = None
        self._fd = None
        self._libc = None
        self._wds: dict[int, str] = {}
        self._dirs: dict[str, int] = {}
        # directory -> (st_dev, st_ino, armed at): no event since it was armed
        self._clean: dict[str, tuple[int, int, float]] = {}

    def _ready(self) -> bool:
        if self._pid == os.getpid():
            return self._fd is not None
        # First use in this process (or a forked child): a private instance.
        self._pid, self._fd = os.getpid(), None
        self._wds.clear()
        self._dirs.clear()
        self._clean.clear()
        if not sys.platform.startswith("linux"):
            return False
        try:
            import ctypes

            self._libc = ctypes.CDLL(None, use_errno=True)
            fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return False
        if fd < 0:
            return False
        self._fd = fd
        return True

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                self._clean.clear()
                return
            offset = 0
            while offset + 16 <= len(data):
                wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                offset += 16 + length
                if mask & self.Q_OVERFLOW:
                    self._clean.clear()
                directory = self._wds.get(wd)
                if directory is not None:
                    self._clean.pop(directory, None)
                    if mask & self.IGNORED:  # watch gone (directory deleted, or removed)
                        del self._wds[wd]
                        self._dirs.pop(directory, None)

    def unchanged(self, directory: str) -> bool:
        with self._lock:
            if not self._ready():
                return False
            self._drain()
            clean = self._clean.get(directory)
        if clean is None or time.monotonic() - clean[2] > self.RESCAN_SECONDS:
            return False
        try:
            stat = os.stat(directory)
        except OSError:
            return False
        return (stat.st_dev, stat.st_ino) == clean[:2]

    def arm(self, directory: str) -> None:
        with self._lock:
            if not self._ready():
                return
            self._drain()
            self._clean.pop(directory, None)
            if directory not in self._dirs:
                if len(self._dirs) >= self.MAX_DIRECTORIES:
                    oldest, wd = next(iter(self._dirs.items()))
                    self._libc.inotify_rm_watch(self._fd, wd)
                    self._wds.pop(wd, None)
                    self._dirs.pop(oldest, None)
                    self._clean.pop(oldest, None)
                wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory), self.MASK)
                if wd < 0:
                    return
                self._wds[wd] = directory
                self._dirs[directory] = wd
            try:
                stat = os.stat(directory)
            except OSError:
                return
            self._clean[directory] = (stat.st_dev, stat.st_ino, time.monotonic())

    def forget(self, directory: str) -> None:
        with self._lock:
            self._clean.pop(directory, None)


_watch = _DirectoryWatch()


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
