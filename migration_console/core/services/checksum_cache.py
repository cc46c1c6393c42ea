"""Checksums of a large migration directory, kept between processes.

A cold ``migrate_sql status`` over 10,000 files would otherwise read and hash every
file on each call. Each file's checksum and directives are stored with its stat
signature (size, mtime, ctime, inode); a later process trusts an entry only while
the signature is unchanged. ctime is set by the kernel on every change and cannot be
set back, so an edit is always seen. As in git's "racy" rule, a file changed less
than ``RACY_NS`` before its scan began could change again within the same timestamp
and is read again; and whatever runs a file (``discover``) reads it whole and checks
it against the checksum first (``discovery.MigrationFile.sql``).

Only valid files are stored (a bad file is read, and refused, every time). The cache
is a convenience: it is skipped when its directory is unset or cannot be written.
"""

import contextlib
import hashlib
import json
import os
import tempfile
import time

from django.conf import settings

# Bump when what is stored, or what makes a file valid, changes: old caches are ignored.
FORMAT = 2  # 2: a file's directives are null when it has none
MIN_FILES = 256  # smaller sets are read in milliseconds: not worth a file of their own
RACY_NS = 2_000_000_000
# A cache file not rewritten for this long is removed when another is written: the
# caches of deleted directories do not pile up (a kept one is rebuilt by one read).
UNUSED_FOR_SECONDS = 7 * 24 * 3600


def cache_path(name: str) -> str | None:
    """Where the cache file ``name`` lives; None when caching is turned off."""
    base = getattr(settings, "MIGRATION_CHECKSUM_CACHE_DIR", "")
    return os.path.join(base, name) if base else None


def _cache_file(directory: str) -> tuple[str, str] | None:
    """(the cache file's path, the directory's real path); None when disabled."""
    real = os.path.realpath(directory)
    key = hashlib.sha256(real.encode()).hexdigest()[:32]
    path = cache_path(f"checksums-{key}.json")
    return (path, real) if path else None


def read_json(path: str) -> dict | None:
    """A cache file's content; None when it is missing or not a JSON object."""
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: str, data: dict) -> None:
    """Replace ``path`` with ``data`` atomically; silently nothing if it cannot."""
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as out:
                json.dump(data, out, separators=(",", ":"))
            os.replace(temporary, path)  # readers see the old cache or the new, never half
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _prune(os.path.dirname(path))


def _prune(base: str) -> None:
    cutoff = time.time() - UNUSED_FOR_SECONDS
    for entry in os.scandir(base):
        if entry.name.endswith((".json", ".tmp")) and entry.stat().st_mtime < cutoff:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def load(directory: str) -> dict[str, list]:
    """filename -> [size, mtime_ns, ctime_ns, inode, checksum, directives or None] of
    the entries that may be trusted while the file's stat still says the same."""
    located = _cache_file(directory)
    if located is None:
        return {}
    path, real = located
    data = read_json(path)
    try:
        if data is None or data.get("format") != FORMAT or data.get("directory") != real:
            return {}
        trusted_before = int(data["scan_started_ns"]) - RACY_NS
        files = data["files"]
        racy = [name for name, entry in files.items() if max(entry[1], entry[2]) >= trusted_before]
        for name in racy:
            del files[name]
        return files
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return {}  # from another version, or damaged: read the files


def save(directory: str, scan_started_ns: int, entries: dict[str, list]) -> None:
    """Replace the directory's cache with ``entries`` (filename -> [size, mtime_ns,
    ctime_ns, inode, checksum, directives or None]); silently nothing if it cannot be written."""
    located = _cache_file(directory)
    if located is None:
        return
    path, real = located
    data = {
        "format": FORMAT,
        "directory": real,
        "scan_started_ns": scan_started_ns,
        "files": entries,
    }
    write_json(path, data)
