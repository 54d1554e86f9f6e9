"""Program structure: components per concern, explicit regional providers, protection."""

from __future__ import annotations

import json

import pytest

from tests.pulumi.harness import StackRun

COMPONENTS = {
    "cosmic-backup:access:DutyRoles",
    "cosmic-backup:access:DutyPolicies",
    "cosmic-backup:keys:BackupKeys",
    "cosmic-backup:vaults:BackupVaults",
    "cosmic-backup:vaults:Vault",
    "cosmic-backup:audit:AuditTrail",
    "cosmic-backup:monitoring:Monitoring",
}


def aws_resources(run: StackRun):
    return [r for r in run.resources if r.custom and r.type.startswith("aws:")]


def test_every_concern_is_a_component(stack):
    assert {r.type for r in stack.resources if not r.custom} == COMPONENTS


def test_every_aws_resource_is_a_child_of_a_component(stack):
    for resource in aws_resources(stack):
        assert resource.parent_type in COMPONENTS, (resource.type, resource.name)


def test_components_nest_vaults_under_their_concern(stack):
    vaults = [r for r in stack.resources if r.type == "cosmic-backup:vaults:Vault"]
    assert sorted(v.parent_type for v in vaults) == [
        "cosmic-backup:audit:AuditTrail",
        "cosmic-backup:vaults:BackupVaults",
        "cosmic-backup:vaults:BackupVaults",
    ]
    top = {r.type for r in stack.resources if r.parent_type == "pulumi:pulumi:Stack"}
    assert top == (COMPONENTS - {"cosmic-backup:vaults:Vault"}) | {"pulumi:providers:aws"}


def test_two_explicit_providers_and_no_default_one(stack):
    providers = {r.id: r.inputs["region"] for r in stack.of_type("pulumi:providers:aws")}
    assert providers == {
        "provider-primary": stack.config["cosmic-backup:primaryRegion"],
        "provider-secondary": stack.config["cosmic-backup:secondaryRegion"],
    }
    for resource in aws_resources(stack):
        assert resource.provider and resource.provider.rsplit("::", 1)[-1] in providers, (
            resource.name
        )


def test_providers_tag_everything_with_the_stack(stack):
    for provider in stack.of_type("pulumi:providers:aws"):
        # Provider inputs reach the engine JSON-encoded.
        tags = json.loads(provider.inputs["defaultTags"])["tags"]
        assert tags["project"] == "cosmic-backup"
        assert tags["stack"] == stack.stack


def test_only_the_offsite_copy_lives_in_the_secondary_region(stack):
    secondary = stack.config["cosmic-backup:secondaryRegion"]
    in_secondary = {r.type for r in aws_resources(stack) if r.region == secondary}
    assert in_secondary == {
        "aws:s3/bucket:Bucket",
        "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "aws:s3/bucketVersioning:BucketVersioning",
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration",
        "aws:s3/bucketPolicy:BucketPolicy",
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
        "aws:kms/key:Key",
        "aws:kms/replicaKey:ReplicaKey",
        "aws:kms/alias:Alias",
    }
    (bucket,) = [b for b in stack.of_type("aws:s3/bucket:Bucket") if b.region == secondary]
    assert bucket.id == stack.outputs["secondary_bucket"]


@pytest.mark.parametrize(("run_name", "protected"), [("prod", True), ("dev", False)])
def test_buckets_and_keys_are_protected_in_prod(request, run_name, protected):
    run = request.getfixturevalue(run_name)
    for typ in ("aws:s3/bucket:Bucket", "aws:kms/key:Key", "aws:kms/replicaKey:ReplicaKey"):
        for resource in run.of_type(typ):
            assert resource.protect is protected, resource.name
    assert not any(r.protect for r in run.of_type("aws:cloudwatch/metricAlarm:MetricAlarm"))


def test_replication_waits_for_versioning_and_its_permissions(stack):
    (replication,) = stack.of_type("aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    versioning = {r.urn for r in stack.of_type("aws:s3/bucketVersioning:BucketVersioning")}
    (permissions,) = [
        p
        for p in stack.of_type("aws:iam/rolePolicy:RolePolicy")
        if p.name.endswith("replication-permissions")
    ]
    assert permissions.urn in replication.dependencies
    assert len(versioning & set(replication.dependencies)) == 2
