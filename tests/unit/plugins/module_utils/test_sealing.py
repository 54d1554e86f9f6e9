import hashlib
import io
import os
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import aws_encryption_sdk
import pytest
import zstandard
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy

from tests.engine import compression, errors, keys, sealing
from tests.unit.plugins.module_utils.test_message_format import sdk_raw_key

CONTEXT = sealing.encryption_context("20260101T000000.000Z-files-aaaaaa", "data")


def sealed(data: bytes, key, source=None) -> bytes:
    out = io.BytesIO()
    result = sealing.seal(source or io.BytesIO(data), key, CONTEXT, out.write)
    assert result.size == len(data)
    assert result.zstd_checksum == zstd_check(out.getvalue(), key)
    assert result.stored_size == len(out.getvalue())
    return out.getvalue()


def zstd_check(stored: bytes, key) -> str:
    """The content checksum as the zstd command prints it, from the SDK's decryption."""
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    compressed, _header = client.decrypt(source=stored, key_provider=sdk_raw_key(key))
    with tempfile.NamedTemporaryFile(suffix=".zst") as file:  # zstd -l reads no pipe
        file.write(compressed)
        file.flush()
        listing = subprocess.run(["zstd", "-lv", file.name], capture_output=True,
                                 check=True).stdout.decode()
    return re.search(r"Check: XXH64 ([0-9a-f]{8})", listing).group(1)


def opened(stored: bytes, key, context=CONTEXT, **expected) -> bytes:
    expected.setdefault("expected_size", None)
    expected.setdefault("expected_sha256", None)
    with sealing.OpenedObject(io.BytesIO(stored), key, context, where="test object",
                              **expected) as plain:
        return plain.read()


@pytest.fixture(scope="module")
def key():
    return keys.LocalKey.generate()


@pytest.fixture(scope="module")
def mixed_data():
    text = b"".join(b"2026-04-06 03:00:%02d GET /api/posts/%d 200\n" % (i % 60, i)
                    for i in range(80_000))
    return os.urandom(3 << 20) + text + b"" + os.urandom(1234)


def test_round_trip(key, mixed_data):
    stored = sealed(mixed_data, key)
    assert opened(stored, key, expected_size=len(mixed_data),
                  expected_zstd_checksum=zstd_check(stored, key)) == mixed_data


def test_a_version_1_sha256_is_still_checked(key, mixed_data):
    stored = sealed(mixed_data, key)
    assert opened(stored, key, expected_sha256=hashlib.sha256(mixed_data).hexdigest()) \
        == mixed_data


@pytest.mark.parametrize("kind", ["file", "pipe"])
def test_unbuffered_sources_bypass_python(key, mixed_data, tmp_path, kind):
    """Bytes zstd reads itself (a file) or that are spliced into it (a pipe),
    never through Python, are counted and sealed all the same."""
    if kind == "file":
        (tmp_path / "data").write_bytes(mixed_data)
        source = open(tmp_path / "data", "rb", buffering=0)  # noqa: SIM115
    else:
        writer = subprocess.Popen(["cat", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  bufsize=0)
        source = writer.stdout
        feeding = threading.Thread(
            target=lambda: (writer.stdin.write(mixed_data), writer.stdin.close()))
        feeding.start()
    assert compression.splice_source(source) is not None
    with source:
        stored = sealed(mixed_data, key, source)
    if kind == "pipe":
        feeding.join()
        writer.wait()
    assert opened(stored, key, expected_size=len(mixed_data)) == mixed_data


class SlowKey:
    """A key whose data keys take a while, as a KMS round trip does; it notes
    whether a zstd process was running meanwhile."""

    def __init__(self, key):
        self.key = key
        self.zstd_was_running = False

    def new_data_key(self, context):
        deadline = time.monotonic() + 5
        while not self.zstd_was_running and time.monotonic() < deadline:
            self.zstd_was_running = any(
                Path(f"/proc/{pid}/comm").read_text().strip() == "zstd"
                for pid in Path(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/children")
                .read_text().split())
            time.sleep(0.01)
        return self.key.new_data_key(context)


def test_zstd_compresses_while_the_data_key_is_made(key, mixed_data):
    slow, out = SlowKey(key), io.BytesIO()
    sealing.seal(io.BytesIO(mixed_data), slow, CONTEXT, out.write)
    assert slow.zstd_was_running
    assert opened(out.getvalue(), key, expected_size=len(mixed_data)) == mixed_data


def test_a_file_is_sealed_from_where_its_offset_stands(key, mixed_data, tmp_path):
    """zstd reads the file itself: only what lies past the offset is sealed and counted."""
    (tmp_path / "data").write_bytes(b"already read" + mixed_data)
    with open(tmp_path / "data", "rb", buffering=0) as source:
        source.read(len(b"already read"))
        stored = sealed(mixed_data, key, source)
    assert opened(stored, key, expected_size=len(mixed_data)) == mixed_data


def test_empty_object(key):
    assert opened(sealed(b"", key), key) == b""


def test_format_is_the_encryption_sdk_message_with_zstd_inside(key, mixed_data):
    """Standard tools open it: the SDK alone decrypts, zstd alone decompresses."""
    stored = sealed(mixed_data, key)
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    compressed, header = client.decrypt(source=stored, key_provider=sdk_raw_key(key))
    assert header.algorithm == Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
    assert header.frame_length >= 1 << 20
    assert header.encryption_context.items() >= CONTEXT.items()
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(compressed)).read() == mixed_data
    assert len(stored) < len(mixed_data)  # the text part compressed


def test_every_object_gets_a_fresh_data_key(key):
    first, second = sealed(b"same bytes" * 1000, key), sealed(b"same bytes" * 1000, key)
    assert first != second


@pytest.mark.parametrize("where", ["header", "middle", "last byte"])
def test_a_flipped_byte_fails_authentication(key, mixed_data, where):
    stored = bytearray(sealed(mixed_data, key))
    position = {"header": 40, "middle": len(stored) // 2, "last byte": len(stored) - 1}[where]
    stored[position] ^= 0x01
    with pytest.raises((errors.IntegrityError, errors.KeyUnavailable)):
        opened(bytes(stored), key)


def test_truncated_object_fails(key, mixed_data):
    stored = sealed(mixed_data, key)
    with pytest.raises(errors.IntegrityError):
        opened(stored[: len(stored) - 100], key)


def test_wrong_key_names_the_keys(key, mixed_data):
    other = keys.LocalKey.generate()
    with pytest.raises(errors.KeyUnavailable, match=other.key_id):
        opened(sealed(mixed_data, key), other)


def test_swapped_object_is_detected(key):
    stored = sealed(b"payroll", key)
    other_place = sealing.encryption_context("20260101T000000.000Z-files-aaaaaa", "other")
    with pytest.raises(errors.IntegrityError, match="moved or swapped"):
        opened(stored, key, other_place)


def test_manifest_mismatch_is_detected(key):
    stored = sealed(b"abc", key)
    with pytest.raises(errors.IntegrityError, match="manifest says 4"):
        opened(stored, key, expected_size=4)
    with pytest.raises(errors.IntegrityError, match="SHA-256"):
        opened(stored, key, expected_sha256="0" * 64)
    with pytest.raises(errors.IntegrityError,
                       match=r"zstd checksum [0-9a-f]{8}, the manifest says 00000000"):
        opened(stored, key, expected_zstd_checksum="00000000")


def test_wrapping_key_ids_reads_the_header_only(key):
    stored = sealed(b"abc", key)
    header = sealing.read_header(io.BytesIO(stored))
    assert sealing.wrapping_key_ids(header) == [key.key_id]


def test_reading_errors_reach_the_caller(key):
    class Broken(io.RawIOBase):
        def readable(self):
            return True

        def read(self, size=-1):
            raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        sealing.seal(Broken(), key, CONTEXT, lambda chunk: None)


def test_writing_errors_reach_the_caller(key, mixed_data):
    def refuse(chunk):
        raise errors.StorageError("quota exceeded")

    with pytest.raises(errors.StorageError, match="quota exceeded"):
        sealing.seal(io.BytesIO(mixed_data), key, CONTEXT, refuse)
