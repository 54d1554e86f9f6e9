"""Making writes durable: fsync of directories, and syncs that run in a thread
while the writer goes on.

A backup is reported done only once what it wrote would survive a power cut:
the kernel alone keeps new data in memory for half a minute.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable, Iterable


def fsync_directory(path: str) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_file_system(path: str) -> None:
    """Write back everything written to the file system that holds ``path``
    (syncfs(2)): one call for a restored tree of thousands of files."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            syncfs = ctypes.CDLL(None, use_errno=True).syncfs
        except (OSError, AttributeError):  # a libc without it: sync every file system
            os.sync()
            return
        if syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
    finally:
        os.close(fd)


class BackgroundSync:
    """``sync`` (e.g. an fdatasync) in its own thread, on request, while the
    writer goes on writing: the disk works beside compression and encryption,
    and the final sync only waits for the last few megabytes."""

    def __init__(self, sync: Callable[[], None]):
        self._sync = sync
        self._wake = threading.Event()
        self._pending = False
        self._stopping = False
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="background-sync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._pending:
                self._pending = False
                try:
                    self._sync()
                except OSError as error:
                    self._error = error
                    return
            if self._stopping:
                return

    def request(self) -> None:
        self._pending = True
        self._wake.set()

    def stop(self) -> None:
        """Finish the requested syncs; raise the error one hit (e.g. EIO, ENOSPC)."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
        if self._error is not None:
            raise self._error


class TreeWriteback:
    """Durability for trees written file by file (a files restore): the file
    systems of ``paths`` are synced in the background every ``step`` bytes
    written, so that ``finish``, the sync before the tree is used, waits only
    for the last few."""

    def __init__(self, paths: Iterable[str], step: int = 64 << 20):
        devices: dict[int, str] = {}
        for path in paths:
            devices.setdefault(os.stat(path).st_dev, path)
        self._paths = list(devices.values())
        self._step = step
        self._written = 0
        self._lock = threading.Lock()
        self._sync = BackgroundSync(self._sync_all)

    def _sync_all(self) -> None:
        for path in self._paths:
            sync_file_system(path)

    def wrote(self, count: int) -> None:
        with self._lock:
            self._written += count
            if self._written < self._step:
                return
            self._written = 0
        self._sync.request()

    def finish(self) -> None:
        """Raise what a background sync hit; then sync what is still unwritten."""
        self._sync.stop()
        self._sync_all()

    def abandon(self) -> None:
        """Stop syncing (the tree is being thrown away); errors do not matter now."""
        with contextlib.suppress(OSError):
            self._sync.stop()
