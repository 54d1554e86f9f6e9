"""The policy suite: the program passes it, and each weakened copy fails it by name."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable

import pytest

from tests.pulumi.harness import Recorded, StackRun, run_stack


def as_policy_resources(policies, resources: list[Recorded]):
    return [
        policies.Resource(
            type=r.type,
            name=r.name,
            props=copy.deepcopy(r.state),
            urn=r.urn,
            id=r.id,
            provider=r.provider,
            custom=r.custom,
        )
        for r in resources
    ]


def config_for(policies, run: StackRun):
    if run.stack == "prod":
        return policies.PolicyConfig(required_lock_mode="COMPLIANCE", min_lock_days=30)
    return policies.PolicyConfig()


def test_both_stacks_pass_every_policy(stack, program):
    policies = program["policies"]
    violations = policies.check(
        as_policy_resources(policies, stack.resources), config_for(policies, stack)
    )
    assert violations == []


def test_the_suite_has_a_policy_for_each_promise(program):
    names = {p.name for p in program["policies"].POLICIES}
    assert {
        "s3-object-lock",
        "s3-versioning",
        "s3-sse-kms",
        "s3-public-access-blocked",
        "s3-tls-and-encrypted-uploads",
        "s3-lifecycle",
        "s3-replication",
        "kms-rotation",
        "kms-admins-do-not-use",
        "kms-backup-hosts-never-decrypt",
        "iam-no-wildcard-actions",
        "iam-no-wildcard-resources",
        "iam-people-need-mfa",
        "iam-machines-cannot-destroy",
        "iam-writer-explicit-denies",
        "iam-documents-lint-clean",
        "cloudtrail-covers-backups",
        "alarms-notify",
    } <= names
    assert all(p.description and p.enforcement == "mandatory" for p in program["policies"].POLICIES)


# ---------------------------------------------------------------------------
# Weakened copies: take the prod stack's resources, weaken one, expect the policy
# that guards it to fail and to name the weakened resource.


def find(resources, typ: str, predicate: Callable[[dict], bool] = lambda props: True):
    found = [r for r in resources if r.type == typ and predicate(r.props)]
    assert found, f"no {typ} to weaken"
    return found[0]


def purpose(value: str) -> Callable[[dict], bool]:
    return lambda props: (props.get("tags") or {}).get("Purpose") == value


def duty(value: str) -> Callable[[dict], bool]:
    return lambda props: (props.get("tags") or {}).get("Duty") == value


def edit_document(resource, prop: str, edit: Callable[[dict], None]) -> None:
    document = json.loads(resource.props[prop])
    edit(document)
    resource.props[prop] = json.dumps(document)


def statement(document: dict, sid: str) -> dict:
    return next(s for s in document["Statement"] if s["Sid"] == sid)


def drop_statement(sid: str) -> Callable[[dict], None]:
    def edit(document: dict) -> None:
        document["Statement"] = [s for s in document["Statement"] if s["Sid"] != sid]

    return edit


def companion(resources, typ: str, bucket_purpose: str):
    bucket = find(resources, "aws:s3/bucket:Bucket", purpose(bucket_purpose))
    return find(resources, typ, lambda props: props.get("bucket") == bucket.id)


def bucket_of(resources, configuration):
    """The bucket a companion configures: bucket rules report the bucket."""
    return find(
        resources,
        "aws:s3/bucket:Bucket",
        lambda props: props.get("bucket") == configuration.props["bucket"],
    )


SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"


def w_sse_aes256(rs):
    target = companion(rs, SSE, "backups-primary")
    target.props["rules"][0]["applyServerSideEncryptionByDefault"] = {"sseAlgorithm": "AES256"}
    return bucket_of(rs, target)


def w_sse_c_allowed(rs):
    target = companion(rs, SSE, "backups-secondary")
    target.props["rules"][0]["blockedEncryptionTypes"] = ["NONE"]
    return bucket_of(rs, target)


def w_no_bucket_keys(rs):
    target = companion(rs, SSE, "audit-trail")
    target.props["rules"][0]["bucketKeyEnabled"] = False
    return bucket_of(rs, target)


def w_plain_http_allowed(rs):
    target = companion(rs, "aws:s3/bucketPolicy:BucketPolicy", "backups-primary")
    edit_document(target, "policy", drop_statement("DenyInsecureTransport"))
    return bucket_of(rs, target)


def w_tls_10(rs):
    target = companion(rs, "aws:s3/bucketPolicy:BucketPolicy", "audit-trail")
    edit_document(
        target,
        "policy",
        lambda d: statement(d, "DenyTlsOlderThan12")["Condition"].update(
            {"NumericLessThan": {"s3:TlsVersion": "1.0"}}
        ),
    )
    return bucket_of(rs, target)


def w_tls_deny_only_reads(rs):
    target = companion(rs, "aws:s3/bucketPolicy:BucketPolicy", "backups-secondary")
    edit_document(
        target,
        "policy",
        lambda d: statement(d, "DenyInsecureTransport").update(Action=["s3:GetObject"]),
    )
    return bucket_of(rs, target)


def w_any_encryption_accepted(rs):
    target = companion(rs, "aws:s3/bucketPolicy:BucketPolicy", "backups-primary")
    edit_document(target, "policy", drop_statement("DenyUploadsNotSseKms"))
    return bucket_of(rs, target)


def w_public_policy_allowed(rs):
    target = companion(
        rs, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "backups-primary"
    )
    target.props["blockPublicPolicy"] = False
    return bucket_of(rs, target)


def w_acls_enabled(rs):
    target = companion(rs, "aws:s3/bucketOwnershipControls:BucketOwnershipControls", "audit-trail")
    target.props["rule"] = {"objectOwnership": "ObjectWriter"}
    return bucket_of(rs, target)


def w_versioning_suspended(rs):
    target = companion(rs, "aws:s3/bucketVersioning:BucketVersioning", "backups-secondary")
    target.props["versioningConfiguration"] = {"status": "Suspended"}
    return bucket_of(rs, target)


def w_governance_lock_in_prod(rs):
    target = companion(
        rs, "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration", "backups-primary"
    )
    target.props["rule"]["defaultRetention"]["mode"] = "GOVERNANCE"
    return bucket_of(rs, target)


def w_lock_one_day(rs):
    target = companion(
        rs,
        "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration",
        "backups-secondary",
    )
    target.props["rule"]["defaultRetention"]["days"] = 1
    return bucket_of(rs, target)


def w_lifecycle_expires_backups(rs):
    target = companion(
        rs, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "backups-primary"
    )
    target.props["rules"][1]["expiration"] = {"days": 30}
    return bucket_of(rs, target)


def w_force_destroy(rs):
    target = find(rs, "aws:s3/bucket:Bucket", purpose("backups-secondary"))
    target.props["forceDestroy"] = True
    return target


def w_replica_not_reencrypted(rs):
    target = find(rs, "aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    del target.props["rules"][0]["destination"]["encryptionConfiguration"]
    return find(rs, "aws:s3/bucket:Bucket", purpose("backups-primary"))


def w_replicate_deletes(rs):
    target = find(rs, "aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    target.props["rules"][0]["deleteMarkerReplication"] = {"status": "Enabled"}
    return find(rs, "aws:s3/bucket:Bucket", purpose("backups-primary"))


def w_no_replication(rs):
    target = find(rs, "aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    rs.remove(target)
    return find(rs, "aws:s3/bucket:Bucket", purpose("backups-primary"))


def w_rotation_off(rs):
    target = find(rs, "aws:kms/key:Key", purpose("backup-storage"))
    target.props["enableKeyRotation"] = False
    return target


def w_admin_can_decrypt(rs):
    target = find(rs, "aws:kms/key:Key", purpose("audit"))
    edit_document(
        target,
        "policy",
        lambda d: statement(d, "KeyAdministration")["Action"].append("kms:Decrypt"),
    )
    return target


def w_key_policy_kms_star(rs):
    target = find(rs, "aws:kms/replicaKey:ReplicaKey")
    edit_document(
        target, "policy", lambda d: statement(d, "KeyAdministration").update(Action="kms:*")
    )
    return target


def w_writer_unwraps(rs):
    target = find(rs, "aws:kms/key:Key", purpose("backup-data"))

    def edit(document: dict) -> None:
        statement(document, "BackupHostsWrapDataKeys")["Action"].append("kms:Decrypt")
        document["Statement"] = [
            s for s in document["Statement"] if s["Sid"] != "BackupHostsNeverUnwrap"
        ]

    edit_document(target, "policy", edit)
    return target


def w_writer_decrypts_storage_directly(rs):
    target = find(
        rs,
        "aws:kms/key:Key",
        # the primary's: the writer uploads there, so S3 decrypts on its behalf
        lambda p: purpose("backup-storage")(p) and "role/cosmic-backup-prod-writer" in p["policy"],
    )
    edit_document(
        target, "policy", lambda d: statement(d, "BackupRolesWriteThroughS3").pop("Condition")
    )
    return target


def w_restore_without_mfa(rs):
    target = find(rs, "aws:iam/role:Role", duty("restore"))
    edit_document(target, "assumeRolePolicy", lambda d: d["Statement"][0].pop("Condition"))
    return target


def w_stale_mfa(rs):
    target = find(rs, "aws:iam/role:Role", duty("maintenance"))
    edit_document(
        target,
        "assumeRolePolicy",
        lambda d: d["Statement"][0]["Condition"].update(
            {"NumericLessThanEquals": {"aws:MultiFactorAuthAge": "43200"}}
        ),
    )
    return target


def writer_policy(rs):
    writer = find(rs, "aws:iam/role:Role", duty("backup-writer"))
    return find(rs, "aws:iam/rolePolicy:RolePolicy", lambda p: p.get("role") == writer.id)


def w_writer_s3_star(rs):
    target = writer_policy(rs)
    edit_document(
        target, "policy", lambda d: statement(d, "ReadBackupManifests").update(Action=["s3:*"])
    )
    return target


def w_writer_any_resource(rs):
    target = writer_policy(rs)
    edit_document(
        target, "policy", lambda d: statement(d, "ReadBackupManifests").update(Resource="*")
    )
    return target


def w_writer_any_bucket(rs):
    target = writer_policy(rs)
    edit_document(
        target,
        "policy",
        lambda d: statement(d, "ReadBackupManifests").update(Resource=["arn:aws:s3:::*/*"]),
    )
    return target


def w_writer_without_denies(rs):
    target = writer_policy(rs)
    edit_document(target, "policy", drop_statement("NeverDestroyBackups"))
    return find(rs, "aws:iam/role:Role", duty("backup-writer"))


def w_writer_may_delete(rs):
    target = writer_policy(rs)
    edit_document(
        target,
        "policy",
        lambda d: statement(d, "WriteNewBackupsAndAuditEvents")["Action"].append(
            "s3:DeleteObjectVersion"
        ),
    )
    return find(rs, "aws:iam/role:Role", duty("backup-writer"))


def w_auditor_writes(rs):
    auditor = find(rs, "aws:iam/role:Role", duty("auditor"))
    target = find(rs, "aws:iam/rolePolicy:RolePolicy", lambda p: p.get("role") == auditor.id)
    edit_document(
        target, "policy", lambda d: statement(d, "ReadAuditTrail")["Action"].append("s3:PutObject")
    )
    return auditor


def w_lint_resource_mismatch(rs):
    auditor = find(rs, "aws:iam/role:Role", duty("auditor"))
    target = find(rs, "aws:iam/rolePolicy:RolePolicy", lambda p: p.get("role") == auditor.id)
    # GetObject on a bucket ARN (not objects) matches nothing: parliament's RESOURCE_MISMATCH.
    edit_document(
        target,
        "policy",
        lambda d: statement(d, "ListAuditTrail")["Action"].append("s3:GetObject"),
    )
    return target


def w_role_without_duty(rs):
    target = find(rs, "aws:iam/role:Role", duty("auditor"))
    target.props["tags"] = {}
    return target


def w_trail_without_data_events(rs):
    target = find(rs, "aws:cloudtrail/trail:Trail")
    target.props["advancedEventSelectors"] = target.props["advancedEventSelectors"][1:]
    return find(rs, "aws:s3/bucket:Bucket", purpose("backups-secondary"))


def w_trail_skips_kms(rs):
    target = find(rs, "aws:cloudtrail/trail:Trail")
    target.props["advancedEventSelectors"][1]["fieldSelectors"].append(
        {"field": "eventSource", "notEquals": ["kms.amazonaws.com"]}
    )
    return target


def w_trail_unvalidated(rs):
    target = find(rs, "aws:cloudtrail/trail:Trail")
    target.props["enableLogFileValidation"] = False
    return target


def w_topic_aws_managed_key(rs):
    target = find(rs, "aws:sns/topic:Topic")
    target.props["kmsMasterKeyId"] = "alias/aws/sns"
    return target


def w_silent_alarm(rs):
    target = find(rs, "aws:cloudwatch/metricAlarm:MetricAlarm")
    target.props["alarmActions"] = []
    return target


def w_no_wal_freshness(rs):
    target = find(
        rs,
        "aws:cloudwatch/metricAlarm:MetricAlarm",
        lambda p: (p.get("dimensions") or {}).get("Kind") == "wal",
    )
    rs.remove(target)
    return None


def w_freshness_ignores_silence(rs):
    target = find(
        rs,
        "aws:cloudwatch/metricAlarm:MetricAlarm",
        lambda p: (p.get("dimensions") or {}).get("Kind") == "database",
    )
    target.props["treatMissingData"] = "notBreaching"
    return target


def w_default_provider(rs, policies):
    target = find(rs, "aws:sns/topic:Topic")
    index = rs.index(target)
    rs[index] = policies.Resource(
        **{
            **target.__dict__,
            "provider": "urn:pulumi:prod::cosmic-backup::pulumi:providers:aws::default_7_51_1::x",
        }
    )
    return rs[index]


WEAKENINGS = {
    "s3-sse-kms": [w_sse_aes256, w_sse_c_allowed, w_no_bucket_keys],
    "s3-tls-and-encrypted-uploads": [
        w_plain_http_allowed,
        w_tls_10,
        w_tls_deny_only_reads,
        w_any_encryption_accepted,
    ],
    "s3-public-access-blocked": [w_public_policy_allowed],
    "s3-acls-disabled": [w_acls_enabled],
    "s3-versioning": [w_versioning_suspended],
    "s3-object-lock": [w_governance_lock_in_prod, w_lock_one_day],
    "s3-lifecycle": [w_lifecycle_expires_backups],
    "s3-no-force-destroy": [w_force_destroy],
    "s3-replication": [w_replica_not_reencrypted, w_replicate_deletes, w_no_replication],
    "kms-rotation": [w_rotation_off],
    "kms-admins-do-not-use": [w_admin_can_decrypt, w_key_policy_kms_star],
    "kms-backup-hosts-never-decrypt": [w_writer_unwraps, w_writer_decrypts_storage_directly],
    "iam-people-need-mfa": [w_restore_without_mfa, w_stale_mfa],
    "iam-no-wildcard-actions": [w_writer_s3_star],
    "iam-no-wildcard-resources": [w_writer_any_resource, w_writer_any_bucket],
    "iam-writer-explicit-denies": [w_writer_without_denies],
    "iam-machines-cannot-destroy": [w_writer_may_delete],
    "iam-auditors-read-only": [w_auditor_writes],
    "iam-documents-lint-clean": [w_lint_resource_mismatch],
    "iam-roles-declare-duty": [w_role_without_duty],
    "cloudtrail-covers-backups": [
        w_trail_without_data_events,
        w_trail_skips_kms,
        w_trail_unvalidated,
    ],
    "sns-topics-encrypted": [w_topic_aws_managed_key],
    "alarms-notify": [w_silent_alarm],
    "alarms-cover-freshness-and-replication": [w_no_wal_freshness, w_freshness_ignores_silence],
}
CASES = [(name, weaken) for name, weakenings in WEAKENINGS.items() for weaken in weakenings]


@pytest.mark.parametrize(("expected", "weaken"), CASES, ids=[w.__name__[2:] for _, w in CASES])
def test_a_weakened_copy_fails_the_policy_that_guards_it(prod, program, expected, weaken):
    policies = program["policies"]
    resources = as_policy_resources(policies, prod.resources)
    weakened = weaken(resources)
    violations = policies.check(resources, config_for(policies, prod))
    caught = [v for v in violations if v.policy == expected]
    assert caught, f"{expected} did not catch it; violations: {[str(v) for v in violations]}"
    if weakened is not None:
        assert any(v.resource == weakened.label for v in caught), [str(v) for v in caught]


def test_a_resource_on_the_default_provider_fails(prod, program):
    policies = program["policies"]
    resources = as_policy_resources(policies, prod.resources)
    weakened = w_default_provider(resources, policies)
    violations = policies.check(resources, config_for(policies, prod))
    assert [v.resource for v in violations if v.policy == "aws-explicit-provider"] == [
        weakened.label
    ]


def test_a_bucket_and_a_role_added_later_cannot_skip_the_rules(program):
    """Declare extra resources in the real program run: the suite walks them too."""

    def add_naked_resources(namespace: dict) -> None:
        import pulumi
        import pulumi_aws as aws

        ctx = namespace["ctx"]
        aws.s3.Bucket(
            "scratch",
            tags={"Purpose": "backups-scratch"},
            opts=pulumi.ResourceOptions(provider=ctx.primary),
        )
        aws.iam.Role(
            "helpdesk",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "sts:AssumeRole",
                            "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                        }
                    ],
                }
            ),
            tags={"Duty": "restore"},
            opts=pulumi.ResourceOptions(provider=ctx.primary),
        )

    run = run_stack("prod", extend=add_naked_resources)
    policies = program["policies"]
    violations = policies.check(
        as_policy_resources(policies, run.resources), config_for(policies, run)
    )
    by_resource: dict[str, set[str]] = {}
    for v in violations:
        by_resource.setdefault(v.resource, set()).add(v.policy)
    assert by_resource.pop("aws:s3/bucket:Bucket 'scratch'") >= {
        "s3-object-lock",
        "s3-versioning",
        "s3-sse-kms",
        "s3-public-access-blocked",
        "s3-acls-disabled",
        "s3-tls-and-encrypted-uploads",
        "s3-lifecycle",
        "cloudtrail-covers-backups",
    }
    assert by_resource.pop("aws:iam/role:Role 'helpdesk'") == {"iam-people-need-mfa"}
    # The writer's explicit denies do not cover the new backup bucket either.
    assert by_resource.pop("aws:iam/role:Role 'duties-writer'") == {"iam-writer-explicit-denies"}
    assert by_resource == {}
