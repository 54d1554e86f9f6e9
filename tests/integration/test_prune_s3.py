"""Pruning on S3 (moto's server on loopback): versioned buckets and Object Lock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import boto3
import pytest
from ansible_collections.cosmic.backup.plugins.module_utils import pruning, retention, settings

from tests.integration.backdated import backup_at

NOW = datetime(2025, 4, 6, 3, 0, tzinfo=timezone.utc)


@pytest.fixture
def s3(moto_server):
    return boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="eu-west-1")


def make_bucket(s3, name: str, lock_days: int | None) -> str:
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"},
                     ObjectLockEnabledForBucket=True)
    if lock_days:
        s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": lock_days}}})
    return name


@pytest.fixture
def s3_vault(s3, moto_server, local_settings, request):
    tag = abs(hash(request.node.name)) % 10**8
    locked = make_bucket(s3, f"prune-locked-{tag}", lock_days=30)
    plain = make_bucket(s3, f"prune-plain-{tag}", lock_days=None)
    document = dict(local_settings, repositories=[
        {"name": "primary", "url": f"s3://{plain}/cosmic", "endpoint_url": moto_server.endpoint_url,
         "region": "eu-west-1"},
        {"name": "secondary", "url": f"s3://{locked}/cosmic",
         "endpoint_url": moto_server.endpoint_url, "region": "eu-west-1"},
    ])
    return settings.build_vault(document), plain, locked


def versions(s3, bucket: str, backup_id: str) -> list:
    listing = s3.list_object_versions(Bucket=bucket, Prefix=f"cosmic/backups/config/{backup_id}/")
    return listing.get("Versions", []) + listing.get("DeleteMarkers", [])


def test_prune_hides_pruned_backups_and_lock_keeps_their_versions(s3_vault, s3):
    vault, _plain, locked = s3_vault
    old = backup_at(vault, "config", NOW - timedelta(days=120))
    new = backup_at(vault, "config", NOW - timedelta(days=3))
    plan = pruning.collect(vault, retention.GUIDE_POLICIES, now=NOW)
    assert [item.ref.id for item in plan.doomed] == [old]
    pruning.apply(vault, plan)
    assert plan.doomed[0].results == {"primary": "deleted", "secondary": "deleted"}
    assert [item.ref.id for item in vault.list()] == [new]
    # Versioned buckets keep the pruned data as noncurrent versions for lifecycle.
    listing = s3.list_object_versions(Bucket=locked, Prefix=f"cosmic/backups/config/{old}/")
    assert any(v["Key"].endswith("/manifest") for v in listing["Versions"])
    assert all(not v["IsLatest"] for v in listing["Versions"])
    assert listing["DeleteMarkers"]


def test_purging_versions_is_refused_by_object_lock_and_reported(s3_vault, s3):
    vault, plain, locked = s3_vault
    old = backup_at(vault, "config", NOW - timedelta(days=120))
    backup_at(vault, "config", NOW - timedelta(days=3))
    plan = pruning.apply(vault, pruning.collect(vault, retention.GUIDE_POLICIES, now=NOW),
                         purge_versions=True)
    [item] = plan.refused()
    assert item.ref.id == old
    assert item.results["primary"] == "deleted"
    assert versions(s3, plain, old) == []  # unlocked: every version gone
    refusal = item.results["secondary"]
    assert refusal.startswith(f"refused: s3://{locked}/cosmic/backups/config/{old}/manifest")
    assert "AccessDenied" in refusal and "Object Lock" in refusal
    assert versions(s3, locked, old)  # the lock held
    failed = [e for e in vault.audit.events(old) if e["result"] == "failed"]
    assert failed and failed[0]["repository"] == "secondary"
