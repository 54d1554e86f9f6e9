"""A pg_dump custom-format archive that was written to a pipe, made ready for
``pg_restore -j``: data offsets, and COPY statements that freeze.

A full backup streams ``pg_dump -Fc`` into the repository, so pg_dump cannot
seek back and record where each table's data starts: every table of contents
entry says "position not set". ``pg_restore -j`` then has to scan the archive
for each table, which made a parallel restore about 20% slower than one from
a file pg_dump wrote itself. While a restore writes the archive to a
temporary file, a ``BlockFinder`` notes where blocks may start; then
``add_data_offsets`` writes their positions into the table of contents, in
place, as pg_dump would have (walking the blocks one by one only when the
markers leave a doubt).

``pg_restore -j`` loads each table it has just created in a transaction that
truncates it first, so its COPY may say FREEZE: the rows are written frozen,
with their hint bits set and their pages all-visible. Otherwise the first
scan of each page sets them and writes the page again: the index builds
that follow (a primary key on 5 million rows took 1.2-1.5 s instead of
1.4-2.5 s), the row counts of the restore's check, and the application's
first reads. ``ParallelRestoreArchive`` writes the archive out with its
table of contents rewritten so, and its data offsets recorded.

The layout is pg_dump's (src/bin/pg_dump/pg_backup_archiver.c WriteHead and
WriteToc, pg_backup_custom.c): integers are a sign byte and ``intSize``
little-endian bytes, strings an integer length (-1: none) and the bytes, an
offset a state byte and ``offSize`` little-endian bytes. Anything unexpected
leaves the file as it was: pg_restore still reads it, only slower.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass

MAGIC = b"PGDMP"
CUSTOM_FORMAT = 1
VERSIONS = {(1, 14)}  # pg_dump 14 and 15; others are left as they are (untested here)
OFFSET_NOT_SET, OFFSET_SET, OFFSET_NO_DATA = 1, 2, 3
BLOCK_DATA, BLOCK_BLOBS = 1, 3
CHUNK_HEADER = struct.Struct("<BI")  # an integer as pg_dump writes it: sign, 4 bytes
TOC_STRINGS_AFTER_COPY = 5  # namespace, tablespace, tableam, owner, "false" (with oids)
COPY_FROM_STDIN = b" FROM stdin;\n"  # how pg_dump ends every COPY statement
COPY_FROM_STDIN_FROZEN = b" FROM stdin WITH (FREEZE);\n"
TABLE_OF_CONTENTS_LIMIT = 256 << 20  # beyond it, an archive is written out as it is


class ArchiveLayoutError(Exception):
    """The file is not laid out as this module expects."""


class ArchiveEndsEarly(ArchiveLayoutError):
    """The data ends before what was being read."""


class _Reader:
    """Reads the archive's fields from a memory map (a megabyte of dump holds
    hundreds of chunks: a seek per chunk on a file took seconds per gigabyte)."""

    def __init__(self, data):
        self.data = data
        self.position = 0
        self.int_size = 4

    def bytes(self, size: int) -> bytes:
        end = self.position + size
        if end > len(self.data):
            raise ArchiveEndsEarly("the archive ends early")
        data = self.data[self.position:end]
        self.position = end
        return data

    def byte(self) -> int:
        return self.bytes(1)[0]

    def integer(self) -> int:
        raw = self.bytes(1 + self.int_size)
        value = int.from_bytes(raw[1:], "little")
        return -value if raw[0] else value

    def string(self) -> bytes | None:
        length = self.integer()
        return None if length < 0 else self.bytes(length)

    def skip(self, size: int) -> None:
        if self.position + size > len(self.data):
            raise ArchiveEndsEarly("the archive ends early")
        self.position += size


@dataclass
class _TocEntry:
    dump_id: int
    desc: bytes | None
    defn: bytes | None
    copy_statement: bytes | None
    copy_statement_at: tuple[int, int]  # where the string is, its length included
    offset_at: int  # where the offset field is: a state byte, then the offset
    offset_state: int


def _read_start(reader: _Reader) -> None:
    """Past the magic and the version; ArchiveLayoutError for what this module
    does not handle (the message says what it is)."""
    if reader.bytes(len(MAGIC)) != MAGIC:
        raise ArchiveLayoutError("not a custom-format archive")
    version = (reader.byte(), reader.byte())
    reader.byte()  # revision
    if version not in VERSIONS:
        raise ArchiveLayoutError(f"archive version {version[0]}.{version[1]}")


def _read_toc(reader: _Reader) -> tuple[list[_TocEntry], int]:
    """The table of contents (the reader is past _read_start); and the size of an offset."""
    reader.int_size, offset_size = reader.byte(), reader.byte()
    if reader.int_size != CHUNK_HEADER.size - 1:
        raise ArchiveLayoutError(f"integers of {reader.int_size} bytes")
    if reader.byte() != CUSTOM_FORMAT:
        raise ArchiveLayoutError("not the custom format")
    reader.integer()  # compression level
    for _field in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
        reader.integer()
    for _field in range(3):  # database name, server version, pg_dump version
        reader.string()
    entries = []
    for _entry in range(reader.integer()):
        dump_id = reader.integer()
        reader.integer()  # has a data dumper
        for _field in range(3):  # tableoid, oid, tag
            reader.string()
        desc = reader.string()
        reader.integer()  # section
        defn = reader.string()
        reader.string()  # dropStmt
        copy_at = reader.position
        copy_statement = reader.string()
        copy_statement_at = (copy_at, reader.position)
        for _field in range(TOC_STRINGS_AFTER_COPY):
            reader.string()
        while reader.string() is not None:  # dependencies, ended by a null string
            pass
        offset_at = reader.position
        state = reader.byte()
        reader.skip(offset_size)
        if state not in (OFFSET_NOT_SET, OFFSET_SET, OFFSET_NO_DATA):
            raise ArchiveLayoutError(f"entry {dump_id} has offset state {state}")
        entries.append(_TocEntry(dump_id, desc, defn, copy_statement, copy_statement_at,
                                 offset_at, state))
    return entries, offset_size


def _skip_chunks(data, position: int) -> int:
    """Past length-prefixed chunks, ended by a zero length. An uncompressed dump
    has one chunk per row: this loop runs millions of times, so it stays bare."""
    unpack = CHUNK_HEADER.unpack_from
    while True:
        negative, length = unpack(data, position)
        position += CHUNK_HEADER.size + length
        if negative:
            raise ArchiveLayoutError("a data chunk has a negative length")
        if length == 0:
            return position


def _data_blocks(reader: _Reader, size: int) -> dict[int, int]:
    """Where each data block starts, by dump id: blocks follow the table of contents."""
    found = {}
    while reader.position < size:
        start = reader.position
        kind, dump_id = reader.byte(), reader.integer()
        try:
            if kind == BLOCK_DATA:
                reader.position = _skip_chunks(reader.data, reader.position)
            elif kind == BLOCK_BLOBS:
                while reader.integer() != 0:  # each large object: its oid, then its chunks
                    reader.position = _skip_chunks(reader.data, reader.position)
            else:
                raise ArchiveLayoutError(f"unknown block type {kind} at byte {start}")
        except struct.error:
            raise ArchiveLayoutError("the archive ends early") from None
        found[dump_id] = start
    if reader.position != size:
        raise ArchiveLayoutError("the last data block runs past the end of the file")
    return found


END_MARKER = CHUNK_HEADER.pack(0, 0)  # the integer 0 that ends a block's chunks


BLOCK_TYPES = (bytes([BLOCK_DATA]), bytes([BLOCK_BLOBS]))


def _block_markers(data, start: int) -> list[int]:
    """Where an end marker is followed by a block type: the candidates for the
    start of the next block, in order. A block type byte is rare in COPY text,
    so memchr skips ahead to each one and few need a look back; a search for
    the marker itself stops at the zeros of every chunk's length."""
    found = []
    for block_type in BLOCK_TYPES:
        at = data.find(block_type, start + len(END_MARKER))
        while at >= 0:
            if data[at - len(END_MARKER):at] == END_MARKER:
                found.append(at - len(END_MARKER))
            at = data.find(block_type, at + 1)
    return sorted(found)


class BlockFinder:
    """Finds the end markers that a block follows while an archive is being
    written out, a chunk at a time, so that add_data_offsets needs no second
    pass over the file."""

    def __init__(self):
        self.positions: set[int] = set()
        self._tail = b""
        self._written = 0

    def feed(self, chunk: bytes) -> None:
        # a block type in the first bytes of a chunk may follow a marker in the tail
        seam = self._tail + chunk[:len(END_MARKER)]
        for at in _block_markers(seam, 0):
            self.positions.add(self._written - len(self._tail) + at)
        for at in _block_markers(chunk, 0):
            self.positions.add(self._written + at)
        self._written += len(chunk)
        self._tail = (self._tail + chunk[-len(END_MARKER):])[-len(END_MARKER):]


def _data_blocks_by_search(reader: _Reader, size: int, expected,
                           markers) -> dict[int, int] | None:
    """The same positions from the end markers, or None when unsure.

    Every block after the first follows the end marker of the one before and
    starts with its type and dump id. COPY text holds no zero bytes, so in a
    dump of table rows the marker occurs only there. Large-object data may
    hold it by chance: a block id found twice or not expected means "unsure",
    and the block-by-block walk decides.
    """
    first = reader.position
    kind, dump_id = reader.byte(), reader.integer()
    if kind not in (BLOCK_DATA, BLOCK_BLOBS) or size < first + len(END_MARKER) \
            or reader.data[size - len(END_MARKER):size] != END_MARKER:
        return None
    found = {dump_id: first}
    for at in markers:
        start = at + len(END_MARKER)
        if at < first or start == size:
            continue
        if start + 1 + CHUNK_HEADER.size > size:
            return None
        if reader.data[start] not in (BLOCK_DATA, BLOCK_BLOBS):
            continue  # zero bytes inside large-object data, not a block
        negative, dump_id = CHUNK_HEADER.unpack_from(reader.data, start + 1)
        if negative or dump_id in found or dump_id not in expected:
            return None
        found[dump_id] = start
    return found if set(found) == set(expected) else None


def add_data_offsets(path: str, markers: BlockFinder | None = None) -> str:
    """Record every data block's position in the archive at ``path``; what was done.
    ``markers``: a BlockFinder that saw the file written (else the file is searched)."""
    with open(path, "r+b") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return "an empty file: left as it is"
        with mmap.mmap(handle.fileno(), 0) as data:
            reader = _Reader(data)
            try:
                _read_start(reader)
            except ArchiveLayoutError as error:
                return f"{error}: left as it is"
            try:
                entries, offset_size = _read_toc(reader)
                unset = {entry.dump_id: entry.offset_at for entry in entries
                         if entry.offset_state == OFFSET_NOT_SET}
                if not unset:
                    return "the archive has its data offsets already"
                start = reader.position
                blocks = _data_blocks_by_search(
                    reader, len(data), unset,
                    sorted(markers.positions) if markers else _block_markers(data, start))
                if blocks is None:
                    reader.position = start
                    blocks = _data_blocks(reader, len(data))
            except ArchiveLayoutError as error:
                return f"unexpected layout ({error}): left as it is"
            if set(blocks) != set(unset):
                return "its data blocks do not match its table of contents: left as it is"
            for dump_id, field_at in unset.items():
                data[field_at:field_at + 1 + offset_size] = \
                    bytes([OFFSET_SET]) + blocks[dump_id].to_bytes(offset_size, "little")
            # no flush: a temporary file, read next through the same page cache
    return f"data offsets recorded for {len(blocks)} tables"


def _frozen(entry: _TocEntry) -> bytes | None:
    """The entry's COPY statement with FREEZE, or None to leave it as it is: only
    a table's own data (loaded "via the partition root", the rows may go to
    any partition, and pg_restore does not truncate first)."""
    statement = entry.copy_statement
    if entry.desc != b"TABLE DATA" or entry.defn or not statement \
            or not statement.endswith(COPY_FROM_STDIN):
        return None
    return statement[:-len(COPY_FROM_STDIN)] + COPY_FROM_STDIN_FROZEN


def freeze_copies(head: bytes) -> tuple[bytes, str]:
    """``head``, the start of an archive that holds its whole table of contents,
    with the COPY statements rewritten to freeze; and what was done.
    ArchiveEndsEarly: the table of contents goes on past ``head``."""
    reader = _Reader(head)
    _read_start(reader)
    entries, _offset_size = _read_toc(reader)
    pieces, copied_to, frozen = [], 0, 0
    for entry in entries:
        statement = _frozen(entry)
        if statement is None:
            continue
        start, end = entry.copy_statement_at
        pieces += [head[copied_to:start], CHUNK_HEADER.pack(0, len(statement)), statement]
        copied_to, frozen = end, frozen + 1
    pieces.append(head[copied_to:])
    tables = sum(entry.desc == b"TABLE DATA" for entry in entries)
    return b"".join(pieces), f"COPY FREEZE for {frozen} of {tables} tables"


class ParallelRestoreArchive:
    """Writes a streamed custom-format archive out to ``path`` for ``pg_restore -j``:
    its COPY statements freeze, and finish() records the data offsets.

    The start of the archive is held back until its table of contents is
    complete (a few kilobytes; megabytes for a schema of many thousand tables).
    """

    def __init__(self, path: str):
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed on leaving the block
        self._finder = BlockFinder()
        self._head = b""
        self._rewriting = True
        self._frozen = "the COPY statements were left as they are"

    def write(self, chunk: bytes) -> None:
        if self._rewriting:
            self._head += chunk
            chunk = self._rewritten_head()
        self._put(chunk)

    def _put(self, data: bytes) -> None:
        if data:
            self._file.write(data)
            self._finder.feed(data)

    def _rewritten_head(self, at_end: bool = False) -> bytes:
        """The head, rewritten when its table of contents is whole; b"" to wait for more."""
        try:
            data, self._frozen = freeze_copies(self._head)
        except ArchiveEndsEarly:
            if not at_end and len(self._head) < TABLE_OF_CONTENTS_LIMIT:
                return b""
            data = self._head
        except ArchiveLayoutError as error:
            data = self._head
            self._frozen = f"the COPY statements were left as they are ({error})"
        self._rewriting, self._head = False, b""
        return data

    def finish(self) -> str:
        """Complete the file; what was done to it."""
        if self._rewriting:
            self._put(self._rewritten_head(at_end=True))
        self._file.close()
        return f"{add_data_offsets(self.path, self._finder)}; {self._frozen}"

    def __enter__(self) -> ParallelRestoreArchive:
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()  # already closed by finish, unless something failed
