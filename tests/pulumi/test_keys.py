"""KMS: rotation, the multi-region data key, and who may do what with each key."""

from __future__ import annotations

import json

import pytest

from tests.pulumi.harness import ACCOUNT_ID, StackRun
from tests.pulumi.iam_eval import evaluate

KEY = "aws:kms/key:Key"
REPLICA = "aws:kms/replicaKey:ReplicaKey"
ROOT = f"arn:aws:iam::{ACCOUNT_ID}:root"
USE = ("kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:ReEncryptTo")


def keys(run: StackRun, purpose: str):
    return [
        k
        for k in [*run.of_type(KEY), *run.of_type(REPLICA)]
        if k.inputs["tags"]["Purpose"] == purpose
    ]


def arn(run: StackRun, duty: str) -> str:
    return run.role(duty).state["arn"]


def test_every_key_rotates_yearly_and_waits_before_deletion(stack):
    window = {"prod": 30, "dev": 7}[stack.stack]
    assert len(stack.of_type(KEY)) == 5  # data, two storage, audit, alerts
    for key in stack.of_type(KEY):
        assert key.inputs["enableKeyRotation"] is True, key.name
        assert key.inputs["rotationPeriodInDays"] == 365, key.name
        assert key.inputs["deletionWindowInDays"] == window, key.name
    for replica in stack.of_type(REPLICA):
        assert replica.inputs["deletionWindowInDays"] == window


def test_data_key_is_multi_region_with_a_replica_in_the_secondary_region(stack):
    (primary,) = [k for k in keys(stack, "backup-data") if k.type == KEY]
    (replica,) = stack.of_type(REPLICA)
    assert primary.inputs["multiRegion"] is True
    assert primary.region == stack.config["cosmic-backup:primaryRegion"]
    assert replica.inputs["primaryKeyArn"] == primary.state["arn"]
    assert replica.region == stack.config["cosmic-backup:secondaryRegion"]
    # What the engine wraps data keys with: primary first, then the replica.
    assert stack.outputs["kms_key_arns"] == [primary.state["arn"], replica.state["arn"]]


def test_one_storage_key_per_region(stack):
    regions = sorted(k.region for k in keys(stack, "backup-storage"))
    assert regions == sorted(
        [stack.config["cosmic-backup:primaryRegion"], stack.config["cosmic-backup:secondaryRegion"]]
    )


def test_every_key_has_an_alias(stack):
    aliases = stack.of_type("aws:kms/alias:Alias")
    targets = {(a.region, a.inputs["targetKeyId"]) for a in aliases}
    for key in [*stack.of_type(KEY), *stack.of_type(REPLICA)]:
        assert (key.region, key.state["keyId"]) in targets, key.name
    assert all(a.inputs["name"].startswith(f"alias/cosmic-backup-{stack.stack}-") for a in aliases)


def policy(key) -> dict:
    return json.loads(key.inputs["policy"])


def test_key_administrators_cannot_use_any_key(stack):
    for key in [*stack.of_type(KEY), *stack.of_type(REPLICA)]:
        document = policy(key)
        assert evaluate(document, "kms:PutKeyPolicy", "*", ROOT).allowed, key.name
        assert evaluate(document, "kms:ScheduleKeyDeletion", "*", ROOT).allowed, key.name
        for action in USE:
            assert not evaluate(document, action, "*", ROOT).allowed, (key.name, action)
        for stmt in document["Statement"]:
            assert "kms:*" not in stmt["Action"] and "*" not in stmt["Action"]


def test_backup_hosts_wrap_data_keys_but_cannot_unwrap_them(stack):
    writer = arn(stack, "backup-writer")
    for key in keys(stack, "backup-data"):
        document = policy(key)
        assert evaluate(document, "kms:GenerateDataKey", "*", writer).allowed
        assert evaluate(document, "kms:Encrypt", "*", writer).allowed
        for action in ("kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:CreateGrant"):
            assert evaluate(document, action, "*", writer).explicitly_denied, action


@pytest.mark.parametrize("duty", ["restore", "maintenance"])
def test_only_restore_and_maintenance_unwrap_data_keys(stack, duty):
    for key in keys(stack, "backup-data"):
        document = policy(key)
        decision = evaluate(document, "kms:Decrypt", "*", arn(stack, duty))
        assert decision.allowed
        assert decision.conditions() == [{}]  # MFA is enforced when they assume the role
        for other in ("auditor", "replication"):
            assert not evaluate(document, "kms:Decrypt", "*", arn(stack, other)).allowed
        assert not evaluate(document, "kms:Encrypt", "*", arn(stack, duty)).allowed


def test_storage_keys_work_only_through_s3_in_their_region(stack):
    writer = arn(stack, "backup-writer")
    for key in keys(stack, "backup-storage"):
        document = policy(key)
        via_s3 = {"kms:ViaService": f"s3.{key.region}.amazonaws.com"}
        for duty in ("restore", "maintenance"):
            decision = evaluate(document, "kms:GenerateDataKey", "*", arn(stack, duty))
            assert decision.allowed
            assert decision.conditions() == [{"StringEquals": via_s3}]
        auditor = evaluate(document, "kms:Decrypt", "*", arn(stack, "auditor"))
        assert auditor.conditions() == [{"StringEquals": via_s3}]
        assert not evaluate(document, "kms:GenerateDataKey", "*", arn(stack, "auditor")).allowed
        primary = key.region == stack.config["cosmic-backup:primaryRegion"]
        # The writer uploads to the primary only; the secondary is written by replication.
        writer_decision = evaluate(document, "kms:GenerateDataKey", "*", writer)
        assert writer_decision.allowed is primary
        if primary:
            assert writer_decision.conditions() == [{"StringEquals": via_s3}]
        replication = evaluate(document, "kms:Decrypt", "*", arn(stack, "replication"))
        assert replication.allowed is primary
        assert (
            evaluate(document, "kms:Encrypt", "*", arn(stack, "replication")).allowed is not primary
        )


def test_audit_key_encrypts_for_this_trail_and_decrypts_for_auditors(stack):
    (key,) = keys(stack, "audit")
    document = policy(key)
    trail = stack.of_type("aws:cloudtrail/trail:Trail")[0].state["arn"]
    encrypt = evaluate(document, "kms:GenerateDataKey", "*", "cloudtrail.amazonaws.com")
    assert encrypt.allowed
    assert encrypt.conditions()[0]["StringEquals"] == {"aws:SourceArn": trail}
    assert evaluate(document, "kms:Decrypt", "*", arn(stack, "auditor")).allowed
    for duty in ("backup-writer", "restore", "maintenance"):
        assert not evaluate(document, "kms:Decrypt", "*", arn(stack, duty)).allowed


def test_alerts_key_lets_cloudwatch_and_the_backup_roles_publish(stack):
    (key,) = keys(stack, "alerts")
    document = policy(key)
    assert evaluate(document, "kms:GenerateDataKey", "*", "cloudwatch.amazonaws.com").allowed
    region = stack.config["cosmic-backup:primaryRegion"]
    for duty in ("backup-writer", "restore", "maintenance"):
        decision = evaluate(document, "kms:GenerateDataKey", "*", arn(stack, duty))
        assert decision.conditions() == [
            {"StringEquals": {"kms:ViaService": f"sns.{region}.amazonaws.com"}}
        ]
