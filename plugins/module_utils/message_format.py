"""The body of an AWS Encryption SDK message, written without the SDK's copies.

The SDK builds everything that needs judgement: the data key and its wrapped
copies (through the key provider), the key derivation, the key commitment,
the header and its authentication tag. This module only writes the framed
body as the message format specifies it (each frame: sequence number, IV,
AES-256-GCM ciphertext and tag over an AAD of message id, content string,
sequence number and length). The SDK's own frame loop copies every byte about
six times, which made encryption the slowest stage of a backup. Tests check
that the SDK and its CLI decrypt what this writes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import BinaryIO

try:
    from aws_encryption_sdk.identifiers import (
        Algorithm,
        CommitmentPolicy,
        ContentAADString,
        ContentType,
        SerializationVersion,
    )
    from aws_encryption_sdk.internal.crypto.data_keys import (
        calculate_commitment_key,
        derive_data_encryption_key,
    )
    from aws_encryption_sdk.internal.defaults import MAX_FRAME_COUNT
    from aws_encryption_sdk.internal.formatting.serialize import (
        serialize_header,
        serialize_header_auth,
    )
    from aws_encryption_sdk.internal.utils import message_id as new_message_id
    from aws_encryption_sdk.materials_managers import EncryptionMaterialsRequest
    from aws_encryption_sdk.materials_managers.default import DefaultCryptoMaterialsManager
    from aws_encryption_sdk.structures import MessageHeader
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError:  # sealing.py reports the missing SDK
    Algorithm = None

FINAL_FRAME_MARKER = b"\xff\xff\xff\xff"


def _read_frame(source: BinaryIO, size: int) -> bytes:
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


def encrypt_stream(source: BinaryIO, key_provider, encryption_context: Mapping[str, str],
                   write: Callable[[bytes], None], frame_length: int) -> int:
    """Write one framed, key-committing, unsigned message of ``source``; returns its size."""
    algorithm = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
    materials = DefaultCryptoMaterialsManager(master_key_provider=key_provider) \
        .get_encryption_materials(EncryptionMaterialsRequest(
            encryption_context=dict(encryption_context),
            frame_length=frame_length,
            algorithm=algorithm,
            commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
        ))
    if materials.signing_key is not None or materials.algorithm != algorithm:
        raise ValueError(f"the key provider chose {materials.algorithm}, not {algorithm}")
    message_id = new_message_id(algorithm.message_id_length())
    data_key = materials.data_encryption_key.data_key
    header = serialize_header(header=MessageHeader(
        version=SerializationVersion.V2,
        algorithm=algorithm,
        message_id=message_id,
        encryption_context=materials.encryption_context,
        encrypted_data_keys=materials.encrypted_data_keys,
        content_type=ContentType.FRAMED_DATA,
        frame_length=frame_length,
        commitment_key=calculate_commitment_key(data_key, algorithm, message_id),
    ), signer=None)
    derived_key = derive_data_encryption_key(data_key, algorithm, message_id)
    header += serialize_header_auth(version=SerializationVersion.V2, algorithm=algorithm,
                                    header=header, data_encryption_key=derived_key, signer=None)
    write(header)
    written = len(header)

    aead = AESGCM(derived_key)
    sequence = 1
    chunk = _read_frame(source, frame_length)
    while True:
        # A frame is final when the plaintext ends inside it; a stream that ends
        # on a frame boundary gets an empty final frame, as the SDK writes it.
        following = _read_frame(source, frame_length) if len(chunk) == frame_length else b""
        final = len(chunk) < frame_length
        if sequence > MAX_FRAME_COUNT:
            raise ValueError("the stream is longer than one message can hold")
        iv = sequence.to_bytes(algorithm.iv_len, "big")
        content_string = (ContentAADString.FINAL_FRAME_STRING_ID if final
                          else ContentAADString.FRAME_STRING_ID).value
        aad = message_id + content_string + struct.pack(">IQ", sequence, len(chunk))
        sealed = aead.encrypt(iv, chunk, aad)  # ciphertext then the 16-byte tag
        if final:
            prefix = b"".join((FINAL_FRAME_MARKER, struct.pack(">I", sequence), iv,
                               struct.pack(">I", len(chunk))))
        else:
            prefix = struct.pack(">I", sequence) + iv
        write(prefix)  # two writes: joining would copy the megabyte once more
        write(sealed)
        written += len(prefix) + len(sealed)
        if final:
            return written
        chunk = following
        sequence += 1


class FrameBodyError(Exception):
    """The framed body does not authenticate or is malformed."""


class FrameReader:
    """Plaintext of a framed body, frame by frame, after the SDK has read and
    authenticated the header (and checked the key commitment).

    Each frame is authenticated before its plaintext is returned; the body must
    end with exactly one final frame and nothing after it.
    """

    def __init__(self, source: BinaryIO, header, derived_key: bytes):
        self._source = source
        self._algorithm = header.algorithm
        self._message_id = header.message_id
        self._frame_length = header.frame_length
        self._aead = AESGCM(derived_key)
        self._sequence = 1
        self._finished = False

    def _read(self, size: int) -> bytes:
        data = _read_frame(self._source, size)
        if len(data) != size:
            raise FrameBodyError(f"the message ends inside frame {self._sequence}: truncated")
        return data

    def next_frame(self) -> bytes:
        """The next frame's plaintext; b"" once the final frame was read."""
        if self._finished:
            return b""
        iv_len, tag_len = self._algorithm.iv_len, self._algorithm.auth_len
        marker = self._read(4)
        final = marker == FINAL_FRAME_MARKER
        sequence = struct.unpack(">I", self._read(4) if final else marker)[0]
        if sequence != self._sequence:
            raise FrameBodyError(f"frame {sequence} where frame {self._sequence} belongs: "
                                 "frames were reordered, dropped or duplicated")
        iv = self._read(iv_len)
        if iv != sequence.to_bytes(iv_len, "big"):
            raise FrameBodyError(f"frame {sequence} has an unexpected IV")
        length = struct.unpack(">I", self._read(4))[0] if final else self._frame_length
        if length > self._frame_length:
            raise FrameBodyError(f"final frame {sequence} is longer than a frame")
        content_string = (ContentAADString.FINAL_FRAME_STRING_ID if final
                          else ContentAADString.FRAME_STRING_ID).value
        aad = self._message_id + content_string + struct.pack(">IQ", sequence, length)
        try:
            plaintext = self._aead.decrypt(iv, self._read(length + tag_len), aad)
        except InvalidTag:  # the frame was altered
            raise FrameBodyError(f"frame {sequence} failed authentication") from None
        self._sequence += 1
        if final:
            self._finished = True
            if self._source.read(1):
                raise FrameBodyError("bytes follow the final frame")
        return plaintext


def open_framed_body(decryptor, source: BinaryIO) -> FrameReader | None:
    """A fast FrameReader for messages in the format this tool writes, or None
    (other suites, signed or unframed messages) to let the SDK read the body.

    ``decryptor`` is the SDK's stream decryptor over ``source``; reading its
    header has authenticated the header and checked the key commitment.
    """
    header = decryptor.header
    key = getattr(decryptor, "_derived_data_key", None)  # the SDK keeps no public name for it
    if (header.algorithm != Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
            or header.content_type != ContentType.FRAMED_DATA
            or getattr(decryptor, "verifier", None) is not None or key is None):
        return None
    return FrameReader(source, header, key)
