"""IAM duty roles: who may assume them (MFA for people) and what each may do."""

from __future__ import annotations

import json

import pytest

from tests.pulumi.harness import ACCOUNT_ID, StackRun
from tests.pulumi.iam_eval import evaluate

MFA = {
    "Bool": {"aws:MultiFactorAuthPresent": "true"},
    "NumericLessThanEquals": {"aws:MultiFactorAuthAge": "3600"},
}


def trust(run: StackRun, duty: str) -> dict:
    return json.loads(run.role(duty).inputs["assumeRolePolicy"])


def bucket_arn(run: StackRun, which: str) -> str:
    return f"arn:aws:s3:::{run.outputs[f'{which}_bucket']}"


def objects(run: StackRun, which: str, path: str) -> str:
    return f"{bucket_arn(run, which)}/cosmic/{path}"


BACKUP = "backups/database/20250406T020000Z-database-k3x9/data.0001"
MANIFEST = "backups/database/20250406T020000Z-database-k3x9/manifest.json"
AUDIT = "audit/2025/04/06/020512-backup.jsonl"


@pytest.mark.parametrize("duty", ["restore", "maintenance", "auditor"])
def test_people_assume_their_roles_only_with_a_recent_mfa(stack, duty):
    (stmt,) = trust(stack, duty)["Statement"]
    assert stmt["Effect"] == "Allow"
    assert stmt["Action"] == ["sts:AssumeRole"]
    assert stmt["Condition"] == MFA
    assert stmt["Principal"] == {"AWS": [f"arn:aws:iam::{ACCOUNT_ID}:root"]}
    assert stack.role(duty).inputs["maxSessionDuration"] == 3600


def test_backup_hosts_assume_the_writer_without_mfa(prod, dev):
    (stmt,) = trust(prod, "backup-writer")["Statement"]
    assert stmt["Principal"] == {"AWS": [f"arn:aws:iam::{ACCOUNT_ID}:role/cosmic-backup-host"]}
    assert "Condition" not in stmt
    (dev_stmt,) = trust(dev, "backup-writer")["Statement"]
    assert dev_stmt["Principal"] == {"AWS": [f"arn:aws:iam::{ACCOUNT_ID}:root"]}


def test_only_s3_assumes_the_replication_role(stack):
    (stmt,) = trust(stack, "replication")["Statement"]
    assert stmt["Principal"] == {"Service": "s3.amazonaws.com"}


def test_one_role_and_one_inline_policy_per_duty(stack):
    duties = sorted(r.inputs["tags"]["Duty"] for r in stack.of_type("aws:iam/role:Role"))
    assert duties == ["auditor", "backup-writer", "maintenance", "replication", "restore"]
    for duty in duties:
        stack.role_policy(duty)  # exactly one each
    assert not stack.of_type("aws:iam/policy:Policy")
    assert all(not r.inputs.get("managedPolicyArns") for r in stack.of_type("aws:iam/role:Role"))


def test_writer_puts_new_backups_and_audit_events_in_the_primary_only(stack):
    document = stack.role_policy("backup-writer")
    assert evaluate(document, "s3:PutObject", objects(stack, "primary", BACKUP)).allowed
    assert evaluate(document, "s3:PutObject", objects(stack, "primary", AUDIT)).allowed
    assert evaluate(document, "s3:AbortMultipartUpload", objects(stack, "primary", BACKUP)).allowed
    # Outside the repository, and the secondary (filled by replication): no.
    assert not evaluate(document, "s3:PutObject", f"{bucket_arn(stack, 'primary')}/other/x").allowed
    assert not evaluate(document, "s3:PutObject", objects(stack, "secondary", BACKUP)).allowed


def test_writer_reads_manifests_only(stack):
    document = stack.role_policy("backup-writer")
    assert evaluate(document, "s3:GetObject", objects(stack, "primary", MANIFEST)).allowed
    assert not evaluate(document, "s3:GetObject", objects(stack, "primary", BACKUP)).allowed
    assert not evaluate(document, "s3:GetObject", objects(stack, "primary", AUDIT)).allowed
    listing = evaluate(document, "s3:ListBucket", bucket_arn(stack, "primary"))
    assert listing.allowed
    assert listing.conditions() == [{"StringLike": {"s3:prefix": ["cosmic/*"]}}]


@pytest.mark.parametrize(
    "action",
    [
        "s3:DeleteObject",
        "s3:DeleteObjectVersion",
        "s3:BypassGovernanceRetention",
        "s3:PutObjectRetention",
        "s3:PutObjectLegalHold",
        "s3:PutObjectAcl",
    ],
)
@pytest.mark.parametrize("which", ["primary", "secondary"])
def test_writer_is_explicitly_denied_destroying_backups(stack, action, which):
    decision = evaluate(stack.role_policy("backup-writer"), action, objects(stack, which, BACKUP))
    assert decision.explicitly_denied
    assert decision.sids == ["NeverDestroyBackups"]


@pytest.mark.parametrize(
    "action",
    [
        "s3:PutBucketPolicy",
        "s3:DeleteBucketPolicy",
        "s3:PutLifecycleConfiguration",
        "s3:PutBucketVersioning",
        "s3:PutBucketObjectLockConfiguration",
        "s3:PutEncryptionConfiguration",
        "s3:PutReplicationConfiguration",
        "s3:PutBucketPublicAccessBlock",
        "s3:DeleteBucket",
    ],
)
def test_writer_is_explicitly_denied_reconfiguring_the_vaults(stack, action):
    for which in ("primary", "secondary"):
        decision = evaluate(stack.role_policy("backup-writer"), action, bucket_arn(stack, which))
        assert decision.explicitly_denied, (action, which)


def test_writer_is_explicitly_denied_unwrapping_with_the_data_keys(stack):
    document = stack.role_policy("backup-writer")
    for key in stack.outputs["kms_key_arns"]:
        assert evaluate(document, "kms:Decrypt", key).explicitly_denied
        assert evaluate(document, "kms:PutKeyPolicy", key).explicitly_denied


def test_writer_publishes_freshness_and_alerts_only(stack):
    document = stack.role_policy("backup-writer")
    metric = evaluate(document, "cloudwatch:PutMetricData")
    assert metric.conditions() == [{"StringEquals": {"cloudwatch:namespace": "CosmicBackup"}}]
    assert evaluate(document, "sns:Publish", stack.outputs["alert_topic_arn"]).allowed
    assert not evaluate(document, "sns:Publish", "arn:aws:sns:eu-west-1:1:other").allowed


def test_restore_reads_every_version_of_both_repositories_and_changes_nothing(stack):
    document = stack.role_policy("restore")
    for which in ("primary", "secondary"):
        for action in ("s3:GetObject", "s3:GetObjectVersion"):
            assert evaluate(document, action, objects(stack, which, BACKUP)).allowed
        assert evaluate(document, "s3:ListBucketVersions", bucket_arn(stack, which)).allowed
        assert evaluate(document, "s3:PutObject", objects(stack, which, AUDIT)).allowed
        assert not evaluate(document, "s3:PutObject", objects(stack, which, BACKUP)).allowed
        for action in ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"):
            assert evaluate(document, action, objects(stack, which, BACKUP)).explicitly_denied
        assert evaluate(document, "s3:PutBucketPolicy", bucket_arn(stack, which)).explicitly_denied


def test_maintenance_prunes_backups_but_never_audit_events_or_locks(stack):
    document = stack.role_policy("maintenance")
    for which in ("primary", "secondary"):
        for action in ("s3:DeleteObject", "s3:DeleteObjectVersion"):
            assert evaluate(document, action, objects(stack, which, BACKUP)).allowed
            assert evaluate(document, action, objects(stack, which, AUDIT)).explicitly_denied
        assert evaluate(document, "s3:GetObject", objects(stack, which, MANIFEST)).allowed
        assert not evaluate(document, "s3:GetObject", objects(stack, which, BACKUP)).allowed
        for action in ("s3:BypassGovernanceRetention", "s3:PutObjectRetention"):
            assert evaluate(document, action, objects(stack, which, BACKUP)).explicitly_denied
        for action in ("s3:PutLifecycleConfiguration", "s3:PutBucketObjectLockConfiguration"):
            assert evaluate(document, action, bucket_arn(stack, which)).explicitly_denied


def test_auditor_reads_the_audit_trail_and_nothing_else(stack):
    document = stack.role_policy("auditor")
    audit_bucket = f"arn:aws:s3:::{stack.outputs['audit_bucket']}"
    assert evaluate(document, "s3:GetObject", f"{audit_bucket}/AWSLogs/x.json.gz").allowed
    assert evaluate(document, "s3:ListBucket", audit_bucket).allowed
    for which in ("primary", "secondary"):
        assert evaluate(document, "s3:GetObject", objects(stack, which, AUDIT)).allowed
        assert not evaluate(document, "s3:GetObject", objects(stack, which, BACKUP)).allowed
        assert not evaluate(document, "s3:GetObject", objects(stack, which, MANIFEST)).allowed
        listing = evaluate(document, "s3:ListBucket", bucket_arn(stack, which))
        assert listing.conditions() == [{"StringLike": {"s3:prefix": ["cosmic/audit/*"]}}]
    allowed = {
        action
        for stmt in document["Statement"]
        if stmt["Effect"] == "Allow"
        for action in stmt["Action"]
    }
    assert all(a.split(":")[1].startswith(("Get", "List", "Lookup")) for a in allowed), allowed


def test_no_identity_policy_allows_a_wildcard_action_or_an_unscopable_star(stack):
    unscopable = {"cloudwatch:PutMetricData", "cloudtrail:LookupEvents"}
    for duty in ("backup-writer", "restore", "maintenance", "auditor", "replication"):
        for stmt in stack.role_policy(duty)["Statement"]:
            if stmt["Effect"] != "Allow":
                continue
            assert all("*" not in action for action in stmt["Action"]), (duty, stmt["Sid"])
            if stmt["Resource"] == "*":
                assert set(stmt["Action"]) <= unscopable, (duty, stmt["Sid"])
