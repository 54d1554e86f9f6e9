"""Data offsets for a pg_dump custom-format archive that was written to a pipe.

A full backup streams ``pg_dump -Fc`` into the repository, so pg_dump cannot
seek back and record where each table's data starts: every table of contents
entry says "position not set". ``pg_restore -j`` then has to scan the archive
for each table, which made a parallel restore about 20% slower than one from
a file pg_dump wrote itself. After a restore has written the archive to a
temporary file, ``add_data_offsets`` walks its data blocks once and writes
their positions into the table of contents, in place, as pg_dump would have.

The layout is pg_dump's (src/bin/pg_dump/pg_backup_archiver.c WriteHead and
WriteToc, pg_backup_custom.c): integers are a sign byte and ``intSize``
little-endian bytes, strings an integer length (-1: none) and the bytes, an
offset a state byte and ``offSize`` little-endian bytes. Anything unexpected
leaves the file as it was: pg_restore still reads it, only slower.
"""

from __future__ import annotations

import os

MAGIC = b"PGDMP"
CUSTOM_FORMAT = 1
VERSIONS = {(1, 14)}  # pg_dump 14 and 15; others are left as they are (untested here)
OFFSET_NOT_SET, OFFSET_SET, OFFSET_NO_DATA = 1, 2, 3
BLOCK_DATA, BLOCK_BLOBS = 1, 3
TOC_STRINGS_BEFORE_SECTION = 4  # tableoid, oid, tag, desc
TOC_STRINGS_AFTER_SECTION = 8  # defn, dropStmt, copyStmt, namespace, tablespace, tableam,
#                                owner, "false" (with oids)


class ArchiveLayoutError(Exception):
    """The file is not laid out as this module expects."""


class _Reader:
    def __init__(self, handle):
        self._handle = handle
        self.int_size = 4

    @property
    def position(self) -> int:
        return self._handle.tell()

    def bytes(self, size: int) -> bytes:
        data = self._handle.read(size)
        if len(data) != size:
            raise ArchiveLayoutError("the archive ends early")
        return data

    def byte(self) -> int:
        return self.bytes(1)[0]

    def integer(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.bytes(self.int_size), "little")
        return -value if sign else value

    def string(self) -> bytes | None:
        length = self.integer()
        return None if length < 0 else self.bytes(length)

    def skip(self, size: int) -> None:
        self._handle.seek(size, os.SEEK_CUR)


def _read_toc(reader: _Reader) -> tuple[dict[int, int], int]:
    """Where each entry's offset field is, by dump id (entries whose data is in the
    archive but whose position is not set); and the size of an offset."""
    reader.int_size, offset_size = reader.byte(), reader.byte()
    if reader.byte() != CUSTOM_FORMAT:
        raise ArchiveLayoutError("not the custom format")
    reader.integer()  # compression level
    for _field in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
        reader.integer()
    for _field in range(3):  # database name, server version, pg_dump version
        reader.string()
    unset = {}
    for _entry in range(reader.integer()):
        dump_id = reader.integer()
        reader.integer()  # has a data dumper
        for _field in range(TOC_STRINGS_BEFORE_SECTION):
            reader.string()
        reader.integer()  # section
        for _field in range(TOC_STRINGS_AFTER_SECTION):
            reader.string()
        while reader.string() is not None:  # dependencies, ended by a null string
            pass
        field_at = reader.position
        state = reader.byte()
        reader.skip(offset_size)
        if state == OFFSET_NOT_SET:
            unset[dump_id] = field_at
        elif state not in (OFFSET_SET, OFFSET_NO_DATA):
            raise ArchiveLayoutError(f"entry {dump_id} has offset state {state}")
    return unset, offset_size


def _skip_chunks(reader: _Reader) -> None:
    """Length-prefixed chunks, ended by a zero length."""
    while (length := reader.integer()) != 0:
        if length < 0:
            raise ArchiveLayoutError("a data chunk has a negative length")
        reader.skip(length)


def _data_blocks(reader: _Reader, size: int) -> dict[int, int]:
    """Where each data block starts, by dump id: blocks follow the table of contents."""
    found = {}
    while reader.position < size:
        start = reader.position
        kind, dump_id = reader.byte(), reader.integer()
        if kind == BLOCK_DATA:
            _skip_chunks(reader)
        elif kind == BLOCK_BLOBS:
            while reader.integer() != 0:  # each large object: its oid, then its chunks
                _skip_chunks(reader)
        else:
            raise ArchiveLayoutError(f"unknown block type {kind} at byte {start}")
        found[dump_id] = start
    if reader.position != size:
        raise ArchiveLayoutError("the last data block runs past the end of the file")
    return found


def add_data_offsets(path: str) -> str:
    """Record every data block's position in the archive at ``path``; what was done."""
    with open(path, "r+b") as handle:
        reader = _Reader(handle)
        try:
            if reader.bytes(len(MAGIC)) != MAGIC:
                return "not a custom-format archive: left as it is"
            version = (reader.byte(), reader.byte())
            reader.byte()  # revision
            if version not in VERSIONS:
                return f"archive version {version[0]}.{version[1]}: left as it is"
            unset, offset_size = _read_toc(reader)
            if not unset:
                return "the archive has its data offsets already"
            blocks = _data_blocks(reader, os.fstat(handle.fileno()).st_size)
        except ArchiveLayoutError as error:
            return f"unexpected layout ({error}): left as it is"
        if set(blocks) != set(unset):
            return "its data blocks do not match its table of contents: left as it is"
        for dump_id, field_at in unset.items():
            handle.seek(field_at)
            handle.write(bytes([OFFSET_SET]) + blocks[dump_id].to_bytes(offset_size, "little"))
    return f"data offsets recorded for {len(blocks)} tables"
