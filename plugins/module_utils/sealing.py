"""Seal and open objects: zstd compression inside an AWS Encryption SDK message.

A sealed object is one Encryption SDK message (unsigned committing suite
AES-256-GCM-HKDF-SHA512-COMMIT-KEY, 1 MiB frames) whose plaintext is one zstd
frame. Its encryption context names the backup and the object, so an object
copied or swapped into another place fails to open. Standard tools can open it
(see docs/repository-format.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from .compression import ZstdFilter, compress_command, decompress_command
from .errors import ConfigError, ExternalCommandError, IntegrityError, KeyUnavailable
from .keys import LOCAL_PROVIDER_ID
from .message_format import FrameBodyError, encrypt_stream, open_framed_body
from .pipes import WriteBehind

try:
    import aws_encryption_sdk
    from aws_encryption_sdk.exceptions import (
        AWSEncryptionSDKClientError,
        DecryptKeyError,
        MasterKeyProviderError,
    )
    from aws_encryption_sdk.identifiers import CommitmentPolicy
    from aws_encryption_sdk.internal.formatting.deserialize import deserialize_header
    from cryptography.exceptions import InvalidTag
except ImportError:  # reported by _client()
    aws_encryption_sdk = None

MIB = 1 << 20
FRAME_LENGTH = MIB
MAX_ENCRYPTED_DATA_KEYS = 8
CONTEXT_PREFIX = "cosmic-backup:"
RAW_KEY_INFO_SUFFIX = 4 + 4 + 12
HEADER_PEEK_BYTES = 64 << 10  # more than any header with up to 8 wrapped keys


@dataclass(frozen=True)
class Compression:
    level: int = 3
    threads: int = 2


@dataclass(frozen=True)
class SealedSize:
    size: int  # plaintext bytes
    sha256: str  # of the plaintext
    stored_size: int  # ciphertext bytes


def _client():
    if aws_encryption_sdk is None:
        raise ConfigError(
            "sealing needs the AWS Encryption SDK: pip install 'aws-encryption-sdk<4'"
        )
    return aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
        max_encrypted_data_keys=MAX_ENCRYPTED_DATA_KEYS,
    )


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

    zstd = ZstdFilter(compress_command(compression.level, compression.threads), source.read,
                      MIB, on_chunk=account)
    sink = WriteBehind(write, depth=8)
    try:
        try:
            stored = encrypt_stream(zstd, keys.master_key_provider(), context, sink.put,
                                    FRAME_LENGTH)
        except AWSEncryptionSDKClientError as error:
            raise KeyUnavailable(f"cannot wrap a data key with {keys.key_ids}: {error}") from None
        zstd.finish()
    except BaseException:
        zstd.abort()
        raise
    finally:
        sink.close()
    return SealedSize(size, digest.hexdigest(), stored)


def wrapping_key_ids(stored: BinaryIO) -> list[str]:
    """The ids of the keys a sealed object was wrapped for (read from its header)."""
    header = deserialize_header(stored, MAX_ENCRYPTED_DATA_KEYS)[0]
    names = []
    for data_key in header.encrypted_data_keys:
        info = data_key.key_provider.key_info
        if data_key.key_provider.provider_id == LOCAL_PROVIDER_ID:
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
        # The header is read here first, so that a failure to unwrap can be
        # told apart: a key this host lacks, or damage to a key it has.
        prefix = stored.read(HEADER_PEEK_BYTES)
        try:
            self.key_ids = wrapping_key_ids(io.BytesIO(prefix))
        except Exception:  # noqa: BLE001 - any parse failure means a damaged header
            raise IntegrityError(f"{where} has a damaged header") from None
        self._source = _Prefixed(prefix, stored)
        self._decryptor = _client().stream(
            mode="d", source=self._source, key_provider=keys.master_key_provider()
        )
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
        header = self._guard(lambda: self._decryptor.header)
        found = header.encryption_context
        for name, value in self._context.items():
            if found.get(name) != value:
                raise IntegrityError(
                    f"{self._where} belongs to {found.get(name)!r}, not {value!r}: "
                    "it was moved or swapped; do not trust this copy"
                )
        # Decryption runs a few frames ahead in its own thread; zstd and the
        # hashing below run here, so the two overlap on two cores.
        frames = self._guard(lambda: open_framed_body(self._decryptor, self._source))
        if frames is not None:
            def body(size: int) -> bytes:
                return frames.next_frame()  # whole frames, whatever size zstd is fed in
        else:
            body = self._decryptor.read
        # Decryption feeds a zstd process from its own thread while the caller
        # reads plaintext here: the two overlap on two cores.
        self._zstd = ZstdFilter(decompress_command(), lambda size: self._guard(
            lambda: body(size)), FRAME_LENGTH)
        self._plain = self._zstd
        # Hashing costs as much as decompression: only when asked to check.
        self._digest = hashlib.sha256() if self._expected[1] else None

    def _guard(self, operation):
        try:
            return operation()
        except (DecryptKeyError, MasterKeyProviderError) as error:
            if not _same_keys(self.key_ids, self._keys.key_ids):
                raise KeyUnavailable(
                    f"none of this host's keys ({', '.join(self._keys.key_ids)}) can unwrap "
                    f"{self._where}: it was sealed for {', '.join(self.key_ids)}; "
                    "import or configure that key"
                ) from None
            raise IntegrityError(f"{self._where} failed authentication: {error}") from None
        except (AWSEncryptionSDKClientError, InvalidTag, FrameBodyError,
                ExternalCommandError) as error:
            raise IntegrityError(
                f"{self._where} failed authentication: {type(error).__name__} {error}".rstrip()
            ) from None

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
        with contextlib.suppress(Exception):  # a half-read stream has nothing to flush
            self._decryptor.close()
        self._stored.close()
        super().close()


def _same_keys(sealed_for: list[str], available: list[str]) -> bool:
    """Whether any key matches; KMS multi-region replicas share the id after 'key/'."""
    def names(ids):
        return {key_id.rsplit(":", 1)[-1] for key_id in ids}
    return bool(names(sealed_for) & names(available))


class _Prefixed(io.RawIOBase):
    """Bytes already read, then the rest of the stream."""

    def __init__(self, prefix: bytes, rest: BinaryIO):
        super().__init__()
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size is None or size < 0:
                data, self._prefix = self._prefix + self._rest.read(), b""
                return data
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        return self._rest.read(size)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
