"""The audit trail: CloudTrail over both buckets and every KMS call, into a locked bucket."""

from __future__ import annotations

from tests.pulumi.harness import ACCOUNT_ID, StackRun


def trail(run: StackRun):
    (found,) = run.of_type("aws:cloudtrail/trail:Trail")
    return found


def selectors(run: StackRun) -> dict[str, dict[str, dict]]:
    return {
        s["name"]: {f["field"]: f for f in s["fieldSelectors"]}
        for s in trail(run).inputs["advancedEventSelectors"]
    }


def test_trail_is_multi_region_validated_encrypted_and_logging(stack):
    props = trail(stack).inputs
    assert props["isMultiRegionTrail"] is True
    assert props["includeGlobalServiceEvents"] is True  # AssumeRole and its MFA context
    assert props["enableLogFileValidation"] is True
    assert props["enableLogging"] is True
    (audit_key,) = [
        k for k in stack.of_type("aws:kms/key:Key") if k.inputs["tags"]["Purpose"] == "audit"
    ]
    assert props["kmsKeyId"] == audit_key.state["arn"]
    assert props["s3BucketName"] == stack.outputs["audit_bucket"]
    region = stack.config["cosmic-backup:primaryRegion"]
    assert trail(stack).state["arn"] == (
        f"arn:aws:cloudtrail:{region}:{ACCOUNT_ID}:trail/cosmic-backup-{stack.stack}-backup-access"
    )


def test_trail_records_object_events_of_both_backup_buckets(stack):
    data = [s for s in selectors(stack).values() if s["eventCategory"]["equals"] == ["Data"]]
    assert len(data) == 1
    (fields,) = data
    assert fields["resources.type"]["equals"] == ["AWS::S3::Object"]
    assert sorted(fields["resources.ARN"]["startsWiths"]) == sorted(
        f"arn:aws:s3:::{stack.outputs[f'{which}_bucket']}/" for which in ("primary", "secondary")
    )
    assert "readOnly" not in fields  # reads (restores) are recorded as well as writes


def test_trail_records_every_management_event_including_kms(stack):
    management = [
        s for s in selectors(stack).values() if s["eventCategory"]["equals"] == ["Management"]
    ]
    assert len(management) == 1
    (fields,) = management
    assert set(fields) == {"eventCategory"}  # no readOnly filter, no excluded event source


def test_trail_waits_for_its_bucket_policy(stack):
    """CloudTrail checks the bucket policy when the trail is created."""
    audit_bucket = stack.by_id("aws:s3/bucket:Bucket", stack.outputs["audit_bucket"])
    policy = stack.attached_to("aws:s3/bucketPolicy:BucketPolicy", audit_bucket)
    assert policy.urn in trail(stack).dependencies
