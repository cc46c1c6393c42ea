"""Linux inotify on the migration directories (used by ``discovery``)."""

import contextlib
import os
import sys
import threading
import time


class DirectoryWatch:
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

    Measured on 10,000 files: ``unchanged`` costs microseconds, a stat of every
    file about 45 ms, which a polled API would pay on every request.
    """

    MAX_DIRECTORIES = 32
    RESCAN_SECONDS = 2.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = None
        self._inotify = None
        self._wds: dict[int, str] = {}
        self._dirs: dict[str, int] = {}
        # directory -> (st_dev, st_ino, armed at): no event since it was armed
        self._clean: dict[str, tuple[int, int, float]] = {}

    def _ready(self) -> bool:
        if self._pid == os.getpid():
            return self._inotify is not None
        # First use in this process (or a forked child): a private instance; a
        # child never reads the parent's queue (its copy closes with the old object).
        self._pid, self._inotify = os.getpid(), None
        self._wds.clear()
        self._dirs.clear()
        self._clean.clear()
        if not sys.platform.startswith("linux"):
            return False
        try:
            from inotify_simple import INotify

            self._inotify = INotify(nonblocking=True)
        except (OSError, AttributeError, ImportError):
            return False
        return True

    def _drain(self) -> None:
        from inotify_simple import flags

        try:
            events = self._inotify.read(timeout=0)
        except OSError:
            self._clean.clear()
            return
        for event in events:
            if event.mask & flags.Q_OVERFLOW:
                self._clean.clear()
            directory = self._wds.get(event.wd)
            if directory is not None:
                self._clean.pop(directory, None)
                if event.mask & flags.IGNORED:  # watch gone (directory deleted, or removed)
                    del self._wds[event.wd]
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
        from inotify_simple import flags

        with self._lock:
            if not self._ready():
                return
            self._drain()
            self._clean.pop(directory, None)
            if directory not in self._dirs:
                if len(self._dirs) >= self.MAX_DIRECTORIES:
                    oldest, wd = next(iter(self._dirs.items()))
                    with contextlib.suppress(OSError):  # gone with its directory already
                        self._inotify.rm_watch(wd)
                    self._wds.pop(wd, None)
                    self._dirs.pop(oldest, None)
                    self._clean.pop(oldest, None)
                mask = (
                    flags.MODIFY
                    | flags.ATTRIB
                    | flags.CLOSE_WRITE
                    | flags.MOVED_FROM
                    | flags.MOVED_TO
                    | flags.CREATE
                    | flags.DELETE
                    | flags.DELETE_SELF
                    | flags.MOVE_SELF
                )
                try:
                    wd = self._inotify.add_watch(directory, mask)
                except OSError:
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
