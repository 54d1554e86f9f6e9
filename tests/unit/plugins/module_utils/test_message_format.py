"""Our frame writer against the AWS Encryption SDK's reader: every boundary case."""

import io
import os

import aws_encryption_sdk
import pytest
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy

from tests.engine import keys, message_format

FRAME = 4096
CONTEXT = {"cosmic-backup:backup": "b", "cosmic-backup:object": "o"}


@pytest.fixture(scope="module")
def provider():
    return keys.LocalKey.generate().master_key_provider()


def encrypt(data: bytes, provider) -> bytes:
    out = io.BytesIO()
    size = message_format.encrypt_stream(io.BytesIO(data), provider, CONTEXT, out.write, FRAME)
    assert size == len(out.getvalue())
    return out.getvalue()


def sdk_decrypt(message: bytes, provider):
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    return client.decrypt(source=message, key_provider=provider)


@pytest.mark.parametrize("size", [0, 1, FRAME - 1, FRAME, FRAME + 1, 3 * FRAME, 3 * FRAME + 7])
def test_the_sdk_decrypts_every_length(provider, size):
    data = os.urandom(size)
    plaintext, header = sdk_decrypt(encrypt(data, provider), provider)
    assert plaintext == data
    assert header.algorithm == Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
    assert header.frame_length == FRAME
    assert header.encryption_context.items() >= CONTEXT.items()


def test_same_size_as_the_sdks_own_message(provider):
    """Byte for byte the same layout: only the random parts differ."""
    data = os.urandom(2 * FRAME + 100)
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    theirs, _ = client.encrypt(source=data, key_provider=provider, frame_length=FRAME,
                               encryption_context=CONTEXT,
                               algorithm=Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY)
    assert len(encrypt(data, provider)) == len(theirs)


def test_short_reads_from_the_source_still_make_full_frames(provider):
    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self.data = data

        def readable(self):
            return True

        def read(self, size=-1):
            step = min(100, size)
            chunk, self.data = self.data[:step], self.data[step:]
            return chunk

    data = os.urandom(5 * FRAME + 3)
    out = io.BytesIO()
    message_format.encrypt_stream(Trickle(data), provider, CONTEXT, out.write, FRAME)
    assert sdk_decrypt(out.getvalue(), provider)[0] == data


def test_a_dropped_frame_is_detected(provider):
    message = bytearray(encrypt(os.urandom(3 * FRAME + 5), provider))
    frame_size = 4 + 12 + FRAME + 16
    final_and_tail = 4 + 4 + 12 + 4 + 5 + 16
    start = len(message) - final_and_tail - frame_size
    del message[start : start + frame_size]  # remove the third frame
    with pytest.raises(Exception):  # noqa: B017 - the SDK's own error types vary
        sdk_decrypt(bytes(message), provider)


def read_body(message: bytes, provider) -> bytes:
    """Our frame reader behind the SDK's header check, as sealing.py uses it."""
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    source = io.BytesIO(message)
    decryptor = client.stream(mode="d", source=source, key_provider=provider)
    frames = message_format.open_framed_body(decryptor, source)
    assert frames is not None, "fell back to the SDK's frame loop"
    return b"".join(iter(frames.next_frame, b""))


@pytest.mark.parametrize("size", [0, 1, FRAME - 1, FRAME, FRAME + 1, 3 * FRAME + 7])
def test_our_reader_reads_what_the_sdk_writes(provider, size):
    data = os.urandom(size)
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    message, _header = client.encrypt(source=data, key_provider=provider, frame_length=FRAME,
                                      encryption_context=CONTEXT,
                                      algorithm=Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY)
    assert read_body(message, provider) == data
    assert read_body(encrypt(data, provider), provider) == data


def frames_of(message: bytes, count: int):
    """Split a message of ``count`` full frames and a final one into its parts."""
    frame_size = 4 + 12 + FRAME + 16
    body_start = len(message) - count * frame_size - (4 + 4 + 12 + 4 + 16)
    assert message[body_start + count * frame_size:].startswith(b"\xff\xff\xff\xff")
    full = [message[body_start + i * frame_size: body_start + (i + 1) * frame_size]
            for i in range(count)]
    return message[:body_start], full, message[body_start + count * frame_size:]


@pytest.mark.parametrize("damage", ["swap frames", "drop final frame", "duplicate a frame",
                                    "trailing bytes", "flip a tag bit", "flip a length bit"])
def test_our_reader_refuses_a_damaged_body(provider, damage):
    message = encrypt(os.urandom(3 * FRAME), provider)  # three full frames, empty final
    head, full, final = frames_of(message, 3)
    damaged = {
        "swap frames": head + full[1] + full[0] + full[2] + final,
        "drop final frame": head + b"".join(full),
        "duplicate a frame": head + full[0] + full[0] + full[1] + full[2] + final,
        "trailing bytes": message + b"\0",
        "flip a tag bit": message[:-1] + bytes([message[-1] ^ 1]),
        "flip a length bit": head + b"".join(full) + final[:23] + bytes([final[23] ^ 1])
        + final[24:],
    }[damage]
    with pytest.raises(message_format.FrameBodyError):
        read_body(damaged, provider)
