"""Find, validate and checksum the migration files of one directory.

``discover_set`` is lenient: it returns the good files and a list of problems
(the bad files, each with a reason), for pages that read. ``discover`` is the
same scan made strict: it raises ``MigrationSetError`` for the first problem,
so a bad set is refused as a whole before anything runs, naming the file.

A bad file is never shown as a good migration: it is left out of ``files``
(an applied row of its version then reads ``missing``, and the problem beside
it says why). Two files for one version leave out both: whichever one ran, a
status built on a guess could call a version fine that is not.

Results are cached by (path, size, mtime, ctime, inode) so a status page that is
polled does not re-read and re-hash every file each time. ctime is in the key
because no user can set it back: an edit of the same size whose mtime was
restored (``touch -r``, ``os.utime``, ``rsync -t``) is still seen.
"""

import hashlib
import itertools
import os
import re
import time
from dataclasses import astuple, dataclass, field
from functools import cached_property

from migration_console.core.services import checksum_cache
from migration_console.core.services.directives import (
    EffectiveSettings,
    FileDirectives,
    effective_settings,
    parse_directives,
)
from migration_console.core.services.dirwatch import DirectoryWatch
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
    source: str | None = field(repr=False, compare=False)  # None: not read yet (``sql``)
    checksum: str
    no_transaction: bool
    down_path: str | None = None
    directives: FileDirectives = field(default_factory=FileDirectives)

    @cached_property
    def sql(self) -> str:
        """The file's text; read now if discovery took its checksum from the cache,
        and refused if it no longer matches that checksum."""
        if self.source is not None:
            return self.source
        try:
            raw = _read_bytes(self.path, os.stat(self.path).st_size)
        except OSError as exc:
            raise MigrationSetError(self.filename, f"unreadable ({exc.strerror})") from None
        # Checked as a first read would be: what the cache said (checksum, directives,
        # a valid file) must be what is on disk now.
        parsed = _parse(raw, self.filename)
        if parsed.checksum != self.checksum or parsed.directives != self.directives:
            raise MigrationSetError(
                self.filename, "changed while it was being read; list the migrations again"
            )
        return parsed.sql

    @property
    def settings(self) -> EffectiveSettings:
        """What this file runs with: its directives over the settings' defaults."""
        return effective_settings(self.directives)

    @property
    def exclusive_locks(self) -> list:
        """Tables this file locks ACCESS EXCLUSIVE (a hint for the plan)."""
        from migration_console.core.services.sqlsplit import access_exclusive_locks

        found = _exclusive_cache.get(self.checksum)
        if found is None:
            found = _exclusive_cache[self.checksum] = access_exclusive_locks(self.sql)
        return found

    @property
    def sort_key(self) -> tuple[int, str]:
        return (int(self.version), self.version)


@dataclass(frozen=True)
class SetProblem:
    """One reason the set would be refused: the file (or directory) and why."""

    file: str
    message: str

    def as_dict(self) -> dict:
        return {"file": self.file, "message": self.message}

    def as_error(self) -> MigrationSetError:
        return MigrationSetError(self.file, self.message)


@dataclass(frozen=True)
class MigrationSet:
    """The good up-migrations of a directory in version order, and its problems.

    ``generation``: equal numbers mean the same files with the same contents, so
    whatever is derived from the set (files and problems) can be cached under it."""

    generation: int
    files: tuple[MigrationFile, ...]
    problems: tuple[SetProblem, ...]

    def refuse_problems(self) -> None:
        """Raise ``MigrationSetError`` for the first problem, if any."""
        if self.problems:
            raise self.problems[0].as_error()


@dataclass(frozen=True)
class _ParsedFile:
    sql: str | None  # None: known by its signature from the checksum cache, not read
    checksum: str
    directives: FileDirectives


_cache: dict[str, tuple[tuple[int, int, int, int], _ParsedFile]] = {}
_NO_DIRECTIVES = FileDirectives()
_exclusive_cache: dict[str, list] = {}


def version_key(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (-1, version)


def _read_bytes(path: str, size: int) -> bytes:
    """The file's bytes, read whole (to the end, even if it grew since its stat),
    without a buffered file object: a cold status reads 10,000 files."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        want = size + 1
        while chunk := os.read(fd, want):
            chunks.append(chunk)
            want = 1 << 16
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # b"" when empty
    finally:
        os.close(fd)


def decode_sql(raw: bytes, filename: str) -> tuple[str, bytes]:
    """(the text, the normalised bytes its checksum is taken of), or MigrationSetError."""
    normalised = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in raw else raw
    try:
        sql = normalised.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MigrationSetError(filename, f"not valid UTF-8 (byte {exc.start})") from None
    if sql.startswith("\ufeff"):
        sql = sql[1:]
    return sql, normalised


def _parse(raw: bytes, filename: str) -> _ParsedFile:
    """A file's text, checksum and directives, or MigrationSetError if it is no good."""
    sql, normalised = decode_sql(raw, filename)
    if not sql or sql.isspace():
        raise MigrationSetError(filename, "empty file")
    if "\x00" in sql:
        # libpq sends a query as a C string: the server would never see what follows.
        line = sql.count("\n", 0, sql.index("\x00")) + 1
        raise MigrationSetError(filename, f"NUL character on line {line}")
    directives = parse_directives(sql, filename)
    if not directives.no_transaction:
        found = transaction_control(sql)
        if found:
            keyword, line = found
            raise MigrationSetError(
                filename,
                f"{keyword} on line {line}: the file already runs in one transaction with "
                "its tracking row; remove it (or make the file "
                f"'{NO_TRANSACTION_DIRECTIVE}')",
            )
    return _ParsedFile(
        sql=sql, checksum=hashlib.sha256(normalised).hexdigest(), directives=directives
    )


def _read(
    path: str, filename: str, stat: os.stat_result, persisted: dict | None = None
) -> tuple[_ParsedFile, bool]:
    """The file parsed, and whether it had to be read (not known by its signature)."""
    signature = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    cached = _cache.get(path)
    if cached and cached[0] == signature:
        return cached[1], False
    known = persisted.get(filename) if persisted else None
    if known is not None and (known[0], known[1], known[2], known[3]) == signature:
        stored = known[5]
        directives = _NO_DIRECTIVES if stored is None else FileDirectives(*stored)
        parsed = _ParsedFile(sql=None, checksum=known[4], directives=directives)
        _cache[path] = (signature, parsed)
        return parsed, False
    try:
        raw = _read_bytes(path, stat.st_size)
    except OSError as exc:
        raise MigrationSetError(filename, f"unreadable ({exc.strerror})") from None
    parsed = _parse(raw, filename)
    _cache[path] = (signature, parsed)
    return parsed, True


# The last result per directory (good files and problems alike), keyed by every
# .sql entry's name and stat signature: a polled status page pays one stat per
# file and nothing else. Each cached result carries a generation number, unique in
# the process, that changes whenever the listing or any file's stat does.
_listing_cache: dict[str, tuple[tuple, MigrationSet]] = {}
_generations = itertools.count(1)
_watch = DirectoryWatch()


def discover(directory: str) -> list[MigrationFile]:
    """Return the up-migrations of ``directory`` in version order, or raise MigrationSetError."""
    return discover_versioned(directory)[1]


def discover_versioned(directory: str) -> tuple[int, list[MigrationFile]]:
    """``discover`` plus the set's generation (see ``MigrationSet``)."""
    found = discover_set(directory)
    found.refuse_problems()
    for migration in found.files:
        migration.sql  # noqa: B018  what runs is read whole and checked against its checksum
    return found.generation, list(found.files)


def discover_set(directory: str) -> MigrationSet:
    """The good files of ``directory`` and the problems of the others; never raises
    for a bad set (a directory that cannot be listed is a problem too)."""
    cached = _listing_cache.get(directory)
    if cached is not None and _watch.unchanged(directory):
        return cached[1]
    _watch.arm(directory)  # before listing: any change from here on shows next time
    try:
        found, cached_now, links = _scan(directory)
    except BaseException:
        _watch.forget(directory)
        raise
    if links or not cached_now:
        _watch.forget(directory)  # symlinked files change without an event here
    return found


def _signature(entry: os.DirEntry) -> tuple:
    stat = entry.stat()
    return (
        entry.name,
        stat.st_size,
        stat.st_mtime_ns,
        stat.st_ctime_ns,
        stat.st_ino,
        entry.is_file(),
    )


def _scan(directory: str) -> tuple[MigrationSet, bool, bool]:
    """(the set, whether it was cached under its listing, whether any entry is a link)."""
    try:
        entries = [entry for entry in os.scandir(directory) if entry.name.endswith(".sql")]
    except OSError as exc:
        problem = SetProblem(directory, f"cannot list directory ({exc.strerror})")
        return MigrationSet(next(_generations), (), (problem,)), False, False
    try:
        listing = tuple(_signature(entry) for entry in entries)
    except OSError:
        listing = None  # an entry vanished or cannot be stat'ed: take the slow path
    links = any(entry.is_symlink() for entry in entries)
    cached = _listing_cache.get(directory)
    if listing is not None and cached is not None and cached[0] == listing:
        return cached[1], True, links
    files, problems = _discover_entries(directory, entries)
    found = MigrationSet(next(_generations), tuple(files), tuple(problems))
    if listing is None:
        return found, False, links
    _listing_cache[directory] = (listing, found)
    return found, True, links


def _discover_entries(
    directory: str, entries: list[os.DirEntry]
) -> tuple[list[MigrationFile], list[SetProblem]]:
    """The good files and the problems, in the order the strict scan always
    reported them: names and kinds, duplicates, contents, orphan down files."""
    problems: list[SetProblem] = []
    ups: dict[str, tuple[str, str, str, os.stat_result]] = {}
    downs: dict[str, str] = {}
    ambiguous: set[str] = set()  # versions with two up (or down) files: none is shown
    for entry in sorted(entries, key=lambda entry: entry.name):
        filename = entry.name
        match = _FILENAME.match(filename)
        if not match:
            problems.append(
                SetProblem(filename, "name does not match <version>_<name>.sql (name: a-z, 0-9, _)")
            )
            continue
        try:
            regular = entry.is_file()
            stat = entry.stat() if regular else None
        except FileNotFoundError:
            continue  # gone since the listing
        except OSError as exc:
            problems.append(SetProblem(filename, f"unreadable ({exc.strerror})"))
            continue
        if not regular:
            problems.append(SetProblem(filename, "not a regular file"))
            continue
        version = match["version"]
        if match["down"]:
            if version in downs:
                problems.append(SetProblem(filename, f"duplicate down file for version {version}"))
                ambiguous.add(f"down {version}")
                continue
            downs[version] = entry.path
            continue
        if version in ups:
            problems.append(
                SetProblem(filename, f"duplicate version {version} (also {ups[version][1]})")
            )
            ambiguous.add(version)
            continue
        ups[version] = (match["name"], filename, entry.path, stat)

    numeric: dict[int, str] = {}
    for version, (_, filename, _, _) in ups.items():
        other = numeric.setdefault(int(version), version)
        if other != version:
            problems.append(
                SetProblem(filename, f"duplicate version {int(version)} (also {ups[other][1]})")
            )
            ambiguous.update((version, other))

    large = len(ups) >= checksum_cache.MIN_FILES
    scan_started_ns = time.time_ns()
    persisted = checksum_cache.load(directory) if large else None
    read_any = False
    files = []
    for version, (name, filename, path, stat) in ups.items():
        try:
            parsed, read = _read(path, filename, stat, persisted)
        except MigrationSetError as exc:
            problems.append(SetProblem(exc.filename, exc.reason))
            continue
        read_any = read_any or read
        if version in ambiguous:
            continue
        files.append(
            MigrationFile(
                version=version,
                name=name,
                filename=filename,
                path=path,
                source=parsed.sql,
                checksum=parsed.checksum,
                no_transaction=parsed.directives.no_transaction,
                directives=parsed.directives,
                down_path=downs.get(version)
                if not ambiguous or f"down {version}" not in ambiguous
                else None,
            )
        )
    if large and read_any:
        checksum_cache.save(directory, scan_started_ns, _cache_entries(ups, files))
    for version, path in downs.items():
        if version not in ups:
            problems.append(SetProblem(os.path.basename(path), "down file without an up file"))
    files.sort(key=lambda f: f.sort_key)
    return files, problems


def _cache_entries(ups: dict, files: list[MigrationFile]) -> dict[str, list]:
    entries = {}
    for migration in files:
        stat = ups[migration.version][3]
        entries[migration.filename] = [
            stat.st_size,
            stat.st_mtime_ns,
            stat.st_ctime_ns,
            stat.st_ino,
            migration.checksum,
            None if migration.directives == _NO_DIRECTIVES else list(astuple(migration.directives)),
        ]
    return entries
