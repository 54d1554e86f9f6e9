"""Making writes durable: fsync of directories, and syncs that run in a thread
while the writer goes on.

A backup is reported done only once what it wrote would survive a power cut:
the kernel alone keeps new data in memory for half a minute.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


def fsync_directory(path: str) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
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
