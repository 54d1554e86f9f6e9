"""The AWS Encryption SDK message format, written and read without the SDK.

Every sealed object is one message in the SDK's format version 2 with the
unsigned, key-committing suite AES-256-GCM-HKDF-SHA512-COMMIT-KEY, framed
(https://docs.aws.amazon.com/encryption-sdk/latest/developer-guide/message-format.html).
This module writes and reads exactly that one shape. The SDK itself is left
out of the data path for two reasons: importing it costs about 0.4 s of every
command's start (it loads boto3 and botocore), and its frame loop copies every
byte about six times. Who wraps the data key is keys.py's concern. Tests check
in both directions that the SDK and its CLI read what this writes and that
this reads what they write.
"""

from __future__ import annotations

import hmac
import io
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
except ImportError:  # sealing.py reports the missing package
    AESGCM = None

VERSION = 2
SUITE_ID = 0x0478  # AES-256-GCM-HKDF-SHA512-COMMIT-KEY, unsigned
FRAMED_DATA = 2
MESSAGE_ID_BYTES = 32
KEY_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
MAX_FRAME_COUNT = 0xFFFFFFFF
MAX_ENCRYPTED_DATA_KEYS = 8
FINAL_FRAME_MARKER = b"\xff\xff\xff\xff"
FRAME_AAD = b"AWSKMSEncryptionClient Frame"
FINAL_FRAME_AAD = b"AWSKMSEncryptionClient Final Frame"


class MessageError(Exception):
    """The message is malformed, of another kind, or does not authenticate."""


@dataclass(frozen=True)
class EncryptedDataKey:
    """One wrapped copy of the data key, as the header stores it."""

    provider_id: bytes
    key_info: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class Header:
    message_id: bytes
    encryption_context: dict[str, str]
    encrypted_data_keys: tuple[EncryptedDataKey, ...]
    frame_length: int
    commitment_key: bytes
    body: bytes  # the serialized header, which its tag authenticates
    tag: bytes

    @property
    def size(self) -> int:
        return len(self.body) + len(self.tag)


def serialize_context(context: Mapping[str, str]) -> bytes:
    """The encryption context as the format stores it: pairs sorted by key."""
    if not context:
        return b""
    pairs = sorted((key.encode(), value.encode()) for key, value in context.items())
    parts = [struct.pack(">H", len(pairs))]
    for key, value in pairs:
        parts.append(struct.pack(">H", len(key)) + key + struct.pack(">H", len(value)) + value)
    return b"".join(parts)


def _hkdf(data_key: bytes, message_id: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA512(), length=KEY_BYTES, salt=message_id,
                info=info).derive(data_key)


def derived_keys(data_key: bytes, message_id: bytes) -> tuple[bytes, bytes]:
    """The key that encrypts the frames, and the commitment the header carries."""
    return (_hkdf(data_key, message_id, struct.pack(">H", SUITE_ID) + b"DERIVEKEY"),
            _hkdf(data_key, message_id, b"COMMITKEY"))


def _header_tag(key: bytes, body: bytes) -> bytes:
    return AESGCM(key).encrypt(bytes(IV_BYTES), b"", body)


def new_header(data_key: bytes, encrypted_data_keys, context: Mapping[str, str],
               frame_length: int) -> tuple[Header, bytes]:
    """A header for a fresh message, and the key its frames are encrypted with."""
    message_id = os.urandom(MESSAGE_ID_BYTES)
    frame_key, commitment_key = derived_keys(data_key, message_id)
    serialized_context = serialize_context(context)
    parts = [struct.pack(">BH", VERSION, SUITE_ID), message_id,
             struct.pack(">H", len(serialized_context)), serialized_context,
             struct.pack(">H", len(encrypted_data_keys))]
    for wrapped in encrypted_data_keys:
        for field in (wrapped.provider_id, wrapped.key_info, wrapped.ciphertext):
            parts.append(struct.pack(">H", len(field)) + field)
    parts += [struct.pack(">BI", FRAMED_DATA, frame_length), commitment_key]
    body = b"".join(parts)
    header = Header(message_id, dict(context), tuple(encrypted_data_keys), frame_length,
                    commitment_key, body, _header_tag(frame_key, body))
    return header, frame_key


class _Cursor:
    """Reads a header field by field from a stream, keeping the bytes it read."""

    def __init__(self, source: BinaryIO):
        self._source = source
        self.consumed = bytearray()

    def take(self, size: int) -> bytes:
        data = _read_exactly(self._source, size)
        if len(data) != size:
            raise MessageError("the message ends inside its header: truncated")
        self.consumed += data
        return data

    def number(self, code: str) -> int:
        return struct.unpack(">" + code, self.take(struct.calcsize(">" + code)))[0]

    def field(self) -> bytes:
        return self.take(self.number("H"))


def _parse_context(data: bytes) -> dict[str, str]:
    if not data:
        return {}
    cursor = _Cursor(io.BytesIO(data))
    context = {}
    for _pair in range(cursor.number("H")):
        try:
            key, value = cursor.field().decode(), cursor.field().decode()
        except UnicodeDecodeError:
            raise MessageError("the encryption context is not UTF-8") from None
        if key in context:
            raise MessageError(f"the encryption context names {key!r} twice")
        context[key] = value
    if len(cursor.consumed) != len(data):
        raise MessageError("bytes follow the encryption context")
    return context


def read_header(source: BinaryIO) -> Header:
    """The header at the start of ``source``, parsed but not yet authenticated."""
    cursor = _Cursor(source)
    version = cursor.number("B")
    if version != VERSION:
        raise MessageError(f"message format version {version}; this tool reads version 2")
    suite = cursor.number("H")
    if suite != SUITE_ID:
        raise MessageError(f"algorithm suite 0x{suite:04x}; this tool reads only 0x0478 "
                           "(AES-256-GCM-HKDF-SHA512-COMMIT-KEY, unsigned)")
    message_id = cursor.take(MESSAGE_ID_BYTES)
    context = _parse_context(cursor.field())
    count = cursor.number("H")
    if not 0 < count <= MAX_ENCRYPTED_DATA_KEYS:
        raise MessageError(f"{count} wrapped data keys; at most {MAX_ENCRYPTED_DATA_KEYS} "
                           "are accepted")
    wrapped = tuple(EncryptedDataKey(cursor.field(), cursor.field(), cursor.field())
                    for _copy in range(count))
    if cursor.number("B") != FRAMED_DATA:
        raise MessageError("the message is not framed")
    frame_length = cursor.number("I")
    if frame_length == 0:
        raise MessageError("the message has a frame length of zero")
    commitment_key = cursor.take(KEY_BYTES)
    body = bytes(cursor.consumed)
    return Header(message_id, context, wrapped, frame_length, commitment_key, body,
                  cursor.take(TAG_BYTES))


def frame_key(header: Header, data_key: bytes) -> bytes:
    """Check the header against the unwrapped data key; the key the frames use."""
    key, commitment_key = derived_keys(data_key, header.message_id)
    if not hmac.compare_digest(commitment_key, header.commitment_key):
        raise MessageError("the key commitment does not match: the header was altered")
    try:
        AESGCM(key).decrypt(bytes(IV_BYTES), header.tag, header.body)
    except InvalidTag:
        raise MessageError("the header failed authentication") from None
    return key


def _read_exactly(source: BinaryIO, size: int) -> bytes:
    """Exactly ``size`` bytes, fewer only at the end of the stream."""
    data = source.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    missing = size - len(data)
    while missing:
        more = source.read(missing)
        if not more:
            break
        parts.append(more)
        missing -= len(more)
    return b"".join(parts)


def _frame_aad(message_id: bytes, sequence: int, length: int, final: bool) -> bytes:
    return (message_id + (FINAL_FRAME_AAD if final else FRAME_AAD)
            + struct.pack(">IQ", sequence, length))


def _fill(source: BinaryIO, buffer: bytearray) -> int:
    """Fill ``buffer`` from ``source.readinto``; fewer bytes only at the end of the stream."""
    view = memoryview(buffer)
    filled = 0
    while filled < len(buffer):
        count = source.readinto(view[filled:])
        if not count:
            break
        filled += count
    return filled


def encrypt_stream(source: BinaryIO, data_key: bytes, encrypted_data_keys,
                   context: Mapping[str, str], write: Callable[[bytes], None],
                   frame_length: int) -> int:
    """Write one message of ``source`` (read with ``readinto``) until EOF; returns
    its size in bytes."""
    header, key = new_header(data_key, encrypted_data_keys, context, frame_length)
    write(header.body + header.tag)
    written = header.size
    aead = AESGCM(key)
    sequence = 1
    # Two frame buffers, filled in place and reused: a megabyte allocated
    # (and its pages faulted in) for every read cost more than the copy.
    current, following = bytearray(frame_length), bytearray(frame_length)
    length = _fill(source, current)
    while True:
        # A frame is final when the plaintext ends inside it; a stream that ends
        # on a frame boundary gets an empty final frame, as the SDK writes it.
        final = length < frame_length
        following_length = 0 if final else _fill(source, following)
        if sequence > MAX_FRAME_COUNT:
            raise MessageError("the stream is longer than one message can hold")
        iv = sequence.to_bytes(IV_BYTES, "big")
        sealed = aead.encrypt(iv, memoryview(current)[:length],
                              _frame_aad(header.message_id, sequence, length, final))
        if final:
            prefix = FINAL_FRAME_MARKER + struct.pack(">I", sequence) + iv \
                + struct.pack(">I", length)
        else:
            prefix = struct.pack(">I", sequence) + iv
        write(prefix)  # two writes: joining would copy the megabyte once more
        write(sealed)  # ciphertext, then the tag
        written += len(prefix) + len(sealed)
        if final:
            return written
        current, following, length = following, current, following_length
        sequence += 1


class FrameReader:
    """Plaintext of a message body, frame by frame, once ``frame_key`` has
    authenticated the header. Each frame is authenticated before its plaintext
    is returned; the body must end with exactly one final frame and nothing
    after it."""

    def __init__(self, source: BinaryIO, header: Header, key: bytes):
        self._source = source
        self._message_id = header.message_id
        self._frame_length = header.frame_length
        self._aead = AESGCM(key)
        self._sequence = 1
        self._finished = False

    def _read(self, size: int) -> bytes:
        data = _read_exactly(self._source, size)
        if len(data) != size:
            raise MessageError(f"the message ends inside frame {self._sequence}: truncated")
        return data

    def next_frame(self) -> bytes:
        """The next frame's plaintext; b"" once the final frame was read."""
        if self._finished:
            return b""
        marker = self._read(4)
        final = marker == FINAL_FRAME_MARKER
        sequence = struct.unpack(">I", self._read(4) if final else marker)[0]
        if sequence != self._sequence:
            raise MessageError(f"frame {sequence} where frame {self._sequence} belongs: "
                               "frames were reordered, dropped or duplicated")
        iv = self._read(IV_BYTES)
        if iv != sequence.to_bytes(IV_BYTES, "big"):
            raise MessageError(f"frame {sequence} has an unexpected IV")
        length = struct.unpack(">I", self._read(4))[0] if final else self._frame_length
        if length > self._frame_length:
            raise MessageError(f"final frame {sequence} is longer than a frame")
        try:
            plaintext = self._aead.decrypt(iv, self._read(length + TAG_BYTES),
                                           _frame_aad(self._message_id, sequence, length, final))
        except InvalidTag:  # the frame was altered
            raise MessageError(f"frame {sequence} failed authentication") from None
        self._sequence += 1
        if final:
            self._finished = True
            if self._source.read(1):
                raise MessageError("bytes follow the final frame")
        return plaintext
