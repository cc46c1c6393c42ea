"""Linux inotify on the migration directories (used by ``discovery``)."""

import os
import struct
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
