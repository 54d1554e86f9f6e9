"""Seal and open objects: zstd compression inside an AWS Encryption SDK message.

A sealed object is one Encryption SDK message (unsigned committing suite
AES-256-GCM-HKDF-SHA512-COMMIT-KEY, 1 MiB frames) whose plaintext is one zstd
frame. Its encryption context names the backup and the object, so an object
copied or swapped into another place fails to open. Standard tools can open it
(see docs/repository-format.md).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from .compression import Compression, ZstdFilter, decompress_command
from .errors import ConfigError, ExternalCommandError, IntegrityError, KeyUnavailable
from .keys import LOCAL_PROVIDER_ID
from .message_format import (
    AESGCM,
    FrameReader,
    MessageError,
    encrypt_stream,
    frame_key,
    read_header,
)
from .pipes import WriteBehind

MIB = 1 << 20
ZSTD_MAGIC = bytes.fromhex("28b52ffd")
ZSTD_HEADER_BYTES = 5  # the magic number and the frame header descriptor
ZSTD_CHECKSUM_FLAG = 0x04
FRAME_LENGTH = MIB
CONTEXT_PREFIX = "cosmic-backup:"
RAW_KEY_INFO_SUFFIX = 4 + 4 + 12


@dataclass(frozen=True)
class SealedSize:
    size: int  # plaintext bytes
    zstd_checksum: str | None  # see ChecksumTail
    stored_size: int  # ciphertext bytes


class ChecksumTail:
    """Reads a zstd stream and keeps its content checksum: the last four bytes
    of a frame written with zstd's default ``--check``, the low 32 bits of the
    XXH64 of the plaintext, in the hex ``zstd -lv`` prints. zstd computes it
    while it compresses, and checks it while it decompresses, so recording
    it costs nothing, where a SHA-256 of the plaintext cost a core-second
    per GiB."""

    def __init__(self, read: Callable[[int], bytes],
                 readinto: Callable[[memoryview], int] | None = None):
        self._read = read
        self._readinto = readinto
        self._first = b""
        self._last = b""

    def read(self, size: int) -> bytes:
        data = self._read(size)
        self._remember(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        count = self._readinto(buffer)
        self._remember(buffer[:count])
        return count

    def _remember(self, data) -> None:
        if len(self._first) < ZSTD_HEADER_BYTES:
            self._first = (self._first + bytes(data[:ZSTD_HEADER_BYTES]))[:ZSTD_HEADER_BYTES]
        self._last = (self._last + bytes(data))[-4:] if len(data) < 4 else bytes(data[-4:])

    def checksum(self) -> str | None:
        """None unless the stream is a zstd frame that carries a checksum."""
        if (len(self._first) < ZSTD_HEADER_BYTES or self._first[:4] != ZSTD_MAGIC
                or not self._first[4] & ZSTD_CHECKSUM_FLAG):
            return None
        return self._last[::-1].hex()  # stored little-endian


def _require_cryptography() -> None:
    if AESGCM is None:
        raise ConfigError("sealing needs the cryptography package: pip install cryptography")


def encryption_context(backup_id: str, name: str) -> dict[str, str]:
    return {f"{CONTEXT_PREFIX}backup": backup_id, f"{CONTEXT_PREFIX}object": name}


def seal(
    source: BinaryIO | ZstdFilter,
    keys,
    context: Mapping[str, str],
    write: Callable[[bytes], None],
    compression: Compression | None = None,
) -> SealedSize:
    """Compress and encrypt ``source`` until EOF, handing ciphertext to ``write``.

    A zstd process reads an unbuffered file itself, or a thread feeds it (by
    splice(2) from a pipe: no copy through Python), encryption runs here (the
    SDK makes the keys and header, message_format the frames), and ``write``
    in a thread behind: the stages overlap on every core. ``source`` may be
    a ZstdFilter already at work (Compression.start): the CLI starts zstd
    before it loads the engine.
    """
    _require_cryptography()
    compression = compression or Compression()
    # zstd first: it works while the data key is made (a KMS round trip)
    zstd = source if isinstance(source, ZstdFilter) else compression.start(source)
    with zstd:  # stops zstd if anything below fails
        data_key, wrapped_keys = keys.new_data_key(context)
        compressed = ChecksumTail(zstd.read, zstd.readinto)
        sink = WriteBehind(write, depth=8)
        try:
            stored = encrypt_stream(compressed, data_key, wrapped_keys, context, sink.put,
                                    FRAME_LENGTH)
            zstd.finish()
        finally:
            sink.close()
    return SealedSize(zstd.fed, compressed.checksum(), stored)


def wrapping_key_ids(header) -> list[str]:
    """The ids of the keys a sealed object was wrapped for."""
    names = []
    for wrapped in header.encrypted_data_keys:
        info = wrapped.key_info
        if wrapped.provider_id == LOCAL_PROVIDER_ID.encode():
            info = info[:-RAW_KEY_INFO_SUFFIX]  # tag length, IV length and IV follow the id
        names.append(info.decode(errors="replace"))
    return sorted(names)


class OpenedObject(io.RawIOBase):
    """The plaintext of a sealed object; authenticated frame by frame, and checked
    against the manifest's size and zstd checksum (and, when asked, the SHA-256
    that version 1 manifests record) when the end is reached."""

    def __init__(self, stored: BinaryIO, keys, context: Mapping[str, str], *,
                 expected_size: int | None, expected_sha256: str | None, where: str,
                 expected_zstd_checksum: str | None = None):
        super().__init__()
        self._stored = stored
        self._where = where
        self._expected = (expected_size, expected_sha256)
        self._expected_zstd_checksum = expected_zstd_checksum
        self._compressed: ChecksumTail | None = None
        _require_cryptography()
        # The header is read here first, so that a failure to unwrap can be
        # told apart: a key this host lacks, or damage to a key it has.
        try:
            self._header = read_header(stored)
        except MessageError as error:
            raise IntegrityError(f"{where} has a damaged header: {error}") from None
        self.key_ids = wrapping_key_ids(self._header)
        self._keys = keys
        self._context = dict(context)
        self._plain: BinaryIO | None = None
        self._digest = None
        self._size = 0
        self._zstd: ZstdFilter | None = None
        self._checked = False

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        found = self._header.encryption_context
        for name, value in self._context.items():
            if found.get(name) != value:
                raise IntegrityError(
                    f"{self._where} belongs to {found.get(name)!r}, not {value!r}: "
                    "it was moved or swapped; do not trust this copy"
                )
        frames = FrameReader(self._stored, self._header,
                             self._guard(lambda: frame_key(self._header, self._unwrap())))
        # Decryption feeds a zstd process from its own thread while the caller
        # reads plaintext here: the two overlap on two cores.
        self._compressed = ChecksumTail(lambda size: self._guard(frames.next_frame))
        # whole frames, whatever size zstd asks for
        self._zstd = ZstdFilter(decompress_command(), self._compressed.read, FRAME_LENGTH)
        self._plain = self._zstd
        # Hashing costs as much as decompression: only when asked to check.
        self._digest = hashlib.sha256() if self._expected[1] else None

    def _unwrap(self) -> bytes:
        try:
            return self._keys.unwrap(self._header)
        except KeyUnavailable as error:
            if _same_keys(self.key_ids, self._keys.key_ids):
                raise IntegrityError(f"{self._where} failed authentication: {error}") from None
            raise KeyUnavailable(
                f"none of this host's keys ({', '.join(self._keys.key_ids)}) can unwrap "
                f"{self._where}: it was sealed for {', '.join(self.key_ids)}; "
                "import or configure that key"
            ) from None

    def _guard(self, operation):
        try:
            return operation()
        except (MessageError, ExternalCommandError) as error:
            raise IntegrityError(f"{self._where} failed authentication: {error}") from None

    def read(self, size: int = -1) -> bytes:
        if self._plain is None:
            self._open()
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(4 * MIB), b""))
        data = self._plain.read(size)
        if self._digest is not None:
            self._digest.update(data)
        self._account(len(data))
        return data

    def splice_to(self, fd: int, size: int) -> int:
        """Move up to ``size`` bytes of plaintext into ``fd`` without copying them
        through Python (zstd's output is spliced); 0 at the end, as read's b""."""
        if self._plain is None:
            self._open()
        if self._digest is not None:  # the bytes must pass through the hash
            return write_all(fd, self.read(size))
        moved = self._zstd.splice_to(fd, size)
        self._account(moved)
        return moved

    def _account(self, count: int) -> None:
        self._size += count
        if not count and not self._checked:
            self._guard(self._zstd.finish)  # a failure while feeding zstd surfaces here
            self._check_end()

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _check_end(self) -> None:
        self._checked = True
        size, sha256 = self._expected
        if size is not None and self._size != size:
            raise IntegrityError(
                f"{self._where} holds {self._size} bytes, the manifest says {size}"
            )
        if sha256 is not None and self._digest.hexdigest() != sha256:
            raise IntegrityError(f"{self._where} does not match the SHA-256 in its manifest")
        expected = self._expected_zstd_checksum
        if expected is not None and self._compressed.checksum() != expected:
            raise IntegrityError(f"{self._where} carries zstd checksum "
                                 f"{self._compressed.checksum()}, the manifest says {expected}")

    def close(self) -> None:
        if self._zstd is not None:
            self._zstd.abort()
        self._stored.close()
        super().close()


def write_all(fd: int, data: bytes) -> int:
    """Write every byte of ``data`` to ``fd`` (a pipe may take part); its length."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return len(data)


def _same_keys(sealed_for: list[str], available: list[str]) -> bool:
    """Whether any key matches; KMS multi-region replicas share the id after 'key/'."""
    def names(ids):
        return {key_id.rsplit(":", 1)[-1] for key_id in ids}
    return bool(names(sealed_for) & names(available))
