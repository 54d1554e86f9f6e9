"""Overlap I/O and hashing with compression and encryption.

hashlib, zstd and file or socket I/O release the GIL, so a reader thread in
front of the pipeline and a writer thread behind it let two cores work at
once. Queues are bounded: memory stays at ``depth`` chunks per side.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable
from typing import BinaryIO

_END = object()


class ReadAhead(io.RawIOBase):
    """Reads ``source`` in a background thread, ``depth`` chunks ahead of the consumer.

    ``transform`` runs in that thread on each chunk (hashing, decrypting, ...).
    """

    def __init__(self, source: BinaryIO, chunk_size: int, depth: int = 4,
                 transform: Callable[[bytes], None] | None = None):
        super().__init__()
        self._queue: queue.Queue = queue.Queue(depth)
        self._chunk = b""
        self._offset = 0
        self._finished = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._pump, args=(source, chunk_size, transform), daemon=True,
            name="read-ahead",
        )
        self._thread.start()

    def _pump(self, source, chunk_size, transform) -> None:
        try:
            while not self._stop.is_set():
                chunk = source.read(chunk_size)
                if transform is not None and chunk:
                    transform(chunk)
                self._put(chunk if chunk else _END)
                if not chunk:
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            self._put(error)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(1 << 22), b""))
        while self._offset >= len(self._chunk):
            if self._finished:
                return b""
            item = self._queue.get()
            if item is _END or isinstance(item, BaseException):
                self._finished = True
                if item is _END:
                    return b""
                raise item
            self._chunk, self._offset = item, 0
        if self._offset == 0 and len(self._chunk) <= size:
            self._offset = len(self._chunk)
            return self._chunk  # the common case: no copy
        data = self._chunk[self._offset : self._offset + size]
        self._offset += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        super().close()


class WriteBehind:
    """Hands chunks to ``write`` in a background thread; errors surface on the
    next ``put`` or at ``close``, which waits until everything was written."""

    def __init__(self, write: Callable[[bytes], None], depth: int = 4):
        self._write = write
        self._queue: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, daemon=True, name="write-behind")
        self._thread.start()

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is None:
                try:
                    self._write(item)
                except BaseException as error:  # noqa: BLE001 - handed to the producer
                    self._error = error

    def put(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def close(self) -> None:
        """Wait for every chunk; raise what the writer hit, if anything."""
        self._queue.put(_END)
        self._thread.join()
        if self._error is not None:
            raise self._error


class BackgroundDigest:
    """A hash computed in its own thread (hashlib releases the GIL), so the
    caller can decompress or write the next chunk meanwhile."""

    def __init__(self, algorithm: str = "sha256", depth: int = 8):
        import hashlib

        self._digest = hashlib.new(algorithm)
        self._feed = WriteBehind(self._digest.update, depth)
        self._result: str | None = None

    def update(self, chunk: bytes) -> None:
        self._feed.put(chunk)

    def hexdigest(self) -> str:
        if self._result is None:
            self._feed.close()
            self._result = self._digest.hexdigest()
        return self._result
