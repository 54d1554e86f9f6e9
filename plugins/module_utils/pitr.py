"""Physical base backups and point-in-time recovery.

A base backup is ``pg_basebackup`` as one tar stream (``--pgdata=-``) sealed
into the vault; the WAL it needs comes from the archive (``wal.py``). Its
manifest records where its WAL starts (``start_wal_segment``, which pruning
reads to keep the WAL that retained base backups need) and when it became
consistent, so a restore can pick the newest base backup before a target.

A point-in-time restore never touches the current data directory until it
has succeeded: it builds a new one beside it from the base backup, stages the
archived WAL for it (the server's ``restore_command`` only moves staged
plaintext files: no key ever reaches the database server's user), replays to
the target on a private socket, waits until the server has left recovery, and
only then swaps directories. The old one is kept as
``<data_directory>.pre_restore_<time>``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .catalog import BackupRef
from .commands import display, feed, tool_output
from .durability import fsync_directory
from .errors import BackupError, ConfigError, ExternalCommandError, SelectorError
from .monitoring import monitored
from .pg_tools import PG_BASEBACKUP, Connection, Session, client_bindir, tool_version
from .postgres_cluster import postmaster_pid
from .wal import (
    DEFAULT_SEGMENT_SIZE,
    HISTORY,
    WalArchive,
    continuity,
    lsn_segment,
    parse_segment,
)
from .wal_segments import is_segment_name

KIND = "database"
BASE_OBJECT = "base.tar"
SERVER_SQL = """
select json_build_object(
  'server_version', current_setting('server_version'),
  'server_version_num', current_setting('server_version_num')::int,
  'system_identifier', (select system_identifier::text from pg_control_system()),
  'segment_size', (select setting::bigint from pg_settings where name = 'wal_segment_size'),
  'archive_mode', current_setting('archive_mode'),
  'archive_command', current_setting('archive_command'),
  'database_size', (select sum(pg_database_size(oid))::bigint from pg_database),
  'in_recovery', pg_is_in_recovery())
"""
_START = re.compile(r"START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+)")
_TIMELINE = re.compile(r"START TIMELINE: (\d+)")
TAR_BLOCK = 512


class TarWatcher(io.RawIOBase):
    """Passes a tar stream through unchanged and keeps the files it is asked to
    watch (``backup_label`` at the start, ``backup_manifest`` at the end)."""

    def __init__(self, source, names: tuple[str, ...], limit: int = 64 << 20):
        super().__init__()
        self._source = source
        self._names = names
        self._limit = limit
        self._buffer = b""  # bytes not yet parsed
        self._skip = 0  # content bytes of the current member still to pass
        self._capture: tuple[str, int] | None = None  # (name, content size)
        self._captured = bytearray()
        self.files: dict[str, bytes] = {}

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._source.read(len(buffer))
        if not data:
            return 0
        self._parse(data)
        buffer[: len(data)] = data
        return len(data)

    def _parse(self, data: bytes) -> None:
        self._buffer += data
        while True:
            if self._skip:
                take = min(self._skip, len(self._buffer))
                if self._capture is not None:
                    self._captured += self._buffer[:take]
                self._buffer = self._buffer[take:]
                self._skip -= take
                if self._skip:
                    return
                if self._capture is not None:
                    name, size = self._capture
                    self.files[name] = bytes(self._captured[:size])
                    self._capture, self._captured = None, bytearray()
            if len(self._buffer) < TAR_BLOCK:
                return
            header, self._buffer = self._buffer[:TAR_BLOCK], self._buffer[TAR_BLOCK:]
            if header == bytes(TAR_BLOCK):
                continue
            name = header[:100].split(b"\0", 1)[0].decode(errors="replace")
            size_field = header[124:136].split(b"\0", 1)[0].strip() or b"0"
            size = int(size_field, 8) if not size_field[0] & 0x80 else int.from_bytes(
                header[125:136], "big")
            padded = (size + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK
            self._skip = padded
            if name in self._names and size <= self._limit:
                self._capture = (name, size)


@dataclass
class BaseBackupResult:
    backup_id: str
    size: int
    stored_size: int
    duration: float
    commands: list[str]
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def base_backup(vault, connection: Connection, *, bindir: str | None = None,
                label: str | None = None) -> BaseBackupResult:
    """A physical base backup of the whole cluster, for point-in-time recovery."""
    bindir = bindir or client_bindir()
    started = time.monotonic()
    warnings: list[str] = []
    with Session(connection, bindir) as session:
        server = session.json(SERVER_SQL)
    archiving = server["archive_mode"] in ("on", "always") and server["archive_command"] not in (
        "", "(disabled)")
    if not archiving:
        warnings.append("WAL archiving is off on this server: the base backup carries its own "
                        "WAL and restores only to its end, not to a point in time; apply the "
                        "postgresql_archiving role")
    wal_method = "none" if archiving else "fetch"
    argv = PG_BASEBACKUP.argv(bindir, dbname=connection.conninfo(), pgdata="-", format="tar",
                              wal_method=wal_method, checkpoint="fast", verbose=True,
                              label=label or "cosmic-backup")
    meta = {"type": "base", "connection": connection.describe(), "wal_method": wal_method,
            "pg_basebackup": tool_version(bindir, "pg_basebackup"), "label": label, **server}
    meta.pop("archive_command")
    with vault.new_backup(KIND, meta) as backup:
        with tool_output(argv, env=connection.environment(),
                         what=f"pg_basebackup of {connection.where()}") as tar:
            # buffered: whole megabytes to parse, not the pipe's short reads
            watcher = TarWatcher(io.BufferedReader(tar), ("backup_label", "backup_manifest"))
            backup.add_stream(BASE_OBJECT, watcher)
        backup.meta.update(_wal_range(watcher.files, server))
        backup.meta["consistent_at"] = datetime.now(timezone.utc).isoformat()
        warnings += backup.warnings
    entry = backup.objects[0]
    return BaseBackupResult(backup.id, entry["size"], entry["stored_size"],
                            time.monotonic() - started, [display(argv)], warnings, backup.meta)


def _wal_range(files: dict[str, bytes], server: dict) -> dict[str, Any]:
    """Where the backup's WAL starts and ends, from backup_label and backup_manifest."""
    label = files.get("backup_label", b"").decode(errors="replace")
    start, timeline = _START.search(label), _TIMELINE.search(label)
    try:
        ranges = json.loads(files["backup_manifest"])["WAL-Ranges"]
    except (KeyError, ValueError):
        ranges = []
    if not start or not timeline or not ranges:
        raise ExternalCommandError(
            "the base backup stream lacks backup_label or backup_manifest, so its WAL range "
            "is unknown; nothing was stored as a backup (is pg_basebackup 13 or newer?)")
    timeline_id = int(timeline.group(1))
    end_lsn = ranges[-1]["End-LSN"]
    segment_size = int(server.get("segment_size") or DEFAULT_SEGMENT_SIZE)
    return {
        "start_lsn": start.group(1), "end_lsn": end_lsn, "timeline": timeline_id,
        "start_wal_segment": lsn_segment(start.group(1), timeline_id, segment_size),
        "end_wal_segment": lsn_segment(end_lsn, int(ranges[-1]["Timeline"]), segment_size),
    }


# -- choosing a base backup ------------------------------------------------------


def select_base(vault, target_time: datetime | None,
                selector: str | None = None) -> tuple[BackupRef, dict]:
    """The newest base backup that was consistent at ``target_time`` (or the newest)."""
    refs = [item.ref for item in vault.list(KIND)]
    if selector and selector != "latest":
        from .database import select_backup

        return select_backup(vault, selector, ["base"])
    for ref in reversed(refs):
        if target_time is not None and ref.created > target_time:
            continue
        manifest = vault.manifest(ref)
        meta = manifest["meta"]
        if meta.get("type") != "base":
            continue
        consistent = datetime.fromisoformat(meta["consistent_at"])
        if target_time is None or consistent <= target_time:
            return ref, manifest
    bases = []
    for ref in refs:
        meta = vault.manifest(ref)["meta"]
        if meta.get("type") == "base":
            bases.append(meta["consistent_at"])
    if not bases:
        raise SelectorError("there is no base backup: take one with database_backup "
                            "type=base (WAL alone cannot be replayed)")
    raise SelectorError(
        f"target time {target_time.isoformat()} is before the oldest base backup "
        f"(consistent at {bases[0]}): no backup can recover that point in time")


def oldest_base_start(vault) -> str | None:
    """The first WAL segment the oldest base backup needs (None without base backups)."""
    for item in vault.list(KIND):
        meta = vault.manifest(item.ref)["meta"]
        if meta.get("type") == "base" and meta.get("start_wal_segment"):
            return meta["start_wal_segment"]
    return None


# -- point-in-time restore ---------------------------------------------------------


@dataclass
class PointInTimeResult:
    backup_id: str
    data_directory: str
    previous: str | None  # where the data directory that was there now lives
    restored_to: str  # the target, or "end of archived WAL"
    wal_files: int
    duration: float
    replay_seconds: float
    log_tail: str
    warnings: list[str] = field(default_factory=list)


def _owner_ids(owner: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(owner)
    except KeyError:
        raise ConfigError(f"user {owner!r} does not exist: set owner to the user PostgreSQL "
                          "runs as") from None
    return entry.pw_uid, entry.pw_gid


def _as_owner(argv: list[str], owner: str) -> list[str]:
    if os.geteuid() == 0 and owner != "root":
        return ["runuser", "-u", owner, "--", *argv]
    return argv


def _chown_tree(path: str, uid: int, gid: int) -> None:
    if os.geteuid() != 0:
        return
    for root, dirs, files in os.walk(path):
        os.lchown(root, uid, gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)


class WalStager:
    """Fetches the WAL a replay needs into a directory, in order, while it replays.

    The server's restore_command (``RESTORE_SCRIPT``) waits for a listed file to
    appear and copies it into pg_wal; a file that is not listed is not in the
    archive, which ends recovery there.
    """

    RESTORE_SCRIPT = (
        "grep -qxF %f {dir}/.names || exit 1; "
        "while [ ! -f {dir}/%f ]; do [ -f {dir}/.failed ] && exit 1; sleep 0.05; done; "
        "cp {dir}/%f %p"
    )  # cp, not mv: at the end of recovery the server reads the last segment again

    def __init__(self, archive: WalArchive, directory: str, names: list[str],
                 uid: int, gid: int):
        self.archive = archive
        self.directory = directory
        self.names = names
        self.uid, self.gid = uid, gid
        self.error: BaseException | None = None
        self.fetched = 0
        with open(os.path.join(directory, ".names"), "w", encoding="utf-8") as handle:
            handle.write("".join(f"{name}\n" for name in names))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-stager", daemon=True)

    def restore_command(self) -> str:
        return self.RESTORE_SCRIPT.format(dir=shlex.quote(self.directory))

    def start(self) -> WalStager:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            index = self.archive.index()
            for name in self.names:
                if self._stop.is_set():
                    return
                temp = os.path.join(self.directory, f".{name}.partial")
                if self.archive.fetch(name, temp, index=index) is None:
                    raise BackupError(f"{name} vanished from the WAL archive during the "
                                      "restore: is a prune running?")
                if os.geteuid() == 0:
                    os.chown(temp, self.uid, self.gid)
                os.replace(temp, os.path.join(self.directory, name))
                self.fetched += 1
        except BaseException as error:  # noqa: BLE001 - reported by the restore
            self.error = error
            with open(os.path.join(self.directory, ".failed"), "w", encoding="utf-8"):
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def wal_to_stage(index: dict[str, str], start: str, target_time: datetime | None,
                 segment_size: int, spooled: set[str] = frozenset()) -> list[str]:
    """The archived WAL files a replay from ``start`` to ``target_time`` reads, in order.

    Every segment from the base backup's first one, on its timeline and later
    ones; with a target, up to two segments past the first one pushed after it
    (a segment is pushed after the last commit it holds).
    """
    first_timeline, first = parse_segment(start, segment_size)
    segments = []
    for name in set(index) | set(spooled):
        if is_segment_name(name):
            timeline, number = parse_segment(name, segment_size)
            if timeline >= first_timeline and number >= first:
                segments.append((number, timeline, name))
    segments.sort()
    chosen, after = [], 0
    for _number, _timeline, name in segments:
        chosen.append(name)
        if target_time is not None and name in index:  # spooled ones are the newest
            pushed = BackupRef.parse(index[name]).created
            if pushed > target_time:
                after += 1
                if after > 2:
                    break
    histories = sorted(name for name in set(index) | set(spooled) if HISTORY.match(name))
    return histories + chosen


@monitored("restore", "database")
def restore_point_in_time(vault, data_directory: str, *, target_time: datetime | None = None,
                          selector: str | None = None, owner: str = "postgres",
                          swap: bool = True, bindir: str | None = None,
                          settings: dict[str, str] | None = None, timeout: float = 4 * 3600,
                          now: datetime | None = None) -> PointInTimeResult:
    """Rebuild ``data_directory`` as it was at ``target_time`` (or at the end of the archive).

    The new data directory is built and replayed beside the current one; the
    swap happens only after the server has left recovery, and only when the
    current server is stopped.
    """
    bindir = bindir or client_bindir()
    started = time.monotonic()
    if target_time is not None and target_time.tzinfo is None:
        raise ConfigError("target_time needs a time zone (e.g. 2026-04-06T14:30:00+00:00)")
    data_directory = os.path.abspath(data_directory.rstrip("/"))
    ref, manifest = select_base(vault, target_time, selector)
    meta = manifest["meta"]
    segment_size = int(meta.get("segment_size") or DEFAULT_SEGMENT_SIZE)
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d%H%M%S")
    restoring = f"{data_directory}.restoring_{stamp}"
    previous = f"{data_directory}.pre_restore_{stamp}"
    uid, gid = _owner_ids(owner)
    warnings: list[str] = []
    archive = WalArchive(vault)
    names: list[str] = []
    if meta.get("wal_method") == "none":
        index = archive.index()
        spooled = archive.available(index) - set(index)
        names = wal_to_stage(index, meta["start_wal_segment"], target_time, segment_size,
                             spooled)
        report = continuity(names, meta["start_wal_segment"], segment_size, archive.history)
        if report.gaps or meta["end_wal_segment"] not in names:
            raise BackupError(
                f"the WAL archive cannot bring base backup {ref.id} to a consistent state"
                if meta["end_wal_segment"] not in names else
                f"the WAL archive has a gap after base backup {ref.id}: {report.describe()}")
    work = tempfile.mkdtemp(prefix="cosmic-pitr-", dir=os.path.dirname(data_directory))
    if os.geteuid() == 0:
        os.chown(work, uid, gid)
    os.makedirs(restoring, mode=0o700)
    stager = None
    try:
        if os.geteuid() == 0:
            os.chown(restoring, uid, gid)
        with vault.open_object(ref, BASE_OBJECT, manifest) as plain:
            feed(_as_owner(["tar", "-x", "-f", "-", "-C", restoring], owner), plain,
                 where=f"extracting base backup {ref.id} into {restoring}")
        with open(os.path.join(restoring, "recovery.signal"), "w", encoding="utf-8"):
            pass
        _chown_tree(restoring, uid, gid)
        staging = os.path.join(work, "wal")
        os.makedirs(staging, mode=0o700)
        if os.geteuid() == 0:
            os.chown(staging, uid, gid)
        stager = WalStager(archive, staging, names, uid, gid).start()
        replay_started = time.monotonic()
        log_tail = _replay(restoring, work, stager, target_time, owner, bindir, settings or {},
                           timeout)
        replay_seconds = time.monotonic() - replay_started
        if stager.error is not None:
            raise stager.error
    except BaseException:
        if stager is not None:
            stager.stop()
        shutil.rmtree(restoring, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        vault.audit.record("restore", result="failed", backup_id=ref.id, kind="pitr",
                           data_directory=data_directory)
        raise
    stager.stop()
    shutil.rmtree(work, ignore_errors=True)
    _queue_history_for_archiving(restoring, uid, gid)
    moved = None
    final = restoring
    if swap:
        pid = postmaster_pid(data_directory)
        if pid:
            warnings.append(f"PostgreSQL (pid {pid}) still runs on {data_directory}: the "
                            f"restored data directory was left at {restoring}; stop the server "
                            "and move it into place")
        else:
            if os.path.exists(data_directory):
                os.rename(data_directory, previous)
                moved = previous
            os.rename(restoring, data_directory)
            final = data_directory
            fsync_directory(os.path.dirname(data_directory))
    restored_to = target_time.isoformat() if target_time else "end of archived WAL"
    vault.audit.record("restore", result="ok", backup_id=ref.id, kind="pitr",
                       data_directory=final, previous=moved, target=restored_to,
                       wal_files=stager.fetched)
    return PointInTimeResult(ref.id, final, moved, restored_to, stager.fetched,
                             time.monotonic() - started, replay_seconds, log_tail, warnings)


def _queue_history_for_archiving(data_directory: str, uid: int, gid: int) -> None:
    """Have the server archive the new timeline's history file when it starts.

    The replay ran with archiving off, so PostgreSQL did not queue the history
    file it wrote at promotion; without it in the archive, a later recovery
    could not follow the new timeline.
    """
    status = os.path.join(data_directory, "pg_wal", "archive_status")
    for name in os.listdir(os.path.join(data_directory, "pg_wal")):
        done = os.path.join(status, f"{name}.done")
        if name.endswith(".history") and not os.path.exists(done):
            ready = os.path.join(status, f"{name}.ready")
            with open(ready, "w", encoding="utf-8"):
                pass
            if os.geteuid() == 0:
                os.chown(ready, uid, gid)


def _replay(data_dir: str, work: str, stager: WalStager, target_time: datetime | None,
            owner: str, bindir: str, settings: dict[str, str], timeout: float) -> str:
    """Run the server on a private socket until it has replayed and left recovery."""
    socket_dir = os.path.join(work, "socket")
    os.makedirs(socket_dir, mode=0o700)
    uid, gid = _owner_ids(owner)
    if os.geteuid() == 0:
        os.chown(socket_dir, uid, gid)
    config = os.path.join(work, "trial.conf")
    hba = os.path.join(work, "trial_hba.conf")
    with open(config, "w", encoding="utf-8") as handle:
        # The data directory's own postgresql.conf (Debian keeps it in /etc instead).
        handle.write(f"include_if_exists '{data_dir}/postgresql.conf'\n")
    with open(hba, "w", encoding="utf-8") as handle:
        handle.write("local all all trust\n")
    for path in (config, hba):
        os.chmod(path, 0o644)
    options = {
        "config_file": config, "hba_file": hba, "port": "5432",
        "listen_addresses": "", "unix_socket_directories": socket_dir,
        "archive_mode": "off", "restore_command": stager.restore_command(),
        "recovery_target_action": "promote", **settings,
    }
    if target_time is not None:
        options["recovery_target_time"] = target_time.isoformat()
        options["recovery_target_inclusive"] = "false"
    argv = [os.path.join(bindir, "postgres"), "-D", data_dir]
    for name, value in options.items():
        argv += ["-c", f"{name}={value}"]
    log_path = os.path.join(work, "replay.log")
    with open(log_path, "wb") as log:
        server = subprocess.Popen(_as_owner(argv, owner), stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if server.poll() is not None:
                raise ExternalCommandError(
                    f"the point-in-time replay stopped (exit {server.returncode}): "
                    f"{_tail(log_path)}")
            # The base backup's pg_control already said "in production": the
            # server has promoted when recovery.signal is gone as well.
            if (not os.path.exists(os.path.join(data_dir, "recovery.signal"))
                    and _cluster_state(bindir, data_dir) == "in production"):
                break
            if time.monotonic() > deadline:
                raise ExternalCommandError(f"the replay did not finish within {timeout:.0f} s: "
                                           f"{_tail(log_path)}")
            time.sleep(0.2)
    finally:
        _stop_server(server)
    return _tail(log_path, 12)


def _stop_server(server: subprocess.Popen, timeout: float = 120) -> None:
    """Fast shutdown (SIGINT) of the server's process group, then a kill if it hangs."""
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGKILL, 30)):
        if server.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=wait)


def _cluster_state(bindir: str, data_dir: str) -> str | None:
    result = subprocess.run([os.path.join(bindir, "pg_controldata"), data_dir],
                            capture_output=True, check=False,
                            env={**os.environ, "LC_ALL": "C"})
    for line in result.stdout.decode(errors="replace").splitlines():
        if line.startswith("Database cluster state:"):
            return line.split(":", 1)[1].strip()
    return None


def _tail(path: str, lines: int = 6) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read().strip().splitlines()
    except OSError:
        return ""
    interesting = [line for line in text if any(word in line for word in (
        "FATAL", "ERROR", "recovery", "redo", "consistent", "restored", "selected", "PANIC"))]
    return " | ".join((interesting or text)[-lines:])


def plan_point_in_time(vault, data_directory: str, *, target_time: datetime | None = None,
                       selector: str | None = None) -> dict[str, Any]:
    """What restore_point_in_time would do, without doing it (for check mode)."""
    ref, manifest = select_base(vault, target_time, selector)
    meta = manifest["meta"]
    segment_size = int(meta.get("segment_size") or DEFAULT_SEGMENT_SIZE)
    archive = WalArchive(vault)
    names: list[str] = []
    gaps: list = []
    if meta.get("wal_method") == "none":
        index = archive.index()
        names = wal_to_stage(index, meta["start_wal_segment"], target_time, segment_size,
                             archive.available(index) - set(index))
        gaps = continuity(names, meta["start_wal_segment"], segment_size,
                          archive.history).gaps
    data_directory = os.path.abspath(data_directory.rstrip("/"))
    return {"backup_id": ref.id, "consistent_at": meta.get("consistent_at"),
            "wal_files": len(names), "gaps": gaps,
            "server_running": postmaster_pid(data_directory) is not None,
            "data_directory": data_directory, "exists": os.path.exists(data_directory),
            "restored_to": target_time.isoformat() if target_time else "end of archived WAL"}


def check_base_backup(vault, ref: BackupRef, manifest: dict,
                      work_dir: str | None = None) -> list:
    """pg_verifybackup over the extracted base backup (every file's checksum against
    its backup_manifest), and the archived WAL from its start to its end segment."""
    from .database import Check

    meta = manifest["meta"]
    checks = []
    if meta.get("wal_method") == "none":
        archive = WalArchive(vault)
        available = archive.available()
        needed = continuity(available, meta["start_wal_segment"],
                            int(meta.get("segment_size") or DEFAULT_SEGMENT_SIZE),
                            archive.history)
        end_ok = meta["end_wal_segment"] in available
        checks.append(Check("WAL to consistency", end_ok and not [
            gap for gap in needed.gaps if gap[0] <= meta["end_wal_segment"]],
            f"{meta['start_wal_segment']}..{meta['end_wal_segment']} archived" if end_ok
            else f"{meta['end_wal_segment']} is not in the WAL archive"))
    bindir = client_bindir()
    scratch = tempfile.mkdtemp(prefix="cosmic-verify-base-", dir=work_dir)
    try:
        target = os.path.join(scratch, "data")
        os.makedirs(target, mode=0o700)
        with vault.open_object(ref, BASE_OBJECT, manifest) as plain:
            feed(["tar", "-x", "-f", "-", "-C", target], plain, where="extracting the base backup")
        result = subprocess.run([os.path.join(bindir, "pg_verifybackup"), "--no-parse-wal",
                                 target], capture_output=True, check=False)
        output = (result.stdout + result.stderr).decode(errors="replace").strip()
        checks.append(Check("pg_verifybackup", result.returncode == 0, output[-1000:]))
    except BackupError as error:
        checks.append(Check("base backup extract", False, str(error)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return checks
