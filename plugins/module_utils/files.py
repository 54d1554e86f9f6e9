"""File snapshots: incremental, deduplicated and encrypted; restores that swap in.

A snapshot is a backup (kind ``files``, ``config`` or ``code``) whose object
``index`` lists every entry (directory, file, symlink, hard link) with its
mode, owner, times and, for files, the content blobs it is made of. Content is
cut into blobs (a whole small file, or 4 MiB pieces of a large one), named by
their SHA-256 and stored once in *packs*: shared objects of the kind
(``backups/<kind>/shared/packs/..``, see repository.py) that many snapshots
use. Every index also carries the location (pack, offset, length) of every blob
it needs, so each snapshot restores on its own, with no chain to replay.

The backup host never reads the repository back (in production it cannot
decrypt): what it already stored is remembered in a local cache under the
state directory (see ``SnapshotCache``), checked against the pack names it may
list before and after every snapshot. docs/files.md tells the whole story.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import fnmatch
import grp
import hashlib
import io
import json
import os
import posixpath
import pwd
import queue
import re
import secrets
import shutil
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .atomic_file import atomic_file
from .catalog import DATE_PATTERN, BackupRef
from .durability import TreeWriteback, fsync_directory
from .errors import (
    BackupError,
    ConfigError,
    IntegrityError,
    KeyUnavailable,
    SelectorError,
    StorageError,
)

MIB = 1 << 20
CHUNK_SIZE = 4 * MIB  # large files are cut into blobs of this size
PACK_TARGET = 16 * MIB  # a pack is sealed once it holds this much
INDEX_NAME = "index"
INDEX_FORMAT = "cosmic-backup files index"
INDEX_VERSION = 1
PACK_FORMAT = "cosmic-backup pack"
CACHE_FORMAT = "cosmic-backup files cache"
CACHE_VERSION = 1
PACK_PREFIX = "packs"
PACK_NAME = re.compile(r"^packs/[0-9a-f]{2}/[0-9a-f]{32}$")
BLOB_ID = re.compile(r"^[0-9a-f]{64}$")
LABEL_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
DEFAULT_STATE_DIRS = ("/var/lib/cosmic-backup/state", "~/.cache/cosmic-backup")
PACK_GRACE_SECONDS = 24 * 3600  # a running snapshot's new packs are never younger than this
ZERO_BLOCK = 64 << 10
ENTRY_TYPES = {"d": "directory", "f": "file", "l": "symlink", "h": "hard link"}
READ_ATTEMPTS = 3
STAGING_MARK = ".cosmic-restore-"
RESTORE_WORKERS = 2  # packs read at once by a restore


# -- names ------------------------------------------------------------------------


def check_label(label: str) -> str:
    if not isinstance(label, str) or not LABEL_PATTERN.match(label):
        raise ConfigError(f"label {label!r} is not allowed: use lowercase letters, digits, "
                          "'.', '_' and '-' (e.g. uploads, logs)")
    return label


def snapshot_path(path: str) -> str:
    """An absolute path as the index names it: normalised, without the leading '/'."""
    if not path.startswith("/"):
        raise ConfigError(f"{path!r} is not an absolute path: name files and directories "
                          "from the root, e.g. /srv/uploads")
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = normal[1:]
    return normal.lstrip("/")


def shown(path: str) -> str:
    """A path for messages: non-UTF-8 bytes and control characters made visible."""
    return repr(path)[1:-1] if not path.isprintable() else path


def _under(path: str, prefix: str) -> bool:
    return prefix == "" or path == prefix or path.startswith(prefix + "/")


def _ancestors(path: str) -> Iterator[str]:
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        yield path


# -- the local cache ----------------------------------------------------------------


def exclusive_lock(directory: str, name: str, busy: str) -> int:
    """Hold ``directory/name`` locked until the returned descriptor is closed;
    fail at once, saying ``busy``, while another process holds it."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"state directory {directory} cannot be created "
                          f"({error.strerror}): set state_dir to a writable directory") from None
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise ConfigError(f"cannot open the lock {path} ({error.strerror}): set state_dir "
                          "to a directory this user may write") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BackupError(f"{busy} (it holds {path}): wait for it to finish") from None
    return fd


@contextlib.contextmanager
def held_lock(directory: str, name: str, busy: str) -> Iterator[None]:
    fd = exclusive_lock(directory, name, busy)
    try:
        yield
    finally:
        os.close(fd)


def default_state_dir() -> str:
    for candidate in DEFAULT_STATE_DIRS:
        candidate = os.path.expanduser(candidate)
        parent = os.path.dirname(candidate)
        usable = os.access(candidate, os.W_OK)
        if usable or (not os.path.exists(candidate) and os.access(parent, os.W_OK)):
            return candidate
    return os.path.expanduser(DEFAULT_STATE_DIRS[-1])


def _write_json_atomically(path: str, document: Any) -> None:
    with atomic_file(path, "w") as handle:
        json.dump(document, handle, separators=(",", ":"))


class SnapshotCache:
    """What this host already stored in one set of repositories, per kind.

    ``blobs.json``: every blob this host stored and where (pack, offset,
    length), and each pack's size and zstd checksum. ``index-<label>.json``: the
    entries of the label's last snapshot, with inode numbers, so an unchanged
    file (same size, modification time and inode) is not read again.

    Blob ids are the SHA-256 of plaintext content. They appear only here (mode
    0600, on the host that reads the files anyway) and inside sealed objects;
    object names are random pack ids and reveal nothing about content. The
    cache is advisory: packs that are no longer listed in every writable
    repository are dropped from it before a snapshot uses it, and a lost cache
    costs one full read and upload, never a wrong snapshot.
    """

    def __init__(self, state_dir: str, vault, kind: str):
        identity = "\0".join([kind, *(repository.storage.url for repository in vault.repositories
                                      if not repository.replicated)])
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        self.directory = os.path.join(os.path.abspath(state_dir), f"{kind}-{digest}")
        self.kind = kind
        self.packs: dict[str, dict[str, Any]] = {}
        self.blobs: dict[str, list] = {}
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """One snapshot of a kind at a time per host (they share the cache)."""
        self._lock_fd = exclusive_lock(self.directory, "lock",
                                       f"another {self.kind} snapshot is running on this host")

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> None:
        document = self._read("blobs.json")
        if document:
            self.packs = document.get("packs", {})
            self.blobs = document.get("blobs", {})

    def _read(self, name: str) -> dict | None:
        try:
            with open(os.path.join(self.directory, name), encoding="utf-8") as handle:
                document = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # a damaged cache is a lost cache: everything is read again
        if document.get("format") != CACHE_FORMAT or document.get("version") != CACHE_VERSION:
            return None
        return document

    def forget_missing(self, present: set[str]) -> int:
        """Drop packs (and their blobs) that the repositories no longer hold."""
        gone = {name for name in self.packs if name not in present}
        for name in gone:
            del self.packs[name]
        if gone:
            self.blobs = {blob: where for blob, where in self.blobs.items() if where[0] not in gone}
        return len(gone)

    def previous(self, label: str) -> dict | None:
        return self._read(f"index-{label}.json")

    def save(self, label: str, backup_id: str, entries: list[dict]) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        _write_json_atomically(os.path.join(self.directory, "blobs.json"), {
            "format": CACHE_FORMAT, "version": CACHE_VERSION,
            "packs": self.packs, "blobs": self.blobs})
        _write_json_atomically(os.path.join(self.directory, f"index-{label}.json"), {
            "format": CACHE_FORMAT, "version": CACHE_VERSION,
            "backup_id": backup_id, "entries": entries})


# -- packs ----------------------------------------------------------------------------


def _new_pack_name() -> str:
    pack_id = secrets.token_hex(16)
    return f"{PACK_PREFIX}/{pack_id[:2]}/{pack_id}"


class PackWriter:
    """Collects new blobs into packs and seals each full pack in a thread of its own,
    so reading and hashing the next files overlaps compression and encryption."""

    def __init__(self, backup, target: int | None = None):
        self._backup = backup
        self._target = target or PACK_TARGET
        self._buffer = bytearray()
        self._table: list[list] = []
        self._queue: queue.Queue = queue.Queue(2)
        self._error: BaseException | None = None
        self.written: dict[str, dict[str, Any]] = {}  # pack name -> size, zstd_checksum, ...
        self.located: dict[str, list] = {}  # blob id -> [pack, offset, length]
        self._thread = threading.Thread(target=self._seal_packs, daemon=True, name="packs")
        self._thread.start()

    def add(self, blob_id: str, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._table.append([blob_id, len(self._buffer), len(data)])
        self._buffer += data
        if len(self._buffer) >= self._target:
            self._flush()

    def _flush(self) -> None:
        if not self._table:
            return
        name = _new_pack_name()
        trailer = json.dumps({"format": PACK_FORMAT, "blobs": self._table},
                             separators=(",", ":")).encode()
        self._buffer += trailer + struct.pack(">Q", len(trailer))
        self._queue.put((name, self._buffer, self._table))
        self._buffer, self._table = bytearray(), []

    def _seal_packs(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            name, data, table = item
            if self._error is not None:
                continue
            try:
                entry = self._backup.add_shared(name, io.BytesIO(data))
                self.written[name] = {key: value for key, value in entry.items()
                                      if key != "name"}
                for blob_id, offset, length in table:
                    self.located[blob_id] = [name, offset, length]
            except BaseException as error:  # noqa: BLE001 - handed to the producer
                self._error = error

    def close(self) -> None:
        """Seal what is left and wait for every pack; raise what sealing hit."""
        if self._error is None:
            self._flush()
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        self._error = self._error or BackupError("aborted")
        self._queue.put(None)
        self._thread.join()

    @property
    def stored_bytes(self) -> int:
        return sum(pack["stored_size"] for pack in self.written.values())


# -- taking a snapshot ------------------------------------------------------------------


@dataclass
class SnapshotStats:
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0  # size of every file in the snapshot
    read_bytes: int = 0  # what was read from disk this time
    read_files: int = 0
    reused_files: int = 0  # unchanged since the previous snapshot: not read
    new_bytes: int = 0  # content not stored before (plaintext)
    new_blobs: int = 0
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class _Walker:
    """Walks the roots and turns what it finds into index entries and blobs."""

    def __init__(self, previous: dict[str, dict], known: Callable[[str], bool],
                 store: Callable[[str, bytes], None] | None, excludes: Iterable[str],
                 skip_paths: Iterable[str], stats: SnapshotStats):
        self.previous = previous
        self.known = known
        self.store = store
        self.excludes = list(excludes)
        self.skip_paths = {os.path.abspath(path) for path in skip_paths}
        self.stats = stats
        self.entries: list[dict] = []
        self.inodes: dict[str, int] = {}
        self.new: set[str] = set()
        self._links: dict[tuple[int, int], str] = {}
        self._seen: set[str] = set()

    def excluded(self, path: str) -> bool:
        name = os.path.basename(path)
        for pattern in self.excludes:
            if fnmatch.fnmatchcase(path if "/" in pattern else name, pattern):
                return True
            if "/" in pattern and fnmatch.fnmatchcase(path, pattern.rstrip("/") + "/*"):
                return True
        return path in self.skip_paths

    def walk(self, root: str) -> None:
        try:
            info = os.lstat(root)
        except FileNotFoundError:
            raise ConfigError(f"{shown(root)} does not exist: check the path to back up") from None
        except OSError as error:
            raise ConfigError(f"{shown(root)} cannot be read: {error.strerror}") from None
        if stat.S_ISLNK(info.st_mode):
            self.stats.warnings.append(
                f"{shown(root)} is a symlink to {shown(os.readlink(root))}: only the link is "
                "backed up; name its target to back up the files")
        self._visit(root, info)

    def _visit(self, path: str, info: os.stat_result) -> None:
        relative = snapshot_path(path)
        if relative in self._seen or not relative:
            if not relative:
                raise ConfigError("the root directory / itself cannot be a snapshot root: "
                                  "name the directories to back up")
            return
        self._seen.add(relative)
        entry = {"path": relative, "mode": stat.S_IMODE(info.st_mode), "uid": info.st_uid,
                 "gid": info.st_gid, "mtime_ns": info.st_mtime_ns}
        if stat.S_ISDIR(info.st_mode):
            entry["type"] = "d"
            self.entries.append(entry)
            self.stats.directories += 1
            try:
                with os.scandir(path) as listing:
                    children = sorted(listing, key=lambda item: item.name)
            except OSError as error:
                self._skip(path, f"cannot be listed ({error.strerror})")
                return
            for child in children:
                if self.excluded(child.path):
                    continue
                try:
                    child_info = child.stat(follow_symlinks=False)
                except FileNotFoundError:
                    self._skip(child.path, "vanished while the snapshot was taken")
                    continue
                except OSError as error:
                    self._skip(child.path, f"cannot be read ({error.strerror})")
                    continue
                self._visit(child.path, child_info)
        elif stat.S_ISLNK(info.st_mode):
            try:
                entry["target"] = os.readlink(path)
            except OSError as error:
                self._skip(path, f"symlink cannot be read ({error.strerror})")
                return
            entry["type"] = "l"
            self.entries.append(entry)
            self.stats.symlinks += 1
        elif stat.S_ISREG(info.st_mode):
            key = (info.st_dev, info.st_ino)
            if info.st_nlink > 1 and key in self._links:
                entry.update(type="h", target=self._links[key])
                self.entries.append(entry)
                self.stats.hardlinks += 1
                return
            if self._file(path, info, entry):
                if info.st_nlink > 1:
                    self._links[key] = relative
                self.entries.append(entry)
        else:
            kind = ("device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
                    else "socket" if stat.S_ISSOCK(info.st_mode) else "FIFO")
            self._skip(path, f"is a {kind}: not backed up")

    def _skip(self, path: str, why: str) -> None:
        self.stats.skipped.append(shown(path))
        self.stats.warnings.append(f"{shown(path)} {why}")

    def _file(self, path: str, info: os.stat_result, entry: dict) -> bool:
        relative = entry["path"]
        entry["type"] = "f"
        previous = self.previous.get(relative)
        if (previous is not None and previous.get("type") == "f"
                and previous.get("size") == info.st_size
                and previous.get("mtime_ns") == info.st_mtime_ns
                and previous.get("ino") == info.st_ino
                and all(self.known(blob) or blob in self.new for blob in previous["blobs"])):
            entry.update(size=info.st_size, blobs=list(previous["blobs"]))
            if previous.get("sparse"):
                entry["sparse"] = True
            self.inodes[relative] = info.st_ino
            self.stats.reused_files += 1
            self._count_file(entry)
            return True
        for _attempt in range(READ_ATTEMPTS):
            try:
                outcome = self._read(path, info, entry)
            except FileNotFoundError:
                self._skip(path, "vanished while the snapshot was taken")
                return False
            except OSError as error:
                self._skip(path, f"cannot be read ({error.strerror})")
                return False
            if outcome == "ok":
                break
            if outcome == "replaced":
                try:
                    info = os.lstat(path)
                except FileNotFoundError:
                    self._skip(path, "vanished while the snapshot was taken")
                    return False
                if not stat.S_ISREG(info.st_mode):
                    self._skip(path, "was replaced by something that is not a file while read")
                    return False
        else:
            self.stats.warnings.append(
                f"{shown(path)} kept changing while it was read: the snapshot holds the "
                f"{entry['size']} bytes read last (consistent in itself, maybe not what the "
                "application meant); snapshot again when it is quiet")
        self.inodes[relative] = info.st_ino
        self.stats.read_files += 1
        self._count_file(entry)
        return True

    def _count_file(self, entry: dict) -> None:
        self.stats.files += 1
        self.stats.bytes += entry["size"]

    def _read(self, path: str, info: os.stat_result, entry: dict) -> str:
        """Read the file once into blobs; "changed" or "replaced" asks for another try."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags | getattr(os, "O_NOATIME", 0))
        except PermissionError:
            fd = os.open(path, flags)  # O_NOATIME needs ownership
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode) or before.st_ino != info.st_ino:
                return "replaced"
            blobs, size = [], 0
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            remaining = before.st_size  # what grows meanwhile belongs to the next snapshot
            while remaining > 0:
                chunk = _read_exactly(fd, min(CHUNK_SIZE, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                size += len(chunk)
                blob_id = hashlib.sha256(chunk).hexdigest()
                blobs.append(blob_id)
                if not self.known(blob_id) and blob_id not in self.new:
                    self.new.add(blob_id)
                    self.stats.new_blobs += 1
                    self.stats.new_bytes += len(chunk)
                    if self.store is not None:
                        self.store(blob_id, chunk)
            self.stats.read_bytes += size
            after = os.fstat(fd)
        finally:
            os.close(fd)
        entry.update(size=size, blobs=blobs, mtime_ns=before.st_mtime_ns,
                     mode=stat.S_IMODE(before.st_mode), uid=before.st_uid, gid=before.st_gid)
        entry.pop("sparse", None)
        if before.st_blocks * 512 < size:
            entry["sparse"] = True
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or \
                size != before.st_size:
            return "changed"
        return "ok"


def _read_exactly(fd: int, size: int) -> bytes:
    data = os.read(fd, size)
    if len(data) == size or not data:
        return data
    parts = [data]
    missing = size - len(data)
    while missing:
        more = os.read(fd, missing)
        if not more:
            break
        parts.append(more)
        missing -= len(more)
    return b"".join(parts)


def _names(entries: list[dict]) -> None:
    """User and group names beside the numeric ids (restores use the numbers)."""
    users: dict[int, str | None] = {}
    groups: dict[int, str | None] = {}
    for entry in entries:
        uid, gid = entry["uid"], entry["gid"]
        if uid not in users:
            try:
                users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                users[uid] = None
        if gid not in groups:
            try:
                groups[gid] = grp.getgrgid(gid).gr_name
            except KeyError:
                groups[gid] = None
        if users[uid]:
            entry["user"] = users[uid]
        if groups[gid]:
            entry["group"] = groups[gid]


@dataclass
class SnapshotResult:
    backup_id: str | None
    kind: str
    label: str
    changed: bool
    stats: SnapshotStats
    stored_bytes: int = 0  # sealed bytes written: new packs and the index
    packs_written: int = 0
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    entries: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "backup_id": self.backup_id, "kind": self.kind, "label": self.label,
            "changed": self.changed, "files": stats.files, "directories": stats.directories,
            "symlinks": stats.symlinks, "hardlinks": stats.hardlinks, "bytes": stats.bytes,
            "read_files": stats.read_files, "read_bytes": stats.read_bytes,
            "reused_files": stats.reused_files, "new_bytes": stats.new_bytes,
            "new_blobs": stats.new_blobs, "stored_bytes": self.stored_bytes,
            "packs_written": self.packs_written, "skipped_paths": stats.skipped,
            "warnings": self.warnings, "notes": self.notes,
        }


def _writable(vault) -> list:
    return [repository for repository in vault.repositories if not repository.replicated]


def present_packs(vault, kind: str) -> set[str]:
    """Packs held by every writable repository (a replica fills itself)."""
    listed = vault.list_shared(kind)
    names = {repository.name for repository in _writable(vault)}
    return {name for name, copies in listed.items()
            if PACK_NAME.match(name) and names <= set(copies)}


def _prepare_cache(vault, kind: str, label: str, state_dir: str | None,
                   notes: list[str]) -> tuple[SnapshotCache, dict[str, dict]]:
    cache = SnapshotCache(state_dir or default_state_dir(), vault, kind)
    cache.lock()
    try:
        cache.load()
        present = present_packs(vault, kind)
        dropped = cache.forget_missing(present)
        if dropped:
            notes.append(f"{dropped} pack(s) this host stored earlier are gone (pruned): "
                         "their content is stored again when it is still in use")
        previous = cache.previous(label)
        entries = {entry["path"]: entry for entry in (previous or {}).get("entries", [])}
        if previous is None:
            notes.append(f"no earlier {kind} snapshot labelled {label} is cached on this host: "
                         "every file is read (content already stored is not sent again)")
        return cache, entries
    except BaseException:
        cache.unlock()
        raise


def _same_content(entries: list[dict], previous: dict[str, dict]) -> bool:
    if len(entries) != len(previous):
        return False
    for entry in entries:
        old = previous.get(entry["path"])
        if old is None:
            return False
        mine = {key: value for key, value in entry.items() if key not in ("ino", "sparse")}
        theirs = {key: value for key, value in old.items() if key not in ("ino", "sparse")}
        if mine != theirs:
            return False
    return True


def take_snapshot(vault, paths: Iterable[str], *, label: str, kind: str = "files",
                  excludes: Iterable[str] = (), state_dir: str | None = None,
                  meta: dict[str, Any] | None = None, check_mode: bool = False,
                  only_if_changed: bool = False) -> SnapshotResult:
    """Snapshot ``paths`` as a new backup of ``kind`` labelled ``label``.

    Unchanged files (size, modification time and inode as in the label's
    previous snapshot on this host) are not read; content already stored is
    not sent. ``check_mode`` walks and hashes what changed but stores nothing.
    ``only_if_changed`` writes no backup when nothing differs from the
    previous snapshot (configuration is backed up on change).
    """
    check_label(label)
    roots = _roots(paths)
    notes: list[str] = []
    cache, previous = _prepare_cache(vault, kind, label, state_dir, notes)
    try:
        return _snapshot_locked(vault, roots, label=label, kind=kind, excludes=excludes,
                                cache=cache, previous=previous, meta=meta,
                                check_mode=check_mode, only_if_changed=only_if_changed,
                                notes=notes, state_dir=state_dir)
    finally:
        cache.unlock()


def _roots(paths: Iterable[str]) -> list[str]:
    roots = []
    for path in paths:
        if not snapshot_path(path):
            raise ConfigError("the root directory / itself cannot be backed up as a tree: "
                              "name the directories to back up")
        roots.append("/" + snapshot_path(path))
    if not roots:
        raise ConfigError("no path to back up: name at least one file or directory")
    for root in roots:
        for other in roots:
            if root != other and _under(snapshot_path(root), snapshot_path(other)):
                raise ConfigError(f"{shown(root)} is inside {shown(other)}: name each tree once")
    return sorted(set(roots))


def _skip_paths(vault, cache: SnapshotCache) -> list[str]:
    """Never back up the repository or the cache into themselves."""
    skip = [os.path.dirname(cache.directory)]
    for repository in vault.repositories:
        root = getattr(repository.storage, "root", None)
        if root:
            skip.append(root)
    return skip


def _snapshot_locked(vault, roots, *, label, kind, excludes, cache, previous, meta,
                     check_mode, only_if_changed, notes, state_dir) -> SnapshotResult:
    stats = SnapshotStats()

    def known(blob_id: str) -> bool:
        return blob_id in cache.blobs

    if check_mode or only_if_changed:
        walker = _Walker(previous, known, None, excludes, _skip_paths(vault, cache), stats)
        for root in roots:
            walker.walk(root)
        changed = not _same_content(_indexed(walker), previous) if previous else True
        if check_mode or not changed:
            result = SnapshotResult(None, kind, label, changed, stats, notes=notes,
                                    warnings=list(stats.warnings), entries=walker.entries)
            if not changed:
                result.notes.append(f"nothing changed since the last {kind} snapshot "
                                    f"{label}: no backup written")
            return result
        stats = SnapshotStats()  # the real run counts again

    base_meta = {"label": label, "paths": roots, **(meta or {})}
    with vault.new_backup(kind, base_meta) as backup:
        walker, packs, index_entry = _write_into(vault, backup, roots, label, excludes, cache,
                                                 previous, stats, INDEX_NAME)
        backup.meta.update(_summary(stats, packs, roots))
        backup.meta["warnings"] = stats.warnings[:100]
    _remember(cache, label, backup.id, walker, packs)
    entries = walker.entries
    result = SnapshotResult(
        backup.id, kind, label, True, stats,
        stored_bytes=packs.stored_bytes + index_entry["stored_size"],
        packs_written=len(packs.written), warnings=list(stats.warnings) + backup.warnings,
        notes=notes, entries=entries)
    vault.audit.record("snapshot", backup_id=backup.id, result="ok", kind=kind, label=label,
                       files=stats.files, read_bytes=stats.read_bytes,
                       new_bytes=stats.new_bytes, warnings=len(result.warnings) or None)
    return result


def _write_into(vault, backup, roots, label, excludes, cache, previous, stats, index_name):
    """Walk the roots, pack new content and add the index to ``backup``."""
    packs = PackWriter(backup)
    try:
        walker = _Walker(previous, lambda blob_id: blob_id in cache.blobs, packs.add, excludes,
                         _skip_paths(vault, cache), stats)
        for root in roots:
            walker.walk(root)
        packs.close()
    except BaseException:
        packs.abort()
        raise
    _names(walker.entries)
    index, used = _build_index(walker.entries, roots, label, cache, packs)
    present = present_packs(vault, backup.kind)
    missing = sorted(name for name in used if name not in packs.written and name not in present)
    if missing:
        raise BackupError(
            f"{len(missing)} pack(s) this snapshot needs were removed while it ran "
            f"(a prune?), e.g. {missing[0]}: nothing was recorded; run the backup again")
    index_entry = backup.add_bytes(index_name, json.dumps(index, separators=(",", ":"))
                                   .encode("utf-8", "surrogateescape"))
    return walker, packs, index_entry


def _remember(cache: SnapshotCache, label: str, backup_id: str, walker: _Walker,
              packs: PackWriter) -> None:
    """Only once the manifest is written: what this host stored, for the next snapshot."""
    cache.packs.update(packs.written)
    cache.blobs.update(packs.located)
    cached = [dict(entry, ino=walker.inodes[entry["path"]]) if entry["path"] in walker.inodes
              else entry for entry in walker.entries]
    cache.save(label, backup_id, cached)


@contextlib.contextmanager
def snapshot_into(vault, backup, paths: Iterable[str], *, label: str, index_name: str,
                  excludes: Iterable[str] = (), state_dir: str | None = None
                  ) -> Iterator[SnapshotResult]:
    """A snapshot written as one index object of a backup that holds more (code backups).

    Enter it inside ``vault.new_backup`` and leave it after that block: the
    cache learns what was stored only once the manifest exists.
    """
    check_label(label)
    roots = _roots(paths)
    notes: list[str] = []
    cache, previous = _prepare_cache(vault, backup.kind, label, state_dir, notes)
    try:
        stats = SnapshotStats()
        walker, packs, index_entry = _write_into(vault, backup, roots, label, excludes, cache,
                                                 previous, stats, index_name)
        result = SnapshotResult(backup.id, backup.kind, label, True, stats,
                                stored_bytes=packs.stored_bytes + index_entry["stored_size"],
                                packs_written=len(packs.written), warnings=list(stats.warnings),
                                notes=notes, entries=walker.entries)
        yield result
        if getattr(backup, "manifest", None) is not None:  # BackupWriter.finish() ran
            _remember(cache, label, backup.id, walker, packs)
    finally:
        cache.unlock()


def _indexed(walker: _Walker) -> list[dict]:
    """Entries as they will be compared with the cached previous ones."""
    entries = [dict(entry) for entry in walker.entries]
    _names(entries)
    return entries


def _summary(stats: SnapshotStats, packs: PackWriter, roots: list[str]) -> dict[str, Any]:
    return {"files": stats.files, "directories": stats.directories, "symlinks": stats.symlinks,
            "hardlinks": stats.hardlinks, "bytes": stats.bytes, "read_bytes": stats.read_bytes,
            "new_bytes": stats.new_bytes, "reused_files": stats.reused_files,
            "packs_written": len(packs.written), "skipped": len(stats.skipped)}


def _build_index(entries, roots, label, cache: SnapshotCache, packs: PackWriter):
    blobs: dict[str, list] = {}
    for entry in entries:
        for blob_id in entry.get("blobs", ()):
            if blob_id not in blobs:
                where = packs.located.get(blob_id) or cache.blobs.get(blob_id)
                if where is None:
                    raise BackupError(f"internal error: blob {blob_id[:12]} of "
                                      f"{shown(entry['path'])} has no pack; report this bug")
                blobs[blob_id] = where
    used = {where[0] for where in blobs.values()}
    pack_table = {}
    for name in sorted(used):
        info = packs.written.get(name) or cache.packs.get(name)
        pack_table[name] = {key: value for key, value in info.items()
                            if key != "stored_size"}  # size, zstd_checksum (sha256 before)
    index = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "label": label,
             "roots": [snapshot_path(root) for root in roots], "entries": entries,
             "blobs": blobs, "packs": pack_table}
    return index, used


# -- reading snapshots --------------------------------------------------------------------


def select_snapshot(vault, selector: str, kind: str = "files",
                    label: str | None = None) -> BackupRef:
    """``latest``, ``YYYY-MM-DD`` or an id, among the snapshots of ``label`` (any when None).

    Labels live in the encrypted manifests: candidates are read newest first.
    """
    if label is None:
        return vault.select(selector, kind)
    check_label(label)
    candidates = sorted((item.ref for item in vault.list(kind)), reverse=True)
    if selector != "latest" and not DATE_PATTERN.match(selector):
        ref = vault.select(selector, kind)
        found = vault.manifest(ref).get("meta", {}).get("label")
        if found != label:
            raise SelectorError(f"{ref.id} is a snapshot of {found!r}, not {label!r}")
        return ref
    if DATE_PATTERN.match(selector):
        vault.select(selector, kind)  # a clear error when that day has none at all
        candidates = [ref for ref in candidates if ref.created.date().isoformat() == selector]
    for ref in candidates:
        if vault.manifest(ref).get("meta", {}).get("label") == label:
            return ref
    when = "yet" if selector == "latest" else f"on {selector} (UTC)"
    raise SelectorError(f"there is no {kind} snapshot labelled {label} {when}: "
                        "`cosmic-backup list --kind " + kind + "` shows what there is")


def load_index(vault, ref: BackupRef, name: str = INDEX_NAME) -> dict:
    """A snapshot's index, authenticated; its structure is checked before any use."""
    with vault.open_object(ref, name) as plain:
        raw = plain.read()
    try:
        index = json.loads(raw.decode("utf-8", "surrogateescape"))
    except ValueError:
        raise IntegrityError(f"the index of {ref.id} is not valid JSON") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise IntegrityError(f"{ref.id} holds no file index: it is not a snapshot")
    return index


@dataclass
class Plan:
    """What a restore will write, checked entry by entry before anything is written."""

    entries: list[dict]
    blobs: dict[str, list]
    packs: dict[str, dict]
    refused: list[str] = field(default_factory=list)


def check_index(index: dict, *, allow_external_symlinks: bool = False) -> Plan:
    """Refuse everything that could write outside the target or is not what it claims.

    Absolute paths, ``.``/``..`` components, duplicates, device nodes and other
    unknown types, paths under a symlink or a file, symlinks that leave their
    root (unless allowed), hard links to anything but a file of the snapshot,
    and blob references that do not add up are all refused.
    """
    refused: list[str] = []
    entries = index.get("entries")
    blobs = index.get("blobs")
    packs = index.get("packs")
    roots = index.get("roots")
    if not isinstance(entries, list) or not isinstance(blobs, dict) or \
            not isinstance(packs, dict) or not isinstance(roots, list):
        raise IntegrityError("the index is malformed: entries, blobs, packs or roots missing")
    for root in roots:
        problem = _path_problem(root)
        if problem:
            refused.append(f"root {shown(str(root))}: {problem}")
    for name, info in packs.items():
        if not isinstance(name, str) or not PACK_NAME.match(name) or not isinstance(info, dict) \
                or not isinstance(info.get("size"), int):
            refused.append(f"pack {shown(str(name))}: not a pack name this tool writes")
    valid_blobs = {}
    for blob_id, where in blobs.items():
        if not (isinstance(blob_id, str) and BLOB_ID.match(blob_id) and isinstance(where, list)
                and len(where) == 3 and where[0] in packs and isinstance(packs[where[0]], dict)
                and all(isinstance(n, int) and n >= 0 for n in where[1:])
                and where[1] + where[2] <= packs[where[0]].get("size", -1)):
            refused.append(f"blob {shown(str(blob_id))[:16]}: its location is not in a pack")
            continue
        valid_blobs[blob_id] = where
    types: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            refused.append(f"entry {shown(str(entry))[:60]}: not an entry")
            continue
        path = entry["path"]
        problem = _path_problem(path)
        if problem is None and path in types:
            problem = "appears twice"
        if problem is None and entry.get("type") not in ENTRY_TYPES:
            problem = (f"is a {entry.get('type')!r} (device nodes and other special files "
                       "are never restored)")
        if problem is None and not all(isinstance(entry.get(key), int) and entry[key] >= 0
                                       for key in ("mode", "uid", "gid", "mtime_ns")):
            problem = "has no valid mode, owner or time"
        if problem is None and not any(_under(path, root) for root in roots):
            problem = "is outside the snapshot's roots"
        if problem:
            refused.append(f"{shown(path)}: {problem}")
            continue
        types[path] = entry["type"]
    for entry in entries:
        if not isinstance(entry, dict) or types.get(entry.get("path")) is None:
            continue
        path, kind = entry["path"], entry["type"]
        problem = next((f"is under {shown(parent)}, a {ENTRY_TYPES[types[parent]]}"
                        for parent in _ancestors(path)
                        if parent in types and types[parent] != "d"), None)
        if problem is None and kind == "f":
            problem = _file_problem(entry, valid_blobs)
        elif problem is None and kind == "l":
            problem = _symlink_problem(entry, roots, allow_external_symlinks)
        elif problem is None and kind == "h":
            target = entry.get("target")
            if not isinstance(target, str) or types.get(target) != "f":
                problem = "is a hard link to something that is not a file of this snapshot"
        if problem:
            refused.append(f"{shown(path)}: {problem}")
    if refused:
        return Plan([], {}, {}, refused)
    return Plan(sorted(entries, key=lambda e: e["path"]), blobs, packs)


def _path_problem(path) -> str | None:
    if not isinstance(path, str) or not path:
        return "has an empty path"
    if path.startswith("/"):
        return "is an absolute path"
    if "\0" in path:
        return "has a NUL byte in its path"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "has '.', '..' or an empty component in its path"
    if any(len(os.fsencode(part)) > 255 for part in parts):
        return "has a component longer than 255 bytes"
    return None


def _file_problem(entry: dict, blobs: dict) -> str | None:
    chunks = entry.get("blobs")
    size = entry.get("size")
    if not isinstance(chunks, list) or not isinstance(size, int) or size < 0:
        return "is a file without size or content list"
    total = 0
    for blob_id in chunks:
        where = blobs.get(blob_id) if isinstance(blob_id, str) else None
        if where is None:
            return "names content that is not in the index"
        total += where[2]
    if total != size:
        return f"has {total} bytes of content for a size of {size}"
    return None


def _symlink_problem(entry: dict, roots: list[str], allowed: bool) -> str | None:
    target = entry.get("target")
    if not isinstance(target, str) or not target or "\0" in target:
        return "is a symlink without a valid target"
    if allowed:
        return None
    if target.startswith("/"):
        return (f"is a symlink to the absolute path {shown(target)}, outside the restored "
                "tree (allow_external_symlinks restores it anyway)")
    root = next(root for root in roots if _under(entry["path"], root))
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(entry["path"]), target))
    if resolved.startswith("../") or resolved == ".." or not _under(resolved, root):
        return (f"is a symlink to {shown(target)}, which leaves {shown('/' + root)} "
                "(allow_external_symlinks restores it anyway)")
    return None


# -- restoring -------------------------------------------------------------------------------


@dataclass
class RestoreResult:
    backup_id: str
    label: str | None
    targets: list[str] = field(default_factory=list)
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0
    previous: list[str] = field(default_factory=list)  # where the replaced files were kept
    safety_backup: str | None = None
    damaged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    changed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Unit:
    """One swap: snapshot entries under ``prefix`` become ``destination``."""

    prefix: str
    destination: str
    entries: list[dict] = field(default_factory=list)
    staging: str = ""


def _pairs(units: list[_Unit]) -> list[tuple[_Unit, str]]:
    return [(unit, unit.staging) for unit in units if unit.staging]


def _selection(plan: Plan, roots: list[str], paths: Iterable[str] | None) -> list[str]:
    """The snapshot paths to restore: the roots, or the chosen paths (checked against the index)."""
    if not paths:
        return list(roots)
    chosen = []
    present = {entry["path"] for entry in plan.entries}
    for path in paths:
        relative = snapshot_path(path if path.startswith("/") else "/" + path)
        if relative not in present:
            raise SelectorError(f"{shown('/' + relative)} is not in this snapshot "
                                f"(its roots: {', '.join('/' + root for root in roots)})")
        chosen.append(relative)
    chosen = sorted(set(chosen))
    return [path for path in chosen if not any(other != path and _under(path, other)
                                               for other in chosen)]


def _units(plan: Plan, selection: list[str], target: str | None) -> list[_Unit]:
    if target is None:
        units = [_Unit(prefix, "/" + prefix) for prefix in selection]
    else:
        target = os.path.abspath(target)
        units = [_Unit("", target)]
    for entry in plan.entries:
        if not any(_under(entry["path"], prefix) for prefix in selection):
            continue
        for unit in units:
            if _under(entry["path"], unit.prefix):
                unit.entries.append(entry)
    return units


def restore_snapshot(vault, selector: str = "latest", **options) -> RestoreResult:
    """Restore a snapshot (see _restore_snapshot for the options), reported to the
    vault's monitor as a restore run: metrics, and an alert when it fails."""
    if options.get("check_mode"):
        return _restore_snapshot(vault, selector, **options)
    with vault.monitor.run("restore", options.get("kind", "files")) as run:
        result = _restore_snapshot(vault, selector, **options)
        run.bytes = result.bytes
        run.warnings += result.warnings
        return result


def _restore_snapshot(vault, selector: str = "latest", *, kind: str = "files",
                      label: str | None = None, paths: Iterable[str] | None = None,
                      target: str | None = None, safety_backup: bool = True,
                      keep_previous: bool = True, allow_external_symlinks: bool = False,
                      skip_damaged: bool = False, state_dir: str | None = None,
                      check_mode: bool = False, restore_owners: bool | None = None,
                      after_staging: Callable[[dict[str, str]], None] | None = None,
                      ref: BackupRef | None = None, index_name: str = INDEX_NAME
                      ) -> RestoreResult:
    """Restore a snapshot, or chosen paths of it, to where it was or under ``target``.

    Following the guide: the current files are first backed up (a safety
    snapshot, ``safety_backup``), the snapshot is written and verified in a
    staging directory next to each destination, then swapped in by rename; the
    replaced files stay beside it (``<path>.pre-restore-<time>``) unless
    ``keep_previous`` is false. A failure before the swap leaves everything as
    it was. ``after_staging({path: staged file})`` may check the staged files
    (configuration syntax) and raise to stop before the swap.
    """
    ref = ref or select_snapshot(vault, selector, kind, label)
    manifest = vault.manifest(ref)
    index = load_index(vault, ref, index_name)
    plan = check_index(index, allow_external_symlinks=allow_external_symlinks)
    if plan.refused:
        vault.audit.record("restore", backup_id=ref.id, result="refused",
                           refused=len(plan.refused))
        raise IntegrityError(
            f"snapshot {ref.id} is refused: nothing was written. {len(plan.refused)} "
            f"problem(s): " + "; ".join(plan.refused[:10])
            + (" ..." if len(plan.refused) > 10 else ""))
    roots = index["roots"]
    selection = _selection(plan, roots, paths)
    units = _units(plan, selection, target)
    label = manifest.get("meta", {}).get("label")
    result = RestoreResult(ref.id, label, [unit.destination for unit in units])
    for unit in units:
        _count(result, unit.entries)
    if check_mode:
        return result
    if restore_owners is None:
        restore_owners = os.geteuid() == 0
    # A restore can outlive its caller (disaster_recovery.yml runs the uploads
    # restore as a background job): a second one must not race it.
    with held_lock(os.path.abspath(state_dir or default_state_dir()), f"{kind}-restore.lock",
                   f"another {kind} restore is running on this host"):
        for unit in units:
            _check_space(unit)
        existing = [unit.destination for unit in units if os.path.lexists(unit.destination)]
        if safety_backup and existing:
            safety = take_snapshot(vault, existing, label=f"{label or 'files'}-safety"[:64],
                                   kind=kind, state_dir=state_dir,
                                   meta={"purpose": "safety backup before restore",
                                         "restoring": ref.id})
            result.safety_backup = safety.backup_id
            result.warnings += [f"safety backup: {warning}" for warning in safety.warnings]
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        stagings = []
        writeback = None
        try:
            for unit in units:
                unit.staging = _stage(unit)
                stagings.append(unit.staging)
            writeback = TreeWriteback(stagings)
            _fill(vault, kind, plan, units, stagings, result, skip_damaged, writeback.wrote)
            for unit, staging in _pairs(units):
                _finish_metadata(unit, staging, restore_owners, result)
                _check_staged(unit, staging, result)
                if after_staging is not None:
                    after_staging({"/" + entry["path"]: _local(unit, staging, entry["path"])
                                   for entry in unit.entries if entry["type"] == "f"})
            # On disk before it replaces anything: a crash after the swap must
            # not leave empty restored files where the previous ones were.
            try:
                writeback.finish()
            except OSError as error:
                raise StorageError(f"the restored files could not be written to disk "
                                   f"({error.strerror}); nothing was replaced") from error
            for unit, staging in _pairs(units):
                kept = _swap(staging, unit.destination, stamp, keep_previous)
                if kept:
                    result.previous.append(kept)
        except BaseException as error:
            if writeback is not None:
                writeback.abandon()
            for staging in stagings:
                shutil.rmtree(staging, ignore_errors=True)
            vault.audit.record("restore", backup_id=ref.id, result="failed",
                               targets=result.targets, error=str(error) or type(error).__name__)
            raise
        vault.audit.record("restore", backup_id=ref.id, result="ok", targets=result.targets,
                           files=result.files, bytes=result.bytes,
                           safety_backup=result.safety_backup, damaged=len(result.damaged) or None)
    return result


def _count(result: RestoreResult, entries: list[dict]) -> None:
    for entry in entries:
        kind = entry["type"]
        if kind == "f":
            result.files += 1
            result.bytes += entry["size"]
        elif kind == "d":
            result.directories += 1
        elif kind == "l":
            result.symlinks += 1
        else:
            result.hardlinks += 1


def _check_space(unit: _Unit) -> None:
    parent = os.path.dirname(unit.destination.rstrip("/")) or "/"
    probe = parent
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    needed = sum(entry.get("size", 0) for entry in unit.entries if entry["type"] == "f")
    stats = os.statvfs(probe)
    free = stats.f_bavail * stats.f_frsize
    if needed > free:
        raise BackupError(f"restoring to {shown(unit.destination)} needs {needed} bytes in "
                          f"{shown(parent)}, which has {free} free: make room or restore "
                          "under another directory (target)")


def _stage(unit: _Unit) -> str:
    destination = unit.destination.rstrip("/")
    parent = os.path.dirname(destination)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)[:100]}{STAGING_MARK}",
                               dir=parent)
    root = os.path.join(staging, "root")
    top = next((entry for entry in unit.entries if entry["path"] == unit.prefix), None)
    if top is None or top["type"] == "d":
        os.mkdir(root, 0o700)
        if top is None:
            os.chmod(root, 0o755)
        if top is None and os.path.isdir(destination) and not os.path.islink(destination):
            current = os.stat(destination)
            os.chmod(root, stat.S_IMODE(current.st_mode))
            with contextlib.suppress(PermissionError):
                os.chown(root, current.st_uid, current.st_gid)
    return staging


def _local(unit: _Unit, staging: str, path: str) -> str:
    """Where a snapshot path goes in the staging directory."""
    relative = path[len(unit.prefix):].lstrip("/") if unit.prefix else path
    return os.path.join(staging, "root", relative) if relative else os.path.join(staging, "root")


def _fill(vault, kind, plan: Plan, units, stagings, result: RestoreResult,
          skip_damaged: bool, wrote: Callable[[int], None]) -> None:
    """Create directories and files, write every blob from its pack, then links;
    ``wrote(count)`` hears of every blob's bytes written."""
    targets: dict[str, list[tuple[str, int, bool]]] = {}  # blob -> (file, offset, sparse)
    files: dict[str, dict] = {}
    make_parents = _Parents().make
    for unit, staging in _pairs(units):
        for entry in unit.entries:
            local = _local(unit, staging, entry["path"])
            if entry["type"] == "d":
                if local != os.path.join(staging, "root"):
                    make_parents(staging, local)
                    os.mkdir(local, 0o700)
            elif entry["type"] == "f":
                make_parents(staging, local)
                fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                try:
                    os.ftruncate(fd, entry["size"])
                finally:
                    os.close(fd)
                files[local] = entry
                offset = 0
                for blob_id in entry["blobs"]:
                    targets.setdefault(blob_id, []).append(
                        (local, offset, bool(entry.get("sparse"))))
                    offset += plan.blobs[blob_id][2]
    damaged_blobs = _write_blobs(vault, kind, plan, targets, result, wrote)
    if damaged_blobs:
        hit = sorted(local for local, entry in files.items()
                     if any(blob in damaged_blobs for blob in entry["blobs"]))
        names = [shown("/" + files[local]["path"]) for local in hit]
        if not skip_damaged:
            raise IntegrityError(
                f"{len(names)} file(s) cannot be restored from any copy, nothing was replaced: "
                + ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
                + "; restore the other paths, or set skip_damaged to restore without them")
        for local in hit:
            os.unlink(local)
            del files[local]
        result.damaged = names
        result.warnings.append(f"{len(names)} damaged file(s) were left out: "
                               + ", ".join(names[:20]))
    for unit, staging in _pairs(units):
        for entry in unit.entries:
            local = _local(unit, staging, entry["path"])
            if entry["type"] == "h":
                source = _local(unit, staging, entry["target"]) if _under(
                    entry["target"], unit.prefix) else None
                if source is None or source not in files:
                    result.warnings.append(f"hard link {shown('/' + entry['path'])} was left "
                                           "out: its file is not restored")
                    continue
                make_parents(staging, local)
                os.link(source, local, follow_symlinks=False)
    for unit, staging in _pairs(units):  # symlinks last: nothing is written through one
        for entry in unit.entries:
            if entry["type"] == "l":
                local = _local(unit, staging, entry["path"])
                make_parents(staging, local)
                os.symlink(entry["target"], local)


class _Parents:
    """Makes and checks the parent directories of what a restore writes.

    Directories the index does not list (ancestors of a root) are plain ones.
    A checked parent stays inside the staging directory (only this restore
    writes there, and symlinks come last), so each is resolved once, not once
    per file: resolving every file's path was most of a large restore's time.
    """

    def __init__(self):
        self._checked: set[str] = set()
        self._real_staging: dict[str, str] = {}

    def make(self, staging: str, local: str) -> None:
        parent = os.path.dirname(local)
        if parent in self._checked:
            return
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o755, exist_ok=True)
        if staging not in self._real_staging:
            self._real_staging[staging] = os.path.realpath(staging) + "/"
        if not (os.path.realpath(parent) + "/").startswith(self._real_staging[staging]):
            raise IntegrityError(f"{shown(local)} would be written outside the staging directory")
        self._checked.add(parent)


def _write_blobs(vault, kind, plan: Plan, targets: dict, result: RestoreResult,
                 wrote: Callable[[int], None]) -> set[str]:
    """Stream each needed pack once and write its blobs where they belong."""
    by_pack: dict[str, list[tuple[int, int, str]]] = {}
    for blob_id in targets:
        pack, offset, length = plan.blobs[blob_id]
        by_pack.setdefault(pack, []).append((offset, length, blob_id))
    zero = bytes(ZERO_BLOCK)

    def restore_pack(pack: str) -> tuple[list, list[str]]:
        # Each copy in turn; a blob is written once, from the first copy that yields it
        # whole (its SHA-256 is its name), so a copy failing half-way costs nothing.
        missing, problems = sorted(by_pack[pack]), []
        for repository in vault.repositories:
            if not missing:
                break
            failed, error = _blobs_from_copy(vault, repository, kind, pack, missing, targets,
                                             zero, wrote)
            if error is not None:
                problems.append(f"pack {pack} in {repository.name}: {error}")
                vault.audit.record("read", repository=repository.name, object=pack,
                                   result="failed", error=error)
            missing = failed
        return missing, problems

    # Packs are independent and files are written at offsets: two at a time keep both
    # cores busy (decryption, zstd, hashing and writes release the GIL).
    damaged: set[str] = set()
    with ThreadPoolExecutor(max_workers=RESTORE_WORKERS, thread_name_prefix="restore") as pool:
        for missing, problems in pool.map(restore_pack, sorted(by_pack)):
            damaged.update(blob_id for _offset, _length, blob_id in missing)
            result.warnings += problems
    return damaged


def _blobs_from_copy(vault, repository, kind, pack, wanted, targets, zero, wrote):
    """Write what one copy of a pack yields; returns the blobs still missing and the error."""
    failed = []
    position = 0
    try:
        with vault.open_shared_copy(repository, kind, pack) as plain:
            for number, (offset, length, blob_id) in enumerate(wanted):
                if offset < position:
                    raise IntegrityError(f"pack {pack} has overlapping blobs")
                try:
                    _skip_bytes(plain, offset - position)
                    data = _read_stream(plain, length)
                except KeyUnavailable:
                    raise
                except BackupError as error:
                    return failed + wanted[number:], str(error)
                position = offset + length
                if len(data) != length or hashlib.sha256(data).hexdigest() != blob_id:
                    failed.append((offset, length, blob_id))
                    continue
                for local, file_offset, sparse in targets[blob_id]:
                    _write_at(local, file_offset, data, sparse, zero)
                    wrote(length)
    except KeyUnavailable:
        raise
    except BackupError as error:
        return wanted, str(error)
    return failed, (f"{len(failed)} blob(s) do not match their checksum" if failed else None)


def _skip_bytes(plain, count: int) -> None:
    while count > 0:
        chunk = plain.read(min(count, 4 * MIB))
        if not chunk:
            raise IntegrityError("a pack is shorter than its index says")
        count -= len(chunk)


def _read_stream(plain, size: int) -> bytes:
    parts, missing = [], size
    while missing > 0:
        chunk = plain.read(missing)
        if not chunk:
            break
        parts.append(chunk)
        missing -= len(chunk)
    return b"".join(parts)


def _write_at(local: str, offset: int, data: bytes, sparse: bool, zero: bytes) -> None:
    fd = os.open(local, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        if not sparse:
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
            return
        for start in range(0, len(data), ZERO_BLOCK):  # holes stay holes
            block = data[start:start + ZERO_BLOCK]
            if block != zero[:len(block)]:
                os.pwrite(fd, block, offset + start)
    finally:
        os.close(fd)


def _finish_metadata(unit: _Unit, staging: str, owners: bool, result: RestoreResult) -> None:
    """Owners, modes and times; directories last and deepest first (their times change
    while they are filled, and a read-only directory could not be filled)."""
    failed_owner = 0
    directories = []
    for entry in unit.entries:
        local = _local(unit, staging, entry["path"])
        if not os.path.lexists(local):
            continue  # left out (damaged)
        if entry["type"] == "d":
            directories.append((local, entry))
            continue
        if entry["type"] == "h":
            continue  # shares its file's inode
        if owners:
            try:
                os.chown(local, entry["uid"], entry["gid"], follow_symlinks=False)
            except PermissionError:
                failed_owner += 1
        if entry["type"] == "f":
            os.chmod(local, entry["mode"])
        os.utime(local, ns=(entry["mtime_ns"], entry["mtime_ns"]), follow_symlinks=False)
    for local, entry in sorted(directories, key=lambda item: item[0].count("/"), reverse=True):
        if owners:
            try:
                os.chown(local, entry["uid"], entry["gid"], follow_symlinks=False)
            except PermissionError:
                failed_owner += 1
        os.chmod(local, entry["mode"])
        os.utime(local, ns=(entry["mtime_ns"], entry["mtime_ns"]), follow_symlinks=False)
    if failed_owner or not owners:
        result.warnings.append("owners and groups were not restored (run as root to restore "
                               "them)" if not owners else
                               f"{failed_owner} owner(s) could not be set (permission denied)")


def _check_staged(unit: _Unit, staging: str, result: RestoreResult) -> None:
    """Type, size and mode of every staged entry, before anything is replaced."""
    wrong = []
    for entry in unit.entries:
        local = _local(unit, staging, entry["path"])
        try:
            info = os.lstat(local)
        except FileNotFoundError:
            if shown("/" + entry["path"]) not in result.damaged and entry["type"] != "h":
                wrong.append(f"{shown('/' + entry['path'])} is missing")
            continue
        kind = entry["type"]
        ok = {"d": stat.S_ISDIR, "f": stat.S_ISREG, "h": stat.S_ISREG,
              "l": stat.S_ISLNK}[kind](info.st_mode)
        if ok and kind == "f":
            ok = info.st_size == entry["size"] and stat.S_IMODE(info.st_mode) == entry["mode"]
        if not ok:
            wrong.append(f"{shown('/' + entry['path'])} is not as recorded")
    if wrong:
        raise IntegrityError("the staged files do not match the snapshot, nothing was "
                             "replaced: " + "; ".join(wrong[:10]))


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first: str, second: str) -> bool:
    """Swap two paths atomically (Linux renameat2); False where that is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    outcome = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
                        _RENAME_EXCHANGE)
    if outcome == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), second)


def _swap(staging: str, destination: str, stamp: str, keep_previous: bool) -> str | None:
    """Put the staged tree in place; returns where the replaced one was kept."""
    staged = os.path.join(staging, "root")
    destination = destination.rstrip("/") or "/"
    kept = None
    if not os.path.lexists(destination):
        os.rename(staged, destination)
    else:
        aside = f"{destination}.pre-restore-{stamp}"
        if _exchange(staged, destination):
            os.rename(staged, aside)  # ``staged`` now holds what was replaced
        else:
            os.rename(destination, aside)
            try:
                os.rename(staged, destination)
            except BaseException:
                os.rename(aside, destination)
                raise
        if keep_previous:
            kept = aside
        elif os.path.isdir(aside) and not os.path.islink(aside):
            shutil.rmtree(aside)
        else:
            os.unlink(aside)
    fsync_directory(os.path.dirname(destination))  # the renames themselves, on disk
    shutil.rmtree(staging, ignore_errors=True)
    return kept


# -- verification and garbage collection --------------------------------------------------------


@dataclass
class DataCheck:
    repository: str
    packs: int
    blobs: int
    damaged_packs: dict[str, str] = field(default_factory=dict)
    damaged_blobs: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.damaged_packs and not self.damaged_blobs


def check_data(vault, kind: str, indexes: list[dict]) -> list[DataCheck]:
    """Decrypt every pack the indexes use, in every repository, and hash every blob."""
    needed: dict[str, dict[str, list]] = {}
    for index in indexes:
        for blob_id, (pack, offset, length) in index["blobs"].items():
            needed.setdefault(pack, {})[blob_id] = [offset, length]
    checks = []
    for repository in vault.repositories:
        check = DataCheck(repository.name, len(needed),
                          sum(len(blobs) for blobs in needed.values()))
        for pack in sorted(needed):
            wanted = sorted((offset, length, blob_id)
                            for blob_id, (offset, length) in needed[pack].items())
            done = 0
            try:
                with vault.open_shared_copy(repository, kind, pack) as plain:
                    position = 0
                    for offset, length, blob_id in wanted:
                        if offset > position:
                            _skip_bytes(plain, offset - position)
                        data = _read_stream(plain, length)
                        position = offset + max(length, 0)
                        if hashlib.sha256(data).hexdigest() != blob_id:
                            check.damaged_blobs.add(blob_id)
                        done += 1
                    while plain.read(4 * MIB):  # the rest: trailer and authentication
                        pass
            except KeyUnavailable:
                raise
            except BackupError as error:
                check.damaged_packs[pack] = str(error)
                check.damaged_blobs.update(blob for _o, _l, blob in wanted[done:])
        checks.append(check)
    return checks


def affected_files(index: dict, damaged_blobs: set[str]) -> list[str]:
    return sorted("/" + entry["path"] for entry in index["entries"]
                  if entry.get("type") == "f" and damaged_blobs & set(entry.get("blobs", ())))


def verify_snapshot(vault, ref: BackupRef, manifest: dict | None = None,
                    index_name: str = INDEX_NAME) -> list:
    """The files check of the verification registry: every blob by its SHA-256, per copy;
    a failure names the files it affects."""
    from .verification import Check

    index = load_index(vault, ref, index_name)
    checks = []
    for data in check_data(vault, ref.kind, [index]):
        if data.ok:
            checks.append(Check("file content checksums", True,
                                f"{len(index['entries'])} entries, {data.blobs} blobs in "
                                f"{data.packs} packs", data.repository))
            continue
        files = affected_files(index, data.damaged_blobs)
        packs = "; ".join(f"{pack}: {error}" for pack, error in data.damaged_packs.items())
        detail = (f"{len(files)} file(s) damaged: " + ", ".join(shown(f) for f in files[:20])
                  + (" ..." if len(files) > 20 else "") + (f" (packs: {packs})" if packs else ""))
        checks.append(Check("file content checksums", False, detail, data.repository))
    return checks


def referenced_packs(vault, kind: str) -> set[str]:
    """Every pack any complete snapshot of ``kind`` uses (reads every index: needs the key)."""
    used = set()
    for listing in vault.list(kind):
        manifest = vault.manifest(listing.ref)
        for entry in manifest.get("objects", []):
            if entry["name"] == INDEX_NAME or entry["name"].endswith("/" + INDEX_NAME):
                used.update(load_index(vault, listing.ref, entry["name"])["packs"])
    return used


def collect_garbage(vault, kind: str, *, dry_run: bool = False,
                    grace_seconds: float = PACK_GRACE_SECONDS) -> dict[str, Any]:
    """Delete packs no snapshot uses any more (after pruning), older than the grace period
    (a snapshot that is still running has not recorded its packs yet)."""
    used = referenced_packs(vault, kind)
    cutoff = time.time() - grace_seconds
    unused, young = [], 0
    for repository in vault.repositories:
        for stored in repository.storage.list(f"backups/{kind}/shared/{PACK_PREFIX}"):
            name = stored.key.split("/shared/", 1)[1]
            if name in used or not PACK_NAME.match(name):
                continue
            if stored.modified > cutoff:
                young += 1
                continue
            unused.append((repository, stored.key, stored.size))
    removed, refused = [], []
    if not dry_run:
        for repository, key, _size in unused:
            try:
                repository.storage.delete(key)
                removed.append(f"{repository.name}:{key}")
            except BackupError as error:
                refused.append(f"{repository.name}: {error}")
        vault.audit.record("delete", result="ok" if not refused else "failed", kind=kind,
                           reason="packs no snapshot uses", objects=len(removed))
    return {"kind": kind, "referenced": len(used), "unused": len(unused),
            "unused_bytes": sum(size for _r, _k, size in unused), "removed": len(removed),
            "removed_keys": removed,
            "kept_young": young, "refused": refused, "dry_run": dry_run}


def register_verifiers() -> None:
    from . import pruning, verification

    for kind in ("files",):
        verification.register(kind, verify_snapshot)
    # Every kind stored as snapshots shares packs; pruning frees those no
    # remaining snapshot uses once it has deleted backups.
    for kind in ("files", "config", "code"):
        pruning.register_collector(kind, _pack_collector(kind))


def _pack_collector(kind: str):
    def collect(vault, retained, dry_run: bool) -> list[str]:
        return collect_garbage(vault, kind, dry_run=dry_run)["removed_keys"]
    return collect


register_verifiers()
