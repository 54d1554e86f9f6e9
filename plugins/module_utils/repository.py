"""Backups in one or more repositories: write everywhere, read with failover.

``Vault`` is the engine's front door. It writes each backup to every
configured repository (primary first), reads from the primary and falls back
to the secondary when an object is missing, unreadable or fails
authentication, and verifies stored data object by object.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import platform
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, BinaryIO

from . import catalog
from .audit import AuditLog
from .catalog import BackupRef
from .errors import BackupError, IntegrityError, KeyUnavailable, StorageError
from .monitoring import Monitor
from .pipes import BackgroundDigest
from .sealing import (
    CONTEXT_PREFIX,
    FRAME_LENGTH,
    MIB,
    Compression,
    OpenedObject,
    encryption_context,
    seal,
    write_all,
)
from .storage import Storage
from .version import VERSION

# (package, module): the libraries whose versions a manifest records when loaded
LIBRARIES = (("cryptography", "cryptography"), ("aws-encryption-sdk", "aws_encryption_sdk"),
             ("boto3", "boto3"))
INCOMPLETE_GRACE_SECONDS = 24 * 3600  # a running backup is never younger than this
# Objects that several backups of one kind use (the packs of file snapshots)
# live beside the backups, under backups/<kind>/shared/<name>: not a backup id,
# so listings and selectors never see them; deleting a backup leaves them.
SHARED_FOLDER = "shared"


def shared_key(kind: str, name: str) -> str:
    return f"backups/{kind}/{SHARED_FOLDER}/{catalog.check_object_name(name)}"


def shared_context(kind: str, name: str) -> dict[str, str]:
    """A shared object's encryption context: it cannot pass for a backup's object."""
    return {f"{CONTEXT_PREFIX}shared": f"{kind}/{name}"}


@dataclass(frozen=True)
class Repository:
    name: str  # "primary", "secondary", ...
    storage: Storage
    # Filled by the storage's own replication (S3 cross-region replication):
    # backups are read and verified there, never written by this tool.
    replicated: bool = False

    def describe(self) -> str:
        return f"{self.name} ({self.storage.url})"


@dataclass
class BackupListing:
    ref: BackupRef
    copies: dict[str, int] = field(default_factory=dict)  # repository name -> stored bytes

    @property
    def id(self) -> str:
        return self.ref.id


@dataclass
class ObjectCheck:
    repository: str
    name: str
    ok: bool
    error: str | None = None


@dataclass
class VerifyReport:
    backup_id: str
    checks: list[ObjectCheck]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def first_failure(self) -> ObjectCheck | None:
        return next((check for check in self.checks if not check.ok), None)


class Vault:
    """Backups kept in ordered repositories (the first is the primary) under one set of keys."""

    def __init__(self, repositories: list[Repository], keys, audit: AuditLog | None = None,
                 compression: Compression | None = None, monitor: Monitor | None = None):
        if not repositories:
            raise BackupError("no repository configured: add at least a primary")
        if repositories[0].replicated:
            raise BackupError(f"the primary repository {repositories[0].describe()} cannot be "
                              "a replica: backups are written to it")
        self.repositories = repositories
        self._keys = keys  # or a function that loads them: listing needs no key
        self.audit = audit or AuditLog(None)
        self.compression = compression or Compression()
        self.monitor = monitor or Monitor()  # metrics and alerts of every backup run

    @property
    def keys(self):
        if callable(self._keys):
            self._keys = self._keys()
        return self._keys

    @property
    def primary(self) -> Repository:
        return self.repositories[0]

    # -- catalog ----------------------------------------------------------

    def list(self, kind: str | None = None) -> list[BackupListing]:
        """Every complete backup in any repository, oldest first, from names alone."""
        listings: dict[str, BackupListing] = {}
        failures = []
        for repository in self.repositories:
            try:
                complete, sizes = self._scan(repository, kind)
            except StorageError as error:
                failures.append(str(error))
                continue
            for ref in complete:
                listing = listings.setdefault(ref.id, BackupListing(ref))
                listing.copies[repository.name] = sizes.get(ref.id, 0)
        if len(failures) == len(self.repositories):
            raise StorageError("no repository can be listed: " + "; ".join(failures))
        return sorted(listings.values(), key=lambda listing: listing.ref)

    def _scan(self, repository: Repository, kind: str | None):
        prefix = f"backups/{kind}" if kind else "backups"
        complete, sizes = [], {}
        for stored in repository.storage.list(prefix):
            parts = stored.key.split("/")
            if len(parts) < 4:
                continue
            ref = BackupRef.parse(parts[2])
            if ref is None or ref.kind != parts[1]:
                continue
            sizes[ref.id] = sizes.get(ref.id, 0) + stored.size
            if len(parts) == 4 and parts[3] == catalog.MANIFEST_NAME:
                complete.append(ref)
        return complete, sizes

    def select(self, selector: str, kind: str | None = None) -> BackupRef:
        return catalog.select((item.ref for item in self.list(kind)), selector, kind)

    # -- writing ----------------------------------------------------------

    @contextlib.contextmanager
    def new_backup(self, kind: str, meta: dict[str, Any] | None = None) -> Iterator[BackupWriter]:
        """Write a backup; it becomes selectable only when the block ends without error.

        The run is reported to the monitor (textfile metrics, the freshness
        metric, an alert when it fails), whoever takes the backup.
        """
        with self.monitor.run("backup", kind) as run:
            self.primary.storage.probe()
            writer = BackupWriter(self, catalog.new_backup_id(kind), kind, dict(meta or {}))
            try:
                yield writer
            except BaseException as error:
                writer.abandon(error)
                raise
            writer.finish()
            run.bytes = sum(entry["stored_size"] for entry in writer.objects)
            run.warnings += writer.warnings

    # -- reading ----------------------------------------------------------

    def manifest(self, ref: BackupRef) -> dict[str, Any]:
        """The decrypted manifest, from the first repository that yields a sound copy."""
        reader = self._open_with_failover(
            ref, catalog.MANIFEST_NAME, catalog.manifest_key(ref.kind, ref.id), {}
        )
        with reader:
            document = json.loads(reader.read())
        if document.get("id") != ref.id or document.get("format") != catalog.MANIFEST_FORMAT:
            raise IntegrityError(f"the manifest of {ref.id} describes another backup")
        if document.get("version", 1) > catalog.MANIFEST_VERSION:
            raise BackupError(f"{ref.id} was written by a newer cosmic-backup (manifest "
                              f"version {document['version']}): upgrade this host's copy")
        return document

    def open_object(self, ref: BackupRef, name: str, manifest: dict[str, Any] | None = None,
                    *, checksum: bool = False) -> BinaryIO:
        """A verified plaintext stream of one object, failing over between repositories.

        Every frame is authenticated (AES-GCM, key commitment, the object's
        encryption context), zstd checks its own XXH64 of the plaintext, and
        the size and zstd checksum must match the manifest. ``checksum`` also
        compares the SHA-256 that version 1 manifests recorded, as ``verify``
        always does; it costs about a second of CPU per GiB and adds no
        protection against damage.
        """
        manifest = manifest or self.manifest(ref)
        entry = _manifest_entry(manifest, name)
        return self._open_with_failover(
            ref, name, catalog.object_key(ref.kind, ref.id, name),
            expected_of(entry, sha256=checksum),
        )

    def _open_with_failover(self, ref, name, key, expected: dict) -> FailoverReader:
        return self._failover(key, encryption_context(ref.id, name), expected,
                              describe=f"{name} of {ref.id}", backup_id=ref.id, object=name)

    def _copy(self, repository: Repository, key: str, context: dict[str, str],
              expected: dict | None = None) -> OpenedObject:
        """One repository's copy of an object, opened and authenticated as it is read;
        ``expected`` is what expected_of takes from the manifest."""
        expected = expected or {}
        return OpenedObject(repository.storage.reader(key), self.keys, context,
                            where=f"{key} in {repository.describe()}",
                            expected_size=expected.get("size"),
                            expected_sha256=expected.get("sha256"),
                            expected_zstd_checksum=expected.get("zstd_checksum"))

    def _failover(self, key: str, context: dict[str, str], expected: dict, *, describe: str,
                  **audit_fields) -> FailoverReader:
        """The first sound copy of ``key``, switching copies mid-stream if one fails.

        The reader checks size and SHA-256 over the stream it delivers; each copy
        checks only the zstd checksum, which needs the copy read to its end."""
        per_copy = {"zstd_checksum": expected.get("zstd_checksum")}
        return FailoverReader(
            [(repository.name, functools.partial(self._copy, repository, key, context, per_copy))
             for repository in self.repositories],
            expected_size=expected.get("size"), expected_sha256=expected.get("sha256"),
            describe=describe,
            on_failure=lambda repository, error: self.audit.record(
                "read", repository=repository, result="failed", error=str(error),
                **audit_fields),
        )

    # -- shared objects -----------------------------------------------------

    def list_shared(self, kind: str) -> dict[str, dict[str, int]]:
        """Shared objects of ``kind`` by name: repository name -> stored bytes (names only)."""
        prefix = f"backups/{kind}/{SHARED_FOLDER}"
        found: dict[str, dict[str, int]] = {}
        failures = []
        for repository in self.repositories:
            try:
                for stored in repository.storage.list(prefix):
                    name = stored.key[len(prefix) + 1:]
                    found.setdefault(name, {})[repository.name] = stored.size
            except StorageError as error:
                failures.append(str(error))
        if len(failures) == len(self.repositories):
            raise StorageError("no repository can be listed: " + "; ".join(failures))
        return found

    def open_shared_copy(self, repository: Repository, kind: str, name: str) -> OpenedObject:
        """One repository's copy of a shared object, without failover (for verification)."""
        return self._copy(repository, shared_key(kind, name), shared_context(kind, name))

    def delete_shared(self, kind: str, name: str, reason: str) -> dict[str, str]:
        """Delete a shared object everywhere; the result per repository, refusals reported."""
        results = {}
        for repository in self.repositories:
            try:
                repository.storage.delete(shared_key(kind, name))
                results[repository.name] = "deleted"
                outcome = "ok"
            except StorageError as error:
                results[repository.name] = f"refused: {error}"
                outcome = "failed"
            self.audit.record("delete", repository=repository.name, result=outcome,
                              object=f"{kind}/{SHARED_FOLDER}/{name}", reason=reason)
        return results

    # -- verification ------------------------------------------------------

    def verify(self, ref: BackupRef) -> VerifyReport:
        """Decrypt every object of every copy and compare it with the manifest."""
        manifest = self.manifest(ref)
        checks = []
        for repository in self.repositories:
            checks.extend(self._verify_copy(repository, ref, manifest))
        report = VerifyReport(ref.id, checks)
        for repository in self.repositories:
            mine = [check for check in checks if check.repository == repository.name]
            failed = next((check for check in mine if not check.ok), None)
            self.audit.record(
                "verify", backup_id=ref.id, repository=repository.name,
                result="ok" if failed is None else "failed",
                objects=len(mine), error=failed.error if failed else None,
            )
        return report

    def _verify_copy(self, repository, ref, manifest) -> list[ObjectCheck]:
        entries = [{"name": catalog.MANIFEST_NAME}, *manifest["objects"]]
        checks = []
        for entry in entries:
            name = entry["name"]
            key = (catalog.manifest_key(ref.kind, ref.id) if name == catalog.MANIFEST_NAME
                   else catalog.object_key(ref.kind, ref.id, name))
            try:
                with self._copy(repository, key, encryption_context(ref.id, name),
                                expected_of(entry)) as plain:
                    while plain.read(4 * MIB):
                        pass
                checks.append(ObjectCheck(repository.name, name, True))
            except KeyUnavailable:
                raise
            except BackupError as error:
                checks.append(ObjectCheck(repository.name, name, False, str(error)))
        return checks

    # -- housekeeping ------------------------------------------------------

    def delete_backup(self, ref: BackupRef, reason: str) -> dict[str, str]:
        """Delete a backup everywhere, manifest first so it is never half-selectable.

        Returns the result per repository ("deleted", "absent" or the refusal,
        e.g. an S3 object lock); a refusal is reported, never retried.
        """
        results = {}
        for repository in self.repositories:
            storage = repository.storage
            keys = [item.key for item in storage.list(ref.prefix)]
            manifest = catalog.manifest_key(ref.kind, ref.id)
            ordered = sorted(keys, key=lambda key: key != manifest)  # manifest first
            try:
                for key in ordered:
                    storage.delete(key)
                results[repository.name] = "deleted" if keys else "absent"
                outcome = "ok"
            except StorageError as error:
                results[repository.name] = f"refused: {error}"
                outcome = "failed"
            self.audit.record("delete", backup_id=ref.id, repository=repository.name,
                              result=outcome, reason=reason, objects=len(keys))
        return results

    def remove_incomplete(self, older_than: float = INCOMPLETE_GRACE_SECONDS) -> list[str]:
        """Remove what interrupted runs left behind: temporary writes, abandoned
        multipart uploads, and backup folders that never got a manifest."""
        removed = []
        cutoff = datetime.now(timezone.utc).timestamp() - older_than
        for repository in self.repositories:
            storage = repository.storage
            removed += [f"{repository.name}:{key}" for key in storage.remove_incomplete(older_than)]
            objects: dict[str, list] = {}
            complete = set()
            for stored in storage.list("backups"):
                parts = stored.key.split("/")
                if len(parts) < 4 or BackupRef.parse(parts[2]) is None:
                    continue  # shared objects are not leftovers of a backup
                objects.setdefault(parts[2], []).append(stored)
                if len(parts) == 4 and parts[3] == catalog.MANIFEST_NAME:
                    complete.add(parts[2])
            for backup_id, items in objects.items():
                if backup_id in complete or max(item.modified for item in items) > cutoff:
                    continue
                for item in items:
                    storage.delete(item.key)
                    removed.append(f"{repository.name}:{item.key}")
                self.audit.record("delete", backup_id=backup_id, repository=repository.name,
                                  result="ok", reason="incomplete backup", objects=len(items))
        return removed


def _sealed_entry(sealed) -> dict[str, Any]:
    return {"size": sealed.size, "zstd_checksum": sealed.zstd_checksum,
            "stored_size": sealed.stored_size}


def expected_of(entry: dict[str, Any], *, sha256: bool = True) -> dict[str, Any]:
    """What a manifest entry says an object's plaintext must be: its size, its
    zstd checksum and (version 1 manifests) its SHA-256, unless ``sha256`` is
    False (hashing costs a core-second per GiB)."""
    return {"size": entry.get("size"), "zstd_checksum": entry.get("zstd_checksum"),
            "sha256": entry.get("sha256") if sha256 else None}


def _manifest_entry(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    for entry in manifest["objects"]:
        if entry["name"] == name:
            return entry
    names = ", ".join(entry["name"] for entry in manifest["objects"]) or "none"
    raise BackupError(f"backup {manifest['id']} has no object {name!r} (it has: {names})")


class BackupWriter:
    """Seals objects into every repository that is still healthy.

    A primary failure aborts the backup; a secondary failure drops that copy
    and becomes a warning, so one broken offsite link never costs a backup.
    """

    def __init__(self, vault: Vault, backup_id: str, kind: str, meta: dict[str, Any]):
        self.vault = vault
        self.id = backup_id
        self.kind = kind
        self.meta = meta
        self.objects: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.healthy = [r for r in vault.repositories if not r.replicated]
        self._losing = threading.Lock()
        self.started = datetime.now(timezone.utc)
        self.ref = BackupRef.parse(backup_id)

    def add_stream(self, name: str, source: BinaryIO) -> dict[str, Any]:
        """Seal everything ``source`` yields as object ``name``; ``source`` may
        be zstd already at work on it (compression.Compression.start)."""
        catalog.check_object_name(name)
        if name == catalog.MANIFEST_NAME or any(o["name"] == name for o in self.objects):
            raise BackupError(f"object name {name!r} is already used in this backup")
        key = catalog.object_key(self.kind, self.id, name)
        sealed = self._seal_everywhere(key, name, source)
        entry = {"name": name, **_sealed_entry(sealed)}
        self.objects.append(entry)
        return entry

    def add_bytes(self, name: str, data: bytes) -> dict[str, Any]:
        return self.add_stream(name, io.BytesIO(data))

    def add_shared(self, name: str, source: BinaryIO) -> dict[str, Any]:
        """Seal ``source`` as shared object ``name`` of this backup's kind (see shared_key).

        It is not listed in this backup's manifest: whoever references it records
        where it is (a snapshot's index does), and it outlives this backup.
        """
        sealed = self._seal_everywhere(shared_key(self.kind, name), name, source,
                                       shared_context(self.kind, name))
        return {"name": name, **_sealed_entry(sealed)}

    def _seal_everywhere(self, key: str, name: str, source: BinaryIO,
                         context: dict[str, str] | None = None):
        writers = {}
        for repository in list(self.healthy):
            try:
                writers[repository.name] = repository.storage.writer(key)
            except StorageError as error:
                self._lose(repository, error, writers)

        def write(chunk: bytes) -> None:
            for repository in list(self.healthy):
                try:
                    writers[repository.name].write(chunk)
                except StorageError as error:
                    self._lose(repository, error, writers)

        try:
            sealed = seal(source, self.vault.keys, context or encryption_context(self.id, name),
                          write, self.vault.compression)
            for repository in list(self.healthy):
                try:
                    writers[repository.name].commit()
                except StorageError as error:
                    self._lose(repository, error, writers)
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        return sealed

    def _lose(self, repository: Repository, error: StorageError, writers: dict) -> None:
        """A repository failed mid-backup: fatal for the primary, a warning otherwise."""
        writer = writers.pop(repository.name, None)
        if writer is not None:
            writer.abort()
        if repository is self.vault.primary:
            raise error
        with self._losing:  # objects are sealed in parallel: both may find it broken
            if repository in self.healthy:
                self.healthy.remove(repository)
                self.warnings.append(f"the {repository.name} copy of {self.id} failed and "
                                     f"was dropped: {error}")

    def finish(self) -> None:
        """Write the manifest last, primary first: only now does the backup exist."""
        manifest = {
            "format": catalog.MANIFEST_FORMAT,
            "version": catalog.MANIFEST_VERSION,
            "id": self.id,
            "kind": self.kind,
            "started": self.started.isoformat(),
            "completed": datetime.now(timezone.utc).isoformat(),
            "host": socket.gethostname(),
            "tool": _tool_versions(),
            "keys": self.vault.keys.key_ids,
            "encryption": {"format": "aws-encryption-sdk", "frame_length": FRAME_LENGTH,
                           "algorithm": "AES_256_GCM_HKDF_SHA512_COMMIT_KEY"},
            "compression": {"format": "zstd", "level": self.vault.compression.level},
            "objects": self.objects,
            "meta": self.meta,
        }
        data = json.dumps(manifest, sort_keys=True).encode()
        self._seal_everywhere(catalog.manifest_key(self.kind, self.id), catalog.MANIFEST_NAME,
                              io.BytesIO(data))
        stored = sum(entry["stored_size"] for entry in self.objects)
        for repository in self.vault.repositories:
            if repository.replicated:
                continue
            ok = repository in self.healthy
            self.vault.audit.record(
                "write", backup_id=self.id, repository=repository.name,
                result="ok" if ok else "failed", kind=self.kind,
                objects=len(self.objects), stored_bytes=stored if ok else None,
            )
        self.manifest = manifest

    def abandon(self, error: BaseException) -> None:
        for repository in self.vault.repositories:
            if repository.replicated:
                continue
            self.vault.audit.record("write", backup_id=self.id, repository=repository.name,
                                    result="failed", kind=self.kind,
                                    error=str(error) or type(error).__name__)


def _tool_versions() -> dict[str, str]:
    """Our version, Python's, and those of the libraries this run loaded (their
    ``__version__``: package metadata would cost a twentieth of a second)."""
    versions = {"cosmic_backup": VERSION, "python": platform.python_version()}
    for package, module in LIBRARIES:
        version = getattr(sys.modules.get(module), "__version__", None)
        if version:
            versions[package] = str(version)
    return versions


class FailoverReader(io.RawIOBase):
    """Reads one object from the first repository that can deliver it.

    If a copy fails part-way (missing, unreadable, failed authentication), the
    next copy is opened and the bytes already delivered are skipped, so the
    reader sees one seamless stream. Its size (and a version 1 SHA-256, when
    asked) is checked at the end; each copy checks its own zstd checksum.
    """

    def __init__(self, openers, *, expected_size, expected_sha256, describe, on_failure):
        super().__init__()
        self._openers = list(openers)
        self._expected = (expected_size, expected_sha256)
        self._describe = describe
        self._on_failure = on_failure
        self._hash = BackgroundDigest("sha256") if expected_sha256 else None
        self._delivered = 0
        self._current: BinaryIO | None = None
        self._failures: list[str] = []
        self._done = False
        self.used: str | None = None  # the repository that delivered the end

    def readable(self) -> bool:
        return True

    def _next_copy(self) -> None:
        while self._openers:
            name, opener = self._openers.pop(0)
            try:
                copy = opener()
                skip = self._delivered
                while skip:
                    chunk = copy.read(min(skip, 4 * MIB))
                    if not chunk:
                        raise IntegrityError(f"{name} copy is shorter than the one it replaces")
                    skip -= len(chunk)
                self._current, self.used = copy, name
                return
            except KeyUnavailable:
                raise
            except BackupError as error:
                self._record(name, error)
        raise IntegrityError(
            f"no repository holds a sound copy of {self._describe}: " + "; ".join(self._failures)
        )

    def _record(self, name: str, error: BackupError) -> None:
        self._failures.append(f"{name}: {error}")
        self._on_failure(name, error)

    @property
    def warnings(self) -> list[str]:
        return list(self._failures)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(4 * MIB), b""))
        data = self._transfer(lambda copy: copy.read(size), b"")
        if self._hash is not None:
            self._hash.update(data)
        return data

    def splice_to(self, fd: int, size: int) -> int:
        """Like read, into ``fd`` and without copying through Python (see
        OpenedObject.splice_to): the number of bytes moved, 0 at the end."""
        if self._hash is not None:  # the bytes must pass through the hash
            return write_all(fd, self.read(size))
        return self._transfer(lambda copy: copy.splice_to(fd, size), 0)

    def copy_to(self, fd: int) -> int:
        """Every byte to ``fd``, spliced where the kernel can (not into a file
        opened for appending, say); the number of bytes."""
        total = 0
        try:
            while moved := self.splice_to(fd, 4 * MIB):
                total += moved
        except OSError as error:
            if error.errno != errno.EINVAL or total:
                raise
            while data := self.read(4 * MIB):
                total += write_all(fd, data)
        return total

    def _transfer(self, move, end):
        """``move`` on the current copy, failing over to the next when it fails."""
        while True:
            if self._done:
                return end
            if self._current is None:
                self._next_copy()
            try:
                moved = move(self._current)
            except KeyUnavailable:
                raise
            except BackupError as error:
                self._current.close()
                self._current = None
                self._record(self.used, error)
                continue
            count = moved if isinstance(moved, int) else len(moved)
            if count:
                self._delivered += count
                return moved
            self._done = True
            self._check_end()
            return end

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _check_end(self) -> None:
        size, sha256 = self._expected
        if size is not None and self._delivered != size:
            raise IntegrityError(f"{self._describe}: read {self._delivered} bytes, "
                                 f"the manifest says {size}")
        if sha256 is not None and self._hash.hexdigest() != sha256:
            raise IntegrityError(f"{self._describe} does not match the SHA-256 in its manifest")

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
        super().close()
