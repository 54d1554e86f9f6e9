"""Our message writer and reader against the AWS Encryption SDK: every boundary
case, in both directions, with the local key wrapped as the SDK's raw AES keyring."""

import io
import os

import aws_encryption_sdk
import pytest
from aws_encryption_sdk.identifiers import (
    Algorithm,
    CommitmentPolicy,
    EncryptionKeyType,
    WrappingAlgorithm,
)
from aws_encryption_sdk.key_providers.raw import RawMasterKey, WrappingKey

from tests.engine import errors, keys, message_format

FRAME = 4096
CONTEXT = {"cosmic-backup:backup": "b", "cosmic-backup:object": "o"}


@pytest.fixture(scope="module")
def key():
    return keys.LocalKey.generate()


def sdk_raw_key(key):
    """The local key as the SDK's raw AES keyring sees it."""
    return RawMasterKey(
        provider_id=keys.LOCAL_PROVIDER_ID, key_id=key.key_id.encode(),
        wrapping_key=WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            wrapping_key=key.key, wrapping_key_type=EncryptionKeyType.SYMMETRIC))


@pytest.fixture(scope="module")
def provider(key):
    return sdk_raw_key(key)


def encrypt(data: bytes, key, context=CONTEXT) -> bytes:
    out = io.BytesIO()
    data_key, wrapped = key.new_data_key(context)
    size = message_format.encrypt_stream(io.BytesIO(data), data_key, wrapped, context,
                                         out.write, FRAME)
    assert size == len(out.getvalue())
    return out.getvalue()


def sdk_client():
    return aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)


def sdk_decrypt(message: bytes, provider):
    return sdk_client().decrypt(source=message, key_provider=provider)


def sdk_encrypt(data: bytes, provider, context=CONTEXT) -> bytes:
    return sdk_client().encrypt(source=data, key_provider=provider, frame_length=FRAME,
                                encryption_context=context,
                                algorithm=Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY)[0]


def read_message(message: bytes, key) -> bytes:
    """Header, key commitment and every frame, as sealing.py reads them."""
    source = io.BytesIO(message)
    header = message_format.read_header(source)
    frames = message_format.FrameReader(
        source, header, message_format.frame_key(header, key.unwrap(header)))
    return b"".join(iter(frames.next_frame, b""))


@pytest.mark.parametrize("size", [0, 1, FRAME - 1, FRAME, FRAME + 1, 3 * FRAME, 3 * FRAME + 7])
def test_the_sdk_decrypts_every_length(key, provider, size):
    data = os.urandom(size)
    plaintext, header = sdk_decrypt(encrypt(data, key), provider)
    assert plaintext == data
    assert header.algorithm == Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
    assert header.frame_length == FRAME
    assert header.encryption_context.items() >= CONTEXT.items()


def test_same_layout_as_the_sdks_own_message(key, provider):
    """Field for field the same header: only the random parts differ."""
    data = os.urandom(2 * FRAME + 100)
    ours = message_format.read_header(io.BytesIO(encrypt(data, key)))
    theirs_message = sdk_encrypt(data, provider)
    theirs = message_format.read_header(io.BytesIO(theirs_message))
    assert len(encrypt(data, key)) == len(theirs_message)
    assert (ours.encryption_context, ours.frame_length) == (theirs.encryption_context, FRAME)
    assert [(w.provider_id, w.key_info[:-12], len(w.ciphertext))
            for w in ours.encrypted_data_keys] == \
        [(w.provider_id, w.key_info[:-12], len(w.ciphertext))
         for w in theirs.encrypted_data_keys]


def test_short_reads_from_the_source_still_make_full_frames(key, provider):
    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self.data = data

        def readable(self):
            return True

        def readinto(self, buffer):
            step = min(100, len(buffer))
            chunk, self.data = self.data[:step], self.data[step:]
            buffer[:len(chunk)] = chunk
            return len(chunk)

    data = os.urandom(5 * FRAME + 3)
    out = io.BytesIO()
    data_key, wrapped = key.new_data_key(CONTEXT)
    message_format.encrypt_stream(Trickle(data), data_key, wrapped, CONTEXT, out.write, FRAME)
    assert sdk_decrypt(out.getvalue(), provider)[0] == data


def test_a_dropped_frame_is_detected(key, provider):
    message = bytearray(encrypt(os.urandom(3 * FRAME + 5), key))
    frame_size = 4 + 12 + FRAME + 16
    final_and_tail = 4 + 4 + 12 + 4 + 5 + 16
    start = len(message) - final_and_tail - frame_size
    del message[start : start + frame_size]  # remove the third frame
    with pytest.raises(Exception):  # noqa: B017 - the SDK's own error types vary
        sdk_decrypt(bytes(message), provider)


@pytest.mark.parametrize("size", [0, 1, FRAME - 1, FRAME, FRAME + 1, 3 * FRAME + 7])
def test_we_read_what_the_sdk_writes(key, provider, size):
    data = os.urandom(size)
    assert read_message(sdk_encrypt(data, provider), key) == data
    assert read_message(encrypt(data, key), key) == data


def test_an_empty_encryption_context_round_trips(key, provider):
    assert sdk_decrypt(encrypt(b"x", key, {}), provider)[0] == b"x"
    assert read_message(sdk_encrypt(b"x", provider, {}), key) == b"x"


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
def test_our_reader_refuses_a_damaged_body(key, damage):
    message = encrypt(os.urandom(3 * FRAME), key)  # three full frames, empty final
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
    with pytest.raises(message_format.MessageError):
        read_message(damaged, key)


def header_fields(message: bytes):
    """Offsets of a one-key header: context, wrapped key, frame length, commitment, tag."""
    header = message_format.read_header(io.BytesIO(message))
    context_end = 1 + 2 + 32 + 2 + len(message_format.serialize_context(CONTEXT))
    return header, context_end


@pytest.mark.parametrize("damage", ["version", "suite", "message id", "context",
                                    "wrapped key", "frame length", "commitment", "tag",
                                    "truncated header", "nine wrapped keys"])
def test_our_reader_refuses_a_damaged_header(key, damage):
    message = encrypt(b"payroll" * 100, key)
    header, context_end = header_fields(message)
    body_end = len(header.body)

    def flip(offset):
        return message[:offset] + bytes([message[offset] ^ 1]) + message[offset + 1:]

    damaged = {
        "version": flip(0), "suite": flip(2), "message id": flip(10),
        "context": flip(context_end - 1), "wrapped key": flip(context_end + 2 + 10),
        "frame length": flip(body_end - 32 - 1), "commitment": flip(body_end - 1),
        "tag": flip(body_end + 3), "truncated header": message[:body_end + 5],
        "nine wrapped keys": message[:context_end] + b"\x00\x09" + message[context_end + 2:],
    }[damage]
    with pytest.raises((message_format.MessageError, errors.KeyUnavailable)):
        read_message(damaged, key)


def test_kms_data_keys_are_made_for_the_suite_we_write():
    from tests.engine import kms_wrapping

    assert kms_wrapping._algorithm() == Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
    assert kms_wrapping._algorithm().algorithm_id == message_format.SUITE_ID
