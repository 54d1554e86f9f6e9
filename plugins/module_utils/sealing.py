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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from .compression import ZstdFilter, compress_command, decompress_command
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
FRAME_LENGTH = MIB
CONTEXT_PREFIX = "cosmic-backup:"
RAW_KEY_INFO_SUFFIX = 4 + 4 + 12


@dataclass(frozen=True)
class Compression:
    level: int = 3
    threads: int = 2


@dataclass(frozen=True)
class SealedSize:
    size: int  # plaintext bytes
    sha256: str  # of the plaintext
    stored_size: int  # ciphertext bytes


def _require_cryptography() -> None:
    if AESGCM is None:
        raise ConfigError("sealing needs the cryptography package: pip install cryptography")


def encryption_context(backup_id: str, name: str) -> dict[str, str]:
    return {f"{CONTEXT_PREFIX}backup": backup_id, f"{CONTEXT_PREFIX}object": name}


def seal(
    source: BinaryIO,
    keys,
    context: Mapping[str, str],
    write: Callable[[bytes], None],
    compression: Compression | None = None,
) -> SealedSize:
    """Compress and encrypt ``source`` until EOF, handing ciphertext to ``write``.

    Reading and hashing run in a thread that feeds a zstd process, encryption
    here (the SDK makes the keys and header, message_format the frames), and
    ``write`` in a thread behind: the stages overlap on every core.
    """
    compression = compression or Compression()
    digest = hashlib.sha256()
    size = 0

    def account(chunk: bytes) -> None:
        nonlocal size
        digest.update(chunk)
        size += len(chunk)

    _require_cryptography()
    data_key, wrapped_keys = keys.new_data_key(context)
    zstd = ZstdFilter(compress_command(compression.level, compression.threads), source.read,
                      MIB, on_chunk=account)
    sink = WriteBehind(write, depth=8)
    try:
        stored = encrypt_stream(zstd, data_key, wrapped_keys, context, sink.put, FRAME_LENGTH)
        zstd.finish()
    except BaseException:
        zstd.abort()
        raise
    finally:
        sink.close()
    return SealedSize(size, digest.hexdigest(), stored)


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
    against the manifest's size and SHA-256 when the end is reached."""

    def __init__(self, stored: BinaryIO, keys, context: Mapping[str, str], *,
                 expected_size: int | None, expected_sha256: str | None, where: str):
        super().__init__()
        self._stored = stored
        self._where = where
        self._expected = (expected_size, expected_sha256)
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
        self._zstd = ZstdFilter(decompress_command(), lambda size: self._guard(
            frames.next_frame), FRAME_LENGTH)  # whole frames, whatever size zstd asks for
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
        if not data and not self._checked:
            self._guard(self._zstd.finish)  # a failure while feeding zstd surfaces here
        self._size += len(data)
        if self._digest is not None:
            self._digest.update(data)
        if not data and not self._checked:
            self._check_end()
        return data

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

    def close(self) -> None:
        if self._zstd is not None:
            self._zstd.abort()
        self._stored.close()
        super().close()


def _same_keys(sealed_for: list[str], available: list[str]) -> bool:
    """Whether any key matches; KMS multi-region replicas share the id after 'key/'."""
    def names(ids):
        return {key_id.rsplit(":", 1)[-1] for key_id in ids}
    return bool(names(sealed_for) & names(available))
