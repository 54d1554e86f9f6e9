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
