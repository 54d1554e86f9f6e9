"""Buckets: encryption, TLS-only, private, versioned, locked, lifecycle, replication."""

from __future__ import annotations

import json

import pytest

from tests.pulumi.harness import ACCOUNT_ID, StackRun, run_stack, stack_config
from tests.pulumi.iam_eval import evaluate

BUCKET = "aws:s3/bucket:Bucket"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
LOCK = "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration"
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
REPLICATION = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"

EXPECTED_LOCK = {
    "prod": {"backups": ("COMPLIANCE", 30), "audit": ("COMPLIANCE", 365)},
    "dev": {"backups": ("GOVERNANCE", 1), "audit": ("GOVERNANCE", 1)},
}


def bucket(run: StackRun, purpose: str):
    found = [b for b in run.of_type(BUCKET) if b.inputs["tags"]["Purpose"] == purpose]
    assert len(found) == 1
    return found[0]


def key_arn(run: StackRun, purpose: str, region: str) -> str:
    keys = [
        k
        for k in run.of_type("aws:kms/key:Key")
        if k.inputs["tags"]["Purpose"] == purpose and k.region == region
    ]
    assert len(keys) == 1
    return keys[0].state["arn"]


def all_buckets(run: StackRun):
    return run.of_type(BUCKET)


def test_three_buckets_backups_in_both_regions_and_the_audit_trail(stack):
    regions = {b.inputs["tags"]["Purpose"]: b.region for b in all_buckets(stack)}
    settings = stack.config
    assert regions == {
        "backups-primary": settings["cosmic-backup:primaryRegion"],
        "backups-secondary": settings["cosmic-backup:secondaryRegion"],
        "audit-trail": settings["cosmic-backup:primaryRegion"],
    }
    assert regions["backups-primary"] != regions["backups-secondary"]


def test_buckets_are_created_locked_and_never_force_destroyed(stack):
    for b in all_buckets(stack):
        assert b.inputs["objectLockEnabled"] is True, b.name
        assert b.inputs.get("forceDestroy") is False, b.name


def test_every_bucket_encrypts_with_its_regions_customer_key(stack):
    expected_keys = {
        "backups-primary": key_arn(
            stack, "backup-storage", stack.config["cosmic-backup:primaryRegion"]
        ),
        "backups-secondary": key_arn(
            stack, "backup-storage", stack.config["cosmic-backup:secondaryRegion"]
        ),
        "audit-trail": key_arn(stack, "audit", stack.config["cosmic-backup:primaryRegion"]),
    }
    for b in all_buckets(stack):
        (rule,) = stack.attached_to(SSE, b).inputs["rules"]
        default = rule["applyServerSideEncryptionByDefault"]
        assert default["sseAlgorithm"] == "aws:kms"
        assert default["kmsMasterKeyId"] == expected_keys[b.inputs["tags"]["Purpose"]]
        assert rule["bucketKeyEnabled"] is True
        assert rule["blockedEncryptionTypes"] == ["SSE-C"]


def test_every_bucket_is_private_and_owner_enforced(stack):
    for b in all_buckets(stack):
        block = stack.attached_to(
            "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", b
        ).inputs
        assert {
            k: block[k]
            for k in (
                "blockPublicAcls",
                "blockPublicPolicy",
                "ignorePublicAcls",
                "restrictPublicBuckets",
            )
        } == dict.fromkeys(
            ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"),
            True,
        )
        ownership = stack.attached_to("aws:s3/bucketOwnershipControls:BucketOwnershipControls", b)
        assert ownership.inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}


def test_every_bucket_is_versioned(stack):
    for b in all_buckets(stack):
        versioning = stack.attached_to("aws:s3/bucketVersioning:BucketVersioning", b)
        assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled"


@pytest.mark.parametrize("which", ["backups", "audit"])
def test_object_lock_mode_and_days_per_stack(stack, which):
    mode, days = EXPECTED_LOCK[stack.stack][which]
    purposes = ["backups-primary", "backups-secondary"] if which == "backups" else ["audit-trail"]
    for purpose in purposes:
        lock = stack.attached_to(LOCK, bucket(stack, purpose)).inputs
        assert lock["objectLockEnabled"] == "Enabled"
        assert lock["rule"]["defaultRetention"] == {"mode": mode, "days": days}


def bucket_policy(run: StackRun, b) -> dict:
    return json.loads(run.attached_to("aws:s3/bucketPolicy:BucketPolicy", b).inputs["policy"])


@pytest.mark.parametrize("request_", ["s3:GetObject", "s3:PutObject", "s3:DeleteObjectVersion"])
def test_bucket_policies_refuse_plain_http_and_old_tls(stack, request_):
    for b in all_buckets(stack):
        arn = b.state["arn"]
        decision = evaluate(bucket_policy(stack, b), request_, f"{arn}/any/key", principal="*")
        assert decision.explicitly_denied
        conditions = decision.conditions()
        assert {"Bool": {"aws:SecureTransport": "false"}} in conditions
        assert {"NumericLessThan": {"s3:TlsVersion": "1.2"}} in conditions
        bucket_level = evaluate(bucket_policy(stack, b), "s3:ListBucket", arn, principal="*")
        assert {"Bool": {"aws:SecureTransport": "false"}} in bucket_level.conditions()


def test_bucket_policies_refuse_uploads_not_encrypted_with_the_buckets_key(stack):
    for b in all_buckets(stack):
        key = stack.attached_to(SSE, b).inputs["rules"][0]["applyServerSideEncryptionByDefault"][
            "kmsMasterKeyId"
        ]
        decision = evaluate(bucket_policy(stack, b), "s3:PutObject", f"{b.state['arn']}/x", "*")
        conditions = decision.conditions()
        assert {"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}} in conditions
        assert {
            "StringNotEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id": key}
        } in conditions
        assert {
            "Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "false"}
        } in conditions


def test_only_cloudtrail_of_this_trail_writes_to_the_audit_bucket(stack):
    audit = bucket(stack, "audit-trail")
    trail = stack.of_type("aws:cloudtrail/trail:Trail")[0]
    document = bucket_policy(stack, audit)
    allows = [s for s in document["Statement"] if s["Effect"] == "Allow"]
    assert {s["Principal"]["Service"] for s in allows} == {"cloudtrail.amazonaws.com"}
    for stmt in allows:
        assert stmt["Condition"]["StringEquals"]["aws:SourceArn"] == trail.state["arn"]
    delivers = next(s for s in allows if s["Sid"] == "CloudTrailDelivers")
    assert delivers["Resource"] == [f"{audit.state['arn']}/AWSLogs/{ACCOUNT_ID}/*"]
    assert delivers["Condition"]["StringEquals"]["s3:x-amz-acl"] == "bucket-owner-full-control"


# The guide's retention table turned into lifecycle rules (prod: 7-day grace for pruned
# versions). Written out by hand from the guide, not computed by the program's code.
PROD_LIFECYCLE = {
    "repository-housekeeping": {
        "status": "Enabled",
        "filter": {"prefix": "cosmic/"},
        "abortIncompleteMultipartUpload": {"daysAfterInitiation": 1},
        "expiration": {"expiredObjectDeleteMarker": True},
    },
    # Daily 30 d, weekly 90 d, monthly 1 y, annual 7 y: after 90 days only monthly and
    # annual dumps remain, and those move to instant-retrieval cold storage.
    "database-backups": {
        "status": "Enabled",
        "filter": {"prefix": "cosmic/backups/database/"},
        "noncurrentVersionExpiration": {"noncurrentDays": 7},
        "transitions": [{"days": 90, "storageClass": "GLACIER_IR"}],
    },
    # WAL 7 d, uploads 90 d, configuration 90 d: nothing outlives the cold threshold.
    "wal-backups": {
        "status": "Enabled",
        "filter": {"prefix": "cosmic/backups/wal/"},
        "noncurrentVersionExpiration": {"noncurrentDays": 7},
    },
    "files-backups": {
        "status": "Enabled",
        "filter": {"prefix": "cosmic/backups/files/"},
        "noncurrentVersionExpiration": {"noncurrentDays": 7},
    },
    "config-backups": {
        "status": "Enabled",
        "filter": {"prefix": "cosmic/backups/config/"},
        "noncurrentVersionExpiration": {"noncurrentDays": 7},
    },
    # Code: kept indefinitely, so it goes cold too.
    "code-backups": {
        "status": "Enabled",
        "filter": {"prefix": "cosmic/backups/code/"},
        "noncurrentVersionExpiration": {"noncurrentDays": 7},
        "transitions": [{"days": 90, "storageClass": "GLACIER_IR"}],
    },
}


def lifecycle_rules(run: StackRun, b) -> dict[str, dict]:
    rules = run.attached_to(LIFECYCLE, b).inputs["rules"]
    return {rule.pop("id"): rule for rule in json.loads(json.dumps(rules))}


@pytest.mark.parametrize("purpose", ["backups-primary", "backups-secondary"])
def test_backup_lifecycle_equals_the_retention_table(prod, purpose):
    assert lifecycle_rules(prod, bucket(prod, purpose)) == PROD_LIFECYCLE


def test_lifecycle_never_expires_a_current_backup(stack):
    """The tool prunes current backups (keeping the newest verified one); lifecycle must not."""
    for purpose in ("backups-primary", "backups-secondary"):
        for rule_id, rule in lifecycle_rules(stack, bucket(stack, purpose)).items():
            assert set(rule.get("expiration", {})) <= {"expiredObjectDeleteMarker"}, rule_id


def test_lifecycle_follows_a_stacks_retention_setting():
    config = {**stack_config("prod"), "cosmic-backup:retention": {"files": 400, "code": 60}}
    run = run_stack("prod", config)
    rules = lifecycle_rules(run, bucket(run, "backups-primary"))
    assert rules["files-backups"]["transitions"] == [{"days": 90, "storageClass": "GLACIER_IR"}]
    assert "transitions" not in rules["code-backups"]


def test_audit_trail_lifecycle_keeps_logs_for_the_audit_retention(prod, dev):
    (prod_rule,) = lifecycle_rules(prod, bucket(prod, "audit-trail")).values()
    assert prod_rule["expiration"] == {"days": 7 * 365}
    assert prod_rule["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 1}
    (dev_rule,) = lifecycle_rules(dev, bucket(dev, "audit-trail")).values()
    assert dev_rule["expiration"] == {"days": 30}


def test_replication_copies_the_repository_offsite_reencrypted(stack):
    primary, secondary = bucket(stack, "backups-primary"), bucket(stack, "backups-secondary")
    replication = stack.attached_to(REPLICATION, primary).inputs
    assert replication["role"] == stack.role("replication").state["arn"]
    (rule,) = replication["rules"]
    assert rule["status"] == "Enabled"
    assert rule["filter"] == {"prefix": "cosmic/"}
    assert rule["sourceSelectionCriteria"] == {"sseKmsEncryptedObjects": {"status": "Enabled"}}
    assert rule["deleteMarkerReplication"] == {"status": "Disabled"}
    destination = rule["destination"]
    assert destination["bucket"] == secondary.state["arn"]
    assert destination["encryptionConfiguration"] == {
        "replicaKmsKeyId": key_arn(stack, "backup-storage", secondary.region)
    }
    assert destination["metrics"]["status"] == "Enabled"
    if stack.stack == "prod":
        assert destination["replicationTime"] == {"status": "Enabled", "time": {"minutes": 15}}
        assert destination["metrics"]["eventThreshold"] == {"minutes": 15}
    else:
        assert "replicationTime" not in destination


def test_replication_role_decrypts_and_encrypts_only_through_s3(stack):
    primary, secondary = bucket(stack, "backups-primary"), bucket(stack, "backups-secondary")
    document = stack.role_policy("replication")
    source_key = key_arn(stack, "backup-storage", primary.region)
    destination_key = key_arn(stack, "backup-storage", secondary.region)
    decrypt = evaluate(document, "kms:Decrypt", source_key)
    assert decrypt.allowed
    assert decrypt.conditions()[0]["StringEquals"] == {
        "kms:ViaService": f"s3.{primary.region}.amazonaws.com"
    }
    encrypt = evaluate(document, "kms:Encrypt", destination_key)
    assert encrypt.allowed
    assert encrypt.conditions()[0]["StringEquals"] == {
        "kms:ViaService": f"s3.{secondary.region}.amazonaws.com"
    }
    assert not evaluate(document, "kms:Decrypt", destination_key).allowed
    assert evaluate(document, "s3:ReplicateObject", f"{secondary.state['arn']}/cosmic/x").allowed
    assert not evaluate(
        document, "s3:ReplicateDelete", f"{secondary.state['arn']}/cosmic/x"
    ).allowed
    assert not evaluate(document, "s3:ReplicateObject", f"{primary.state['arn']}/cosmic/x").allowed
