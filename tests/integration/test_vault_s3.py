"""The engine on S3 and KMS over HTTP: moto's server on 127.0.0.1, nothing mocked
inside this process."""

import hashlib
import io
import os
import subprocess
import sys

import boto3
import pytest

from tests.engine import errors, keys, settings, storage_s3

MIB = 1 << 20


@pytest.fixture
def s3(moto_server):
    return boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="eu-west-1")


@pytest.fixture
def buckets(s3, request):
    names = []
    for role in ("primary", "secondary"):
        name = f"cosmic-{role}-{abs(hash(request.node.name)) % 10**8}"
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"},
                         ObjectLockEnabledForBucket=True)
        names.append(name)
    return names


@pytest.fixture
def kms_keys(moto_server):
    """One key per region, as production has them."""
    arns = []
    for region in ("eu-west-1", "eu-central-1"):
        kms = boto3.client("kms", endpoint_url=moto_server.endpoint_url, region_name=region)
        arns.append(kms.create_key(Description=f"cosmic-backup {region}")["KeyMetadata"]["Arn"])
    return arns


@pytest.fixture
def s3_settings(moto_server, buckets, kms_keys, tmp_path):
    return {
        "repositories": [
            {"name": "primary", "url": f"s3://{buckets[0]}/cosmic", "region": "eu-west-1",
             "endpoint_url": moto_server.endpoint_url, "part_size": 5 * MIB},
            {"name": "secondary", "url": f"s3://{buckets[1]}/cosmic", "region": "eu-central-1",
             "endpoint_url": moto_server.endpoint_url, "part_size": 5 * MIB},
        ],
        "keys": {"kms_key_arns": kms_keys, "kms_endpoint_url": moto_server.endpoint_url},
        "audit_log": str(tmp_path / "audit.jsonl"),
    }


def backup(vault, data, name="dump"):
    with vault.new_backup("database") as writer:
        writer.add_stream(name, io.BytesIO(data))
    return writer


def restore(vault, name="dump"):
    ref = vault.select("latest", "database")
    with vault.open_object(ref, name) as plain:
        return plain.read(), plain


def test_multipart_round_trip_with_kms(s3_settings, s3, buckets, kms_keys):
    data = os.urandom(23 * MIB + 12345)  # several 5 MiB parts, the last one short
    vault = settings.build_vault(s3_settings)
    writer = backup(vault, data)
    assert writer.warnings == []
    key = f"cosmic/backups/database/{writer.id}/data/dump"
    for bucket in buckets:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert "-" in head["ETag"]  # a multipart upload
    assert restore(vault)[0] == data
    manifest = vault.manifest(vault.select(writer.id))
    assert manifest["keys"] == kms_keys


def test_each_region_key_alone_can_decrypt(s3_settings, kms_keys, moto_server):
    """The data key is wrapped by both regions' keys: losing one region loses nothing."""
    data = os.urandom(2 * MIB)
    backup(settings.build_vault(s3_settings), data)
    for arn in kms_keys:
        only_one = dict(s3_settings, keys={"kms_key_arns": [arn],
                                           "kms_endpoint_url": moto_server.endpoint_url})
        assert restore(settings.build_vault(only_one))[0] == data


def test_disabled_primary_region_key_falls_back_to_the_secondary_key(
        s3_settings, kms_keys, moto_server):
    data = b"rows" * 1000
    backup(settings.build_vault(s3_settings), data)
    kms = boto3.client("kms", endpoint_url=moto_server.endpoint_url, region_name="eu-west-1")
    kms.disable_key(KeyId=kms_keys[0].split("/")[-1])
    try:
        assert restore(settings.build_vault(s3_settings))[0] == data
    finally:
        kms.enable_key(KeyId=kms_keys[0].split("/")[-1])


def test_a_key_that_did_not_seal_it_is_named(s3_settings, moto_server):
    backup(settings.build_vault(s3_settings), b"x" * 100)
    kms = boto3.client("kms", endpoint_url=moto_server.endpoint_url, region_name="eu-west-1")
    stranger = kms.create_key()["KeyMetadata"]["Arn"]
    other = dict(s3_settings, keys={"kms_key_arns": [stranger],
                                    "kms_endpoint_url": moto_server.endpoint_url})
    with pytest.raises(errors.KeyUnavailable, match="it was sealed for arn:aws:kms"):
        restore(settings.build_vault(other))


def test_tampered_primary_object_falls_back_to_the_secondary(s3_settings, s3, buckets):
    data = os.urandom(7 * MIB)
    vault = settings.build_vault(s3_settings)
    writer = backup(vault, data)
    key = f"cosmic/backups/database/{writer.id}/data/dump"
    stored = bytearray(s3.get_object(Bucket=buckets[0], Key=key)["Body"].read())
    stored[len(stored) // 2] ^= 1
    s3.put_object(Bucket=buckets[0], Key=key, Body=bytes(stored))  # a new version
    report = vault.verify(vault.select(writer.id))
    assert report.first_failure().repository == "primary"
    assert report.first_failure().name == "dump"
    data_back, plain = restore(vault)
    assert data_back == data and plain.used == "secondary"


def test_s3_and_local_mixed(s3_settings, tmp_path):
    """A local primary with an S3 secondary (or the reverse) is just configuration."""
    s3_settings["repositories"][0] = {"name": "primary", "url": str(tmp_path / "local")}
    vault = settings.build_vault(s3_settings)
    data = os.urandom(MIB)
    writer = backup(vault, data)
    assert set(vault.list()[0].copies) == {"primary", "secondary"}
    assert vault.verify(vault.select(writer.id)).ok


def test_unreachable_primary_is_one_clear_error(s3_settings):
    s3_settings["repositories"][0]["endpoint_url"] = "http://127.0.0.1:9"
    vault = settings.build_vault(s3_settings)
    with pytest.raises(errors.StorageError, match="is not reachable"):
        backup(vault, b"data")
    assert settings.build_vault(dict(s3_settings, repositories=s3_settings["repositories"][1:])
                                ).list() == []


def test_reads_survive_an_unreachable_primary(s3_settings):
    data = os.urandom(MIB)
    backup(settings.build_vault(s3_settings), data)
    s3_settings["repositories"][0]["endpoint_url"] = "http://127.0.0.1:9"
    data_back, plain = restore(settings.build_vault(s3_settings))
    assert data_back == data and plain.used == "secondary"


def test_interrupted_multipart_upload_is_aborted_by_cleanup(s3_settings, s3, buckets):
    vault = settings.build_vault(s3_settings)
    primary = vault.primary.storage
    writer = primary.writer("backups/database/20260101T000000.000Z-database-aaaaaa/data/x")
    writer.write(os.urandom(6 * MIB))  # one part uploaded, then the process "dies"
    assert s3.list_multipart_uploads(Bucket=buckets[0]).get("Uploads")
    assert vault.list() == []
    removed = vault.remove_incomplete(older_than=0)
    assert any(item.endswith("/data/x") for item in removed)
    assert not s3.list_multipart_uploads(Bucket=buckets[0]).get("Uploads")


def test_object_lock_keeps_a_locked_version(s3_settings, s3, buckets):
    """With a default retention on the bucket, backups cannot be destroyed by the writer."""
    s3.put_object_lock_configuration(Bucket=buckets[0], ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    vault = settings.build_vault(s3_settings)
    writer = backup(vault, os.urandom(MIB))
    key = f"cosmic/backups/database/{writer.id}/data/dump"
    version = s3.head_object(Bucket=buckets[0], Key=key)["VersionId"]
    with pytest.raises(s3.exceptions.ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=buckets[0], Key=key, VersionId=version)
    assert vault.verify(vault.select(writer.id)).ok


PEAK_RSS_SCRIPT = """
import hashlib, io, sys
import yaml
from ansible_collections.cosmic.backup.plugins.module_utils import settings

vault = settings.build_vault(yaml.safe_load(open(sys.argv[1])))
size = int(sys.argv[2]) << 20


class Source(io.RawIOBase):
    def __init__(self):
        self.left = size
        self.digest = hashlib.sha256()

    def readable(self):
        return True

    def read(self, n=-1):
        n = min(n if n > 0 else 1 << 20, self.left)
        chunk = (hashlib.sha256(str(self.left).encode()).digest() * (n // 32 + 1))[:n]
        self.left -= n
        self.digest.update(chunk)
        return chunk


source = Source()
with vault.new_backup("database") as writer:
    writer.add_stream("big", source)
digest = hashlib.sha256()
with vault.open_object(vault.select(writer.id), "big") as plain:
    while chunk := plain.read(1 << 20):
        digest.update(chunk)
assert digest.hexdigest() == source.digest.hexdigest()
# VmHWM, not getrusage: ru_maxrss carries the parent's peak across fork and exec.
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


@pytest.mark.slow
def test_memory_stays_flat_whatever_the_size(s3_settings, tmp_path):
    """Round trips of 64 MiB and 512 MiB through two S3 repositories, each in a
    fresh process: the larger one needs no more memory than the smaller."""
    import yaml

    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(s3_settings))

    def peak_mib(size_mib: int) -> int:
        result = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT, str(config),
                                 str(size_mib)], capture_output=True, text=True, check=True,
                                timeout=600)
        return int(result.stdout.split()[-1]) // 1024

    small, large = peak_mib(64), peak_mib(512)
    assert large < small + 48, f"peak RSS grew from {small} MiB to {large} MiB"
    assert large < 256, f"peak RSS {large} MiB"


def test_s3_reader_prefetch_is_bounded(s3_settings):
    vault = settings.build_vault(s3_settings)
    storage = vault.primary.storage
    assert isinstance(storage, storage_s3.S3Storage)
    writer = storage.writer("plain/object")
    data = os.urandom(12 * MIB)
    writer.write(data)
    writer.commit()
    with storage.reader("plain/object") as reader:
        assert len(reader._pending) <= storage.concurrency
        assert hashlib.sha256(reader.read()).digest() == hashlib.sha256(data).digest()


def test_local_key_and_s3(s3_settings, tmp_path):
    key_file = tmp_path / "master.key"
    keys.LocalKey.generate().save(str(key_file))
    s3_settings["keys"] = {"local_key_file": str(key_file)}
    data = os.urandom(MIB)
    backup(settings.build_vault(s3_settings), data)
    assert restore(settings.build_vault(s3_settings))[0] == data


def test_replicated_secondary_is_read_but_never_written(s3_settings, s3, buckets):
    """As in production: S3 replication fills the secondary; the tool only reads it."""
    s3_settings["repositories"][1]["replicated"] = True
    vault = settings.build_vault(s3_settings)
    data = os.urandom(MIB)
    writer = backup(vault, data)
    assert writer.warnings == []
    assert s3.list_objects_v2(Bucket=buckets[1]).get("KeyCount", 0) == 0
    # Replication (here: a copy) brings the objects over; then reads fail over to them.
    for item in s3.list_objects_v2(Bucket=buckets[0])["Contents"]:
        s3.copy_object(Bucket=buckets[1], Key=item["Key"],
                       CopySource={"Bucket": buckets[0], "Key": item["Key"]})
    s3.delete_object(Bucket=buckets[0], Key=f"cosmic/backups/database/{writer.id}/data/dump")
    data_back, plain = restore(vault)
    assert data_back == data and plain.used == "secondary"


def test_primary_cannot_be_a_replica(s3_settings):
    s3_settings["repositories"][0]["replicated"] = True
    with pytest.raises(errors.BackupError, match="cannot be a replica"):
        settings.build_vault(s3_settings)
