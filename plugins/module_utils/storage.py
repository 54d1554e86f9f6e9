"""Where encrypted objects live: a local directory or an S3 bucket and prefix.

A storage knows nothing of backups or keys. It stores opaque byte streams under
keys like ``backups/database/<id>/manifest`` and makes a write visible only
when it completed, so a reader never sees half an object.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol
from urllib.parse import urlparse

from .durability import BackgroundSync, fsync_directory
from .errors import ConfigError, ObjectMissing, StorageError

PARTIAL_MARKER = ".partial-"
WRITEBACK_BYTES = 32 << 20


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: float  # seconds since the epoch


class ObjectWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class Storage(Protocol):
    url: str

    def probe(self) -> None:
        """Raise StorageError when the storage cannot be reached right now."""

    def writer(self, key: str) -> ObjectWriter: ...

    def reader(self, key: str) -> BinaryIO: ...

    def list(self, prefix: str) -> Iterator[StoredObject]: ...

    def delete(self, key: str) -> None: ...

    def remove_incomplete(self, older_than: float) -> list[str]:
        """Delete interrupted writes older than ``older_than`` seconds; returns what went."""


def check_key(key: str) -> str:
    """Refuse keys that could escape the repository or collide with temp files."""
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or any(part in ("", ".", "..") for part in parts)
        or PARTIAL_MARKER in key
        or "\\" in key
        or "\0" in key
    ):
        raise StorageError(f"refusing object key {key!r}: not a plain relative path")
    return key


class LocalWriter:
    """Writes to a hidden temporary file and renames it into place on commit."""

    def __init__(self, path: str):
        self._path = path
        self._temp = f"{path}{PARTIAL_MARKER}{secrets.token_hex(4)}"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._file = open(self._temp, "xb")  # noqa: SIM115 - closed in commit/abort
        self._unsynced = 0
        self._sync: BackgroundSync | None = None  # started once the object is large

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._unsynced += len(data)
        if self._unsynced >= WRITEBACK_BYTES:
            self._file.flush()
            if self._sync is None:
                fd = self._file.fileno()
                self._sync = BackgroundSync(lambda: os.fdatasync(fd))
            self._sync.request()
            self._unsynced = 0

    def _stop_sync(self) -> None:
        sync, self._sync = self._sync, None
        if sync is not None:
            sync.stop()

    def commit(self) -> None:
        self._file.flush()
        self._stop_sync()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temp, self._path)
        fsync_directory(os.path.dirname(self._path))

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._stop_sync()
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp)


class LocalStorage:
    """A directory on a local or mounted file system."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *check_key(key).split("/"))

    def probe(self) -> None:
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as error:
            raise StorageError(f"repository {self.url} is not usable: {error.strerror}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"repository {self.url} is not writable by this user")

    def writer(self, key: str) -> LocalWriter:
        try:
            return LocalWriter(self._path(key))
        except OSError as error:
            raise StorageError(f"cannot write {key} in {self.url}: {error.strerror}") from None

    def reader(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise ObjectMissing(f"{key} is missing from {self.url}") from None
        except OSError as error:
            raise StorageError(f"cannot read {key} in {self.url}: {error.strerror}") from None

    def _walk(self, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
        top = os.path.join(self.root, *prefix.strip("/").split("/")) if prefix else self.root
        for directory, _dirs, files in os.walk(top):
            for name in files:
                path = os.path.join(directory, name)
                try:
                    stat = os.stat(path)
                except FileNotFoundError:
                    continue  # deleted while listing
                yield os.path.relpath(path, self.root).replace(os.sep, "/"), stat

    def list(self, prefix: str) -> Iterator[StoredObject]:
        for key, stat in self._walk(prefix):
            if PARTIAL_MARKER not in key:
                yield StoredObject(key, stat.st_size, stat.st_mtime)

    def delete(self, key: str) -> None:
        self._unlink(self._path(key))

    def _unlink(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        # Drop directories the delete left empty, up to the repository root.
        directory = os.path.dirname(path)
        while directory != self.root:
            try:
                os.rmdir(directory)
            except OSError:
                break
            directory = os.path.dirname(directory)

    def remove_incomplete(self, older_than: float) -> list[str]:
        removed = []
        cutoff = time.time() - older_than
        for key, stat in self._walk(""):
            if PARTIAL_MARKER in key and stat.st_mtime <= cutoff:
                self._unlink(os.path.join(self.root, key))
                removed.append(key)
        return removed


def open_storage(url: str, **options) -> Storage:
    """Storage for ``file:///path``, a plain path, or ``s3://bucket/prefix``."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return LocalStorage(parsed.path if parsed.scheme else url)
    if parsed.scheme == "s3":
        from .storage_s3 import S3Storage

        if not parsed.netloc:
            raise ConfigError(f"repository URL {url!r} names no bucket: use s3://BUCKET/PREFIX")
        return S3Storage(parsed.netloc, parsed.path.strip("/"), **options)
    raise ConfigError(f"repository URL {url!r}: use a path, file:///path or s3://bucket/prefix")
