"""Continuous WAL archiving: push, spool, fetch and the continuity check.

Each push is a backup of kind ``wal`` whose objects are named after the WAL
files they hold (``000000010000000000000003``, ``00000002.history``), so
which segments the repository holds is known from object names alone, with no
key: ``backups/wal/<backup-id>/data/<wal file name>``.

``push`` reports success only when the segment is durable: sealed in the
primary repository, or copied and fsynced into the local spool when the
primary cannot be reached (a later push, or ``drain``, uploads it). A secondary
that fails gets its own spool entry, so the offsite copy catches up without
holding PostgreSQL back.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .catalog import BackupRef
from .durability import fsync_directory
from .errors import ConfigError, StorageError
from .repository import Vault
from .wal_segments import (
    DEFAULT_SPOOL,
    PushedMarkers,
    is_segment_name,
    read_header,
    ready_segments,
)

KIND = "wal"
HISTORY = re.compile(r"^[0-9A-F]{8}\.history$")
WAL_FILE = re.compile(r"^[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?$|^[0-9A-F]{8}\.history$")
DEFAULT_SEGMENT_SIZE = 16 << 20
PUSH_WORKERS = 2


def check_wal_name(name: str) -> str:
    if not WAL_FILE.match(name):
        raise ConfigError(f"{name!r} is not a WAL file name: archive_command must pass %p, "
                          "restore_command %f")
    return name


# -- segment arithmetic --------------------------------------------------------


def segments_per_xlogid(segment_size: int) -> int:
    return 0x100000000 // segment_size


def parse_segment(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> tuple[int, int]:
    """(timeline, segment number) of a segment file name."""
    if not is_segment_name(name):
        raise ConfigError(f"{name!r} is not a WAL segment name")
    timeline, high, low = int(name[:8], 16), int(name[8:16], 16), int(name[16:], 16)
    return timeline, high * segments_per_xlogid(segment_size) + low


def segment_name(timeline: int, number: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    per = segments_per_xlogid(segment_size)
    return f"{timeline:08X}{number // per:08X}{number % per:08X}"


def lsn_segment(lsn: str, timeline: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """The segment that holds an LSN such as ``0/3000028``."""
    high, low = (int(part, 16) for part in lsn.split("/"))
    return segment_name(timeline, ((high << 32) | low) // segment_size, segment_size)


# -- pushing ---------------------------------------------------------------------


@dataclass
class PushResult:
    name: str
    stored_in: list[str]  # repository names that hold it now
    spooled_for: list[str]  # repository names it waits in the spool for
    backup_id: str | None
    drained: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    batched: list[str] = field(default_factory=list)  # ready segments stored with it


class WalArchive:
    """The WAL archive in a vault, with the local spool that keeps pushes durable."""

    def __init__(self, vault: Vault, spool_dir: str | None = None):
        self.vault = vault
        self.spool_dir = spool_dir or DEFAULT_SPOOL

    @classmethod
    def from_settings(cls, vault: Vault, settings: dict[str, Any],
                      spool_dir: str | None = None) -> WalArchive:
        wal = settings.get("wal") or {}
        return cls(vault, spool_dir or wal.get("spool_dir"))

    # spool layout: <spool>/<repository name>/<wal file name>, each complete and fsynced

    def _spool_path(self, repository: str, name: str = "") -> str:
        return os.path.join(self.spool_dir, repository, name)

    def spooled(self) -> dict[str, list[str]]:
        """WAL files waiting in the spool, per repository, oldest name first."""
        waiting: dict[str, list[str]] = {}
        for repository in self.vault.repositories:
            directory = self._spool_path(repository.name)
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                names = sorted(name for name in os.listdir(directory) if WAL_FILE.match(name))
                if names:
                    waiting[repository.name] = names
        return waiting

    def push(self, path: str, batch: int = 1) -> PushResult:
        """Archive one WAL file (archive_command's %p); durable when this returns.

        With ``batch`` above 1, up to ``batch - 1`` further segments that the
        archiver has marked ready are stored in the same backup, and marked in
        the spool so that their own archive_command calls return at once.
        """
        name = check_wal_name(os.path.basename(path))
        if not os.path.isfile(path):
            raise ConfigError(f"WAL file {path} does not exist: archive_command gets %p, "
                              "relative to the data directory")
        markers = PushedMarkers(self.spool_dir)
        markers.forget([name])  # pushed here in full: an older marker is void
        drained, warnings = self._drain(set())
        files = [(name, path)]
        if batch > 1 and is_segment_name(name):
            directory = os.path.dirname(path)
            files += [(ready, os.path.join(directory, ready))
                      for ready in ready_segments(path, batch - 1)]
        meta = {**self._meta(path, name), "files": [entry[0] for entry in files]}
        stored, spooled, backup_id = [], [], None
        try:
            backup_id, lost = self._store(self.vault, files, meta)
            stored = [r.name for r in self.vault.repositories if r.name not in lost]
            for repository, error in lost.items():
                for file, file_path in files:
                    self._spool(repository, file, file_path)
                spooled.append(repository)
                warnings.append(f"{name}: the {repository} copy failed ({error}); "
                                "spooled, a later push uploads it")
            for _file, file_path in files[1:]:
                markers.record(file_path, backup_id)
        except StorageError as error:
            # a replicated copy is filled by the storage's replication, never by us
            for repository in self.vault.repositories:
                if getattr(repository, "replicated", False):
                    continue
                self._spool(repository.name, name, path)
                spooled.append(repository.name)
            warnings.append(f"{name}: the primary repository failed ({error}); spooled in "
                            f"{self.spool_dir}, a later push uploads it")
        batched = [entry[0] for entry in files[1:]] if backup_id else []
        self.vault.audit.record("wal_push", result="ok" if not spooled else "spooled",
                                backup_id=backup_id, wal=name, spooled=spooled or None,
                                batched=batched or None)
        return PushResult(name, stored, spooled, backup_id, drained, warnings, batched)

    def _meta(self, path: str, name: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"files": [name]}
        if is_segment_name(name):
            header = read_header(path)
            if header is not None:
                meta.update(system_identifier=str(header.system_identifier),
                            segment_size=header.segment_size, timeline=header.timeline)
        return meta

    def _store(self, vault: Vault, files: list[tuple[str, str]], meta: dict[str, Any]):
        """Seal files as one wal backup; returns its id and the secondaries that failed."""
        def add(entry: tuple[str, str]) -> None:
            name, path = entry
            with open(path, "rb", buffering=0) as handle:  # spliced into zstd
                backup.add_stream(name, handle)

        # Two segments at a time: a 16 MiB segment leaves the cores idle while
        # its zstd starts and finishes and its file is fsynced.
        with vault.new_backup(KIND, meta) as backup, \
                ThreadPoolExecutor(max_workers=PUSH_WORKERS) as pool:
            list(pool.map(add, files))  # waits for every segment; raises the first failure
        lost = {}
        for warning in backup.warnings:
            for repository in vault.repositories:
                if warning.startswith(f"the {repository.name} copy"):
                    lost[repository.name] = warning
        return backup.id, lost

    def _spool(self, repository: str, name: str, path: str) -> None:
        """Copy into the spool with fsync of file and directory, or fail loudly."""
        directory = self._spool_path(repository)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
            with os.fdopen(fd, "wb") as out, open(path, "rb") as source:
                shutil.copyfileobj(source, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, os.path.join(directory, name))
            fsync_directory(directory)
        except OSError as error:
            raise StorageError(
                f"{name} could not be stored anywhere: the repository failed and the spool "
                f"{directory} is not writable ({error}); PostgreSQL keeps the segment and "
                "retries, but pg_wal grows until the repository or the spool is fixed"
            ) from None

    def drain(self) -> tuple[list[str], list[str]]:
        """Upload everything in the spool; returns (uploaded, warnings)."""
        return self._drain(set())

    def _drain(self, _seen: set[str]) -> tuple[list[str], list[str]]:
        uploaded, warnings = [], []
        for repository_name, names in self.spooled().items():
            repository = next(r for r in self.vault.repositories if r.name == repository_name)
            target = Vault([repository], self.vault.keys, self.vault.audit,
                           self.vault.compression)
            directory = self._spool_path(repository_name)
            for name in names:
                path = os.path.join(directory, name)
                try:
                    self._store(target, [(name, path)], self._meta(path, name))
                except StorageError as error:
                    warnings.append(f"{len(names)} spooled WAL file(s) still wait for "
                                    f"{repository_name}: {error}")
                    break
                os.unlink(path)
                uploaded.append(f"{repository_name}:{name}")
        return uploaded, warnings

    # -- the index: which backup holds which WAL file -----------------------------

    def index(self, cache: str | None = None, refresh: bool = False) -> dict[str, str]:
        """WAL file name -> the newest wal backup id holding it, from object names.

        With ``cache`` (a file), the listing is kept between calls: a restore
        runs restore_command once per segment, and listing the whole archive
        each time would cost more than fetching.
        """
        if cache and not refresh:
            with contextlib.suppress(OSError, ValueError), open(cache, encoding="utf-8") as f:
                return json.load(f)
        found: dict[str, str] = {}
        failures = []
        for repository in self.vault.repositories:
            try:
                for stored in repository.storage.list("backups/wal"):
                    parts = stored.key.split("/")
                    if len(parts) == 5 and parts[3] == "data" and BackupRef.parse(parts[2]):
                        found[parts[4]] = max(found.get(parts[4], ""), parts[2])
            except StorageError as error:
                failures.append(str(error))
        if failures and len(failures) == len(self.vault.repositories):
            raise StorageError("no repository can be listed: " + "; ".join(failures))
        complete = {item.id for item in self.vault.list(KIND)}
        found = {name: backup_id for name, backup_id in found.items() if backup_id in complete}
        if cache:
            temp = f"{cache}.{os.getpid()}"
            with open(temp, "w", encoding="utf-8") as handle:
                json.dump(found, handle)
            os.replace(temp, cache)
        return found

    def fetch(self, name: str, destination: str, cache: str | None = None,
              index: dict[str, str] | None = None) -> str | None:
        """Write an archived WAL file to ``destination`` (restore_command's %f %p).

        Returns where it came from, or None when the archive does not hold it
        (normal at the end of recovery: PostgreSQL then stops asking).
        """
        check_wal_name(name)
        for repository in self.vault.repositories:
            spooled = self._spool_path(repository.name, name)
            if os.path.exists(spooled):
                _copy_atomically(open(spooled, "rb"), destination)  # noqa: SIM115
                return f"spool ({repository.name})"
        if index is None:
            index = self.index(cache)
        if name not in index and cache:
            index = self.index(cache, refresh=True)
        if name not in index:
            return None
        ref = BackupRef.parse(index[name])
        plain = self.vault.open_object(ref, name)
        _copy_atomically(plain, destination)
        return ref.id

    # -- continuity -----------------------------------------------------------------

    def available(self, index: dict[str, str] | None = None) -> set[str]:
        """Every WAL file name a fetch can deliver: archived or waiting in the spool."""
        names = set(self.index() if index is None else index)
        names.update(name for waiting in self.spooled().values() for name in waiting)
        return names

    def check_continuity(self, start: str | None = None,
                         segment_size: int = DEFAULT_SEGMENT_SIZE) -> ContinuityReport:
        """Gaps in the archive from ``start`` (the oldest base backup's first segment)
        to the newest archived segment, following timeline switches."""
        return continuity(self.available(), start, segment_size, self.history)

    def history(self, timeline: int) -> str | None:
        """The text of a timeline's .history file from the archive, if it is there."""
        name = f"{timeline:08X}.history"
        index = self.index()
        if name not in index:
            return None
        with self.vault.open_object(BackupRef.parse(index[name]), name) as plain:
            return plain.read().decode()


def _copy_atomically(source, destination: str) -> None:
    directory = os.path.dirname(os.path.abspath(destination))
    fd, temp = tempfile.mkstemp(prefix=".cosmic-wal-", dir=directory)
    try:
        with source, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        os.replace(temp, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


@dataclass
class ContinuityReport:
    start: str | None
    end: str | None
    segments: int
    gaps: list[tuple[str, str]]  # first and last missing segment of each gap
    timelines: list[int]

    @property
    def ok(self) -> bool:
        return not self.gaps and self.end is not None

    def describe(self) -> str:
        if self.end is None:
            return "the archive holds no WAL segment yet: is archive_command set?"
        if not self.gaps:
            return (f"continuous from {self.start} to {self.end} "
                    f"({self.segments} segments, timelines {self.timelines})")
        shown = ", ".join(first if first == last else f"{first}..{last}"
                          for first, last in self.gaps[:5])
        return (f"{len(self.gaps)} gap(s) between {self.start} and {self.end}: {shown}; "
                "point-in-time recovery cannot cross a gap: take a new base backup")


def parse_history(text: str) -> list[tuple[int, int]]:
    """(parent timeline, switch LSN as an integer) per line of a .history file."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit():
            high, low = (int(part, 16) for part in fields[1].split("/"))
            entries.append((int(fields[0]), (high << 32) | low))
    return entries


def continuity(names: Iterable[str], start: str | None, segment_size: int,
               history=None) -> ContinuityReport:
    """The gaps in a set of archived WAL file names (pure: ``history`` reads .history)."""
    by_timeline: dict[int, set[int]] = {}
    for name in names:
        if is_segment_name(name):
            timeline, number = parse_segment(name, segment_size)
            by_timeline.setdefault(timeline, set()).add(number)
    if not by_timeline:
        return ContinuityReport(start, None, 0, [], [])
    newest_timeline = max(by_timeline)
    # The path of timelines that leads to the newest one, with the segment at
    # which each one was left (from the newest timeline's history file).
    switches: dict[int, int] = {}
    if newest_timeline > 1 and history is not None:
        text = history(newest_timeline)
        if text:
            for parent, lsn in parse_history(text):
                switches[parent] = lsn // segment_size
    path = sorted(set(switches) | {newest_timeline})
    if start is not None:
        first_timeline, first = parse_segment(start, segment_size)
        path = [timeline for timeline in path if timeline >= first_timeline]
    else:
        first_timeline = path[0]
        first = min(by_timeline.get(first_timeline, {0}))
    gaps: list[tuple[str, str]] = []
    count, position = 0, first
    for timeline in path:
        # Recovery reads segment N from the newest timeline that began at or before
        # it: so each timeline is needed from where the previous one was left up
        # to the segment where the next one begins.
        have = by_timeline.get(timeline, set())
        stop = switches.get(timeline, max(have | {position - 1}) + 1)
        missing_from = None
        for number in range(position, stop):
            if number in have:
                count += 1
                if missing_from is not None:
                    gaps.append((segment_name(timeline, missing_from, segment_size),
                                 segment_name(timeline, number - 1, segment_size)))
                    missing_from = None
            elif missing_from is None:
                missing_from = number
        if missing_from is not None:
            gaps.append((segment_name(timeline, missing_from, segment_size),
                         segment_name(timeline, stop - 1, segment_size)))
        position = max(position, stop)
    return ContinuityReport(segment_name(path[0], first, segment_size),
                            segment_name(path[-1], position - 1, segment_size),
                            count, gaps, path)
