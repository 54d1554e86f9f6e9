"""WAL segment files on the database host: their headers, which ones the server's
archiver has ready, and which ones an earlier batched push already stored.

PostgreSQL runs archive_command once per segment. When the archiver falls
behind, ``wal-push`` stores the segments already marked ``.ready`` together
with the one asked for (one sealed backup), and leaves a marker for each in
the spool; the archiver's next calls find their marker and return at once,
without loading the engine. That path runs once per segment, so this module
imports only what it needs (os, struct): every import here is paid again by
each archive_command call.
"""

from __future__ import annotations

import os
import struct

from .settings_file import load_settings

DEFAULT_SPOOL = "/var/lib/cosmic-backup/wal-spool"
HEX_DIGITS = frozenset("0123456789ABCDEF")
XLP_LONG_HEADER = struct.Struct("<HHIQIIQII")  # magic, info, tli, pageaddr, rem_len, pad,
#                                               sysid, seg_size, blcksz


def is_segment_name(name: str) -> bool:
    """A WAL segment's file name: 24 upper-case hex digits (not .history, .partial)."""
    return len(name) == 24 and HEX_DIGITS.issuperset(name)


class WalHeader:
    __slots__ = ("segment_size", "system_identifier", "timeline")

    def __init__(self, system_identifier: int, segment_size: int, timeline: int):
        self.system_identifier = system_identifier
        self.segment_size = segment_size
        self.timeline = timeline


def read_header(path: str) -> WalHeader | None:
    """The long page header at the start of every segment (None for other files)."""
    with open(path, "rb") as handle:
        data = handle.read(XLP_LONG_HEADER.size)
    if len(data) < XLP_LONG_HEADER.size:
        return None
    _magic, info, tli, _addr, _rem, _pad, sysid, seg_size, _blcksz = XLP_LONG_HEADER.unpack(data)
    if not info & 0x0002:  # XLP_LONG_HEADER
        return None
    return WalHeader(sysid, seg_size, tli)


def ready_segments(path: str, limit: int) -> list[str]:
    """Other segments beside ``path`` that the archiver has marked ready, oldest first."""
    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    try:
        entries = os.listdir(os.path.join(directory, "archive_status"))
    except OSError:
        return []
    ready = sorted(entry[:-len(".ready")] for entry in entries if entry.endswith(".ready"))
    return [segment for segment in ready if is_segment_name(segment) and segment != name
            and os.path.isfile(os.path.join(directory, segment))][:limit]


class PushedMarkers:
    """``<spool>/pushed/<segment>``: stored by an earlier batched push, not yet asked for."""

    def __init__(self, spool_dir: str):
        self.directory = os.path.join(spool_dir, "pushed")

    @staticmethod
    def _identity(path: str) -> str:
        header = read_header(path)
        return f"{os.path.getsize(path)} {header.system_identifier if header else '-'}"

    def record(self, path: str, backup_id: str) -> None:
        """Remember that ``path`` is stored in ``backup_id``.

        Not fsynced, on purpose: the backup was committed durably before this
        is written, so a marker a crash loses or tears only means that the
        segment is pushed again in full (a torn marker does not parse).
        """
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        marker = os.path.join(self.directory, os.path.basename(path))
        with open(marker + ".tmp", "w", encoding="utf-8") as handle:
            handle.write(f"{backup_id} {self._identity(path)}\n")
        os.replace(marker + ".tmp", marker)

    def claim(self, path: str) -> str | None:
        """The backup holding ``path`` if a batched push stored this very file; the
        marker is used up either way (a mismatch means: push it again)."""
        marker = os.path.join(self.directory, os.path.basename(path))
        try:
            with open(marker, encoding="utf-8") as handle:
                backup_id, _space, identity = handle.read().partition(" ")
        except (OSError, ValueError):
            return None
        try:
            same = bool(backup_id) and identity == self._identity(path) + "\n"
        except OSError:
            same = False
        os.unlink(marker)
        return backup_id if same else None

    def forget(self, names) -> None:
        for name in names:
            try:  # noqa: SIM105 - not contextlib.suppress: one import less on the fast path
                os.unlink(os.path.join(self.directory, name))
            except (FileNotFoundError, NotADirectoryError):
                pass


def claim_batched_push(argv: list[str]) -> str | None:
    """For ``[--config FILE] wal-push PATH [--spool-dir DIR]``: the backup an earlier
    batched push stored PATH in, if it did; None sends the call to the full CLI."""
    if "wal-push" not in argv:
        return None
    before, after = argv[:argv.index("wal-push")], argv[argv.index("wal-push") + 1:]
    options = {"--config": None, "--spool-dir": None, "--batch": None}
    positional = []
    words = iter(before + after)
    for word in words:
        option, equals, value = word.partition("=")
        if option in options:
            options[option] = value if equals else next(words, None)
        elif word.startswith("-"):
            return None  # an option this fast path does not know: the CLI decides
        else:
            positional.append(word)
    if len(positional) != 1 or not is_segment_name(os.path.basename(positional[0])):
        return None
    try:
        spool = options["--spool-dir"] or (
            (load_settings(options["--config"]).get("wal") or {}).get("spool_dir")
            or DEFAULT_SPOOL)
        return PushedMarkers(spool).claim(positional[0])
    except Exception:  # noqa: BLE001 - any doubt: the full push decides and reports
        return None
