"""Every IAM, KMS, S3 and SNS policy document of the stack, as pure functions.

Inputs are plain strings (ARNs, names), outputs plain dicts, so the documents can
be linted, diffed and exercised without Pulumi. The components turn them into
JSON once the ARNs are known.

Least privilege, by duty (see docs/pulumi.md for the reasoning):

- writer: put new backups and audit events into the primary repository, list it,
  read backup manifests; publish freshness metrics and alerts. Explicitly denied:
  any delete, retention or legal-hold change, any bucket reconfiguration, and
  decrypting with the backup data keys.
- restore: list and read both repositories (every version), append audit events.
  MFA in the trust policy. Decrypts with the data keys (granted by the key policy).
- maintenance: list both repositories, read manifests, delete backups (prune),
  append audit events. MFA in the trust policy. Never touches the audit log.
- auditor: read the CloudTrail bucket and the tool's audit events. MFA.
- replication: S3's own role for primary -> secondary copies, re-encrypting with
  the secondary region's key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

VERSION = "2012-10-17"
METRIC_NAMESPACE = "CosmicBackup"
FRESHNESS_METRIC = "LastSuccessTimestamp"

Document = dict[str, Any]
Statement = dict[str, Any]


def document(*statements: Statement) -> Document:
    return {"Version": VERSION, "Statement": list(statements)}


def statement(
    sid: str,
    actions: Sequence[str],
    resources: Sequence[str] | str | None = None,
    *,
    effect: str = "Allow",
    principal: Any = None,
    conditions: dict[str, dict[str, Any]] | None = None,
) -> Statement:
    result: Statement = {"Sid": sid, "Effect": effect}
    if principal is not None:
        result["Principal"] = principal
    result["Action"] = sorted(actions)
    if resources is not None:
        result["Resource"] = resources if isinstance(resources, str) else list(resources)
    if conditions:
        result["Condition"] = conditions
    return result


@dataclass(frozen=True)
class Repository:
    """One backup bucket and the repository prefix inside it."""

    bucket_arn: str
    prefix: str

    @property
    def root(self) -> str:
        return f"{self.bucket_arn}/{self.prefix}"

    @property
    def backups(self) -> str:
        return f"{self.root}/backups/*"

    @property
    def manifests(self) -> str:
        # <prefix>/backups/<kind>/<backup_id>/manifest*: the metadata a run reads back.
        return f"{self.root}/backups/*/*/manifest*"

    @property
    def audit(self) -> str:
        return f"{self.root}/audit/*"

    @property
    def everything(self) -> str:
        return f"{self.root}/*"

    def list_condition(self, *subpaths: str) -> dict[str, dict[str, Any]]:
        """Restrict ListBucket to this repository (or some of its sub-paths)."""
        prefixes = (
            [f"{self.prefix}/{sub}*" for sub in subpaths] if subpaths else [f"{self.prefix}/*"]
        )
        return {"StringLike": {"s3:prefix": prefixes}}


# ---------------------------------------------------------------------------
# Action sets that several documents share.

# Deleting, hiding, re-locking or re-owning stored objects.
DESTROY_OBJECT_ACTIONS = (
    "s3:BypassGovernanceRetention",
    "s3:DeleteObject",
    "s3:DeleteObjectTagging",
    "s3:DeleteObjectVersion",
    "s3:DeleteObjectVersionTagging",
    "s3:PutObjectAcl",
    "s3:PutObjectLegalHold",
    "s3:PutObjectRetention",
    "s3:PutObjectVersionAcl",
)

# Changing what protects a bucket: policy, lifecycle, versioning, lock, encryption,
# replication, public access, ownership, or the bucket itself.
RECONFIGURE_BUCKET_ACTIONS = (
    "s3:DeleteBucket",
    "s3:DeleteBucketPolicy",
    "s3:PutBucketAcl",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutBucketOwnershipControls",
    "s3:PutBucketPolicy",
    "s3:PutBucketPublicAccessBlock",
    "s3:PutBucketVersioning",
    "s3:PutEncryptionConfiguration",
    "s3:PutLifecycleConfiguration",
    "s3:PutReplicationConfiguration",
)

# Reading plaintext out of a KMS key, directly or by re-encrypting under another key.
KEY_DECRYPT_ACTIONS = ("kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo")

# Changing who may use a key, or destroying it.
KEY_CONTROL_ACTIONS = (
    "kms:CreateGrant",
    "kms:DisableKey",
    "kms:PutKeyPolicy",
    "kms:ScheduleKeyDeletion",
)

# Administration without use: key administrators manage a key but cannot encrypt,
# decrypt or generate data keys with it.
KEY_ADMIN_ACTIONS = (
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListAliases",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:ReplicateKey",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
    "kms:UpdatePrimaryRegion",
)

KEY_USE_ACTIONS = (
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
)


def _publish_statements(alert_topic_arn: str) -> list[Statement]:
    return [
        statement(
            "PublishFreshnessMetrics",
            ["cloudwatch:PutMetricData"],
            # PutMetricData has no resource-level permissions; the namespace condition scopes it.
            "*",
            conditions={"StringEquals": {"cloudwatch:namespace": METRIC_NAMESPACE}},
        ),
        statement("RaiseAlerts", ["sns:Publish"], [alert_topic_arn]),
    ]


def _list_versions(repositories: Sequence[Repository]) -> Statement:
    """The operators' listing: every version, under the repository prefix only."""
    return statement(
        "ListRepositories",
        ["s3:ListBucket", "s3:ListBucketVersions"],
        [r.bucket_arn for r in repositories],
        conditions=repositories[0].list_condition(),
    )


def _record_audit_events(repositories: Sequence[Repository]) -> Statement:
    return statement("RecordAuditEvents", ["s3:PutObject"], [r.audit for r in repositories])


def _never_reconfigure(buckets: Iterable[str]) -> Statement:
    return statement(
        "NeverReconfigureVaults", RECONFIGURE_BUCKET_ACTIONS, list(buckets), effect="Deny"
    )


# ---------------------------------------------------------------------------
# Trust policies.


def mfa_conditions(max_age_seconds: int) -> dict[str, dict[str, Any]]:
    """Require an MFA-authenticated session no older than max_age_seconds."""
    return {
        "Bool": {"aws:MultiFactorAuthPresent": "true"},
        "NumericLessThanEquals": {"aws:MultiFactorAuthAge": str(max_age_seconds)},
    }


def machine_trust(principals: Sequence[str]) -> Document:
    """Trust for the backup writer: backup hosts assume it unattended, so no MFA."""
    return document(
        statement("BackupHostsAssume", ["sts:AssumeRole"], principal={"AWS": list(principals)})
    )


def human_trust(principals: Sequence[str], max_mfa_age_seconds: int) -> Document:
    """Trust for people: only from an MFA session at most max_mfa_age_seconds old."""
    return document(
        statement(
            "OperatorsAssumeWithRecentMfa",
            ["sts:AssumeRole"],
            principal={"AWS": list(principals)},
            conditions=mfa_conditions(max_mfa_age_seconds),
        )
    )


def service_trust(service: str) -> Document:
    return document(statement("ServiceAssumes", ["sts:AssumeRole"], principal={"Service": service}))


# ---------------------------------------------------------------------------
# Identity policies, one per duty.


def writer_policy(
    primary: Repository,
    secondary: Repository,
    data_key_arns: Sequence[str],
    storage_key_arns: Sequence[str],
    alert_topic_arn: str,
) -> Document:
    """Backup hosts: write new backups, never destroy, reconfigure or decrypt."""
    return document(
        statement(
            "WriteNewBackupsAndAuditEvents",
            ["s3:AbortMultipartUpload", "s3:ListMultipartUploadParts", "s3:PutObject"],
            [primary.backups, primary.audit],
        ),
        statement("ReadBackupManifests", ["s3:GetObject"], [primary.manifests]),
        statement(
            "ListRepository",
            ["s3:ListBucket"],
            [primary.bucket_arn],
            conditions=primary.list_condition(),
        ),
        *_publish_statements(alert_topic_arn),
        statement(
            "NeverDestroyBackups",
            DESTROY_OBJECT_ACTIONS,
            [f"{primary.bucket_arn}/*", f"{secondary.bucket_arn}/*"],
            effect="Deny",
        ),
        _never_reconfigure([primary.bucket_arn, secondary.bucket_arn]),
        statement("NeverDecryptBackups", KEY_DECRYPT_ACTIONS, list(data_key_arns), effect="Deny"),
        statement(
            "NeverControlKeys",
            KEY_CONTROL_ACTIONS,
            [*data_key_arns, *storage_key_arns],
            effect="Deny",
        ),
    )


def restore_policy(
    repositories: Sequence[Repository],
    alert_topic_arn: str,
) -> Document:
    """Restore operators: read every version of both repositories; change nothing."""
    return document(
        _list_versions(repositories),
        statement(
            "ReadBackups",
            ["s3:GetObject", "s3:GetObjectVersion"],
            [r.everything for r in repositories],
        ),
        _record_audit_events(repositories),
        *_publish_statements(alert_topic_arn),
        statement(
            "NeverDestroyBackups",
            DESTROY_OBJECT_ACTIONS,
            [f"{r.bucket_arn}/*" for r in repositories],
            effect="Deny",
        ),
        _never_reconfigure(r.bucket_arn for r in repositories),
    )


def maintenance_policy(
    repositories: Sequence[Repository],
    alert_topic_arn: str,
) -> Document:
    """Pruning: read manifests, delete expired backups; never the audit log or the locks."""
    return document(
        _list_versions(repositories),
        statement(
            "ReadBackupManifests",
            ["s3:GetObject", "s3:GetObjectVersion"],
            [r.manifests for r in repositories],
        ),
        # Abandoned multipart uploads are lifecycle's job, not the pruner's.
        statement(
            "PruneBackups",
            ["s3:DeleteObject", "s3:DeleteObjectVersion"],
            [r.backups for r in repositories],
        ),
        _record_audit_events(repositories),
        *_publish_statements(alert_topic_arn),
        statement(
            "NeverTouchAuditEvents",
            ["s3:DeleteObject", "s3:DeleteObjectVersion"],
            [r.audit for r in repositories],
            effect="Deny",
        ),
        statement(
            "NeverLoosenLocks",
            ["s3:BypassGovernanceRetention", "s3:PutObjectLegalHold", "s3:PutObjectRetention"],
            [f"{r.bucket_arn}/*" for r in repositories],
            effect="Deny",
        ),
        _never_reconfigure(r.bucket_arn for r in repositories),
    )


def auditor_policy(
    audit_bucket_arn: str,
    repositories: Sequence[Repository],
    trail_arn: str,
) -> Document:
    """Auditors: read the CloudTrail logs and the tool's audit events, nothing else."""
    return document(
        statement("ListAuditTrail", ["s3:ListBucket"], [audit_bucket_arn]),
        statement("ReadAuditTrail", ["s3:GetObject"], [f"{audit_bucket_arn}/*"]),
        statement(
            "ListToolAuditEvents",
            ["s3:ListBucket"],
            [r.bucket_arn for r in repositories],
            conditions=repositories[0].list_condition("audit/"),
        ),
        statement("ReadToolAuditEvents", ["s3:GetObject"], [r.audit for r in repositories]),
        statement(
            "InspectTrail",
            ["cloudtrail:GetEventSelectors", "cloudtrail:GetTrail", "cloudtrail:GetTrailStatus"],
            [trail_arn],
        ),
        # LookupEvents has no resource-level permissions.
        statement("LookupRecentEvents", ["cloudtrail:LookupEvents"], "*"),
    )


def replication_policy(
    source: Repository,
    destination: Repository,
    source_key_arn: str,
    destination_key_arn: str,
    source_region: str,
    destination_region: str,
) -> Document:
    """S3 replication: read versions from the primary, write replicas re-encrypted."""
    return document(
        statement(
            "ReadReplicationConfiguration",
            ["s3:GetReplicationConfiguration", "s3:ListBucket"],
            [source.bucket_arn],
        ),
        statement(
            "ReadSourceVersions",
            [
                "s3:GetObjectLegalHold",
                "s3:GetObjectRetention",
                "s3:GetObjectVersionAcl",
                "s3:GetObjectVersionForReplication",
                "s3:GetObjectVersionTagging",
            ],
            [source.everything],
        ),
        statement(
            "WriteReplicas", ["s3:ReplicateObject", "s3:ReplicateTags"], [destination.everything]
        ),
        statement(
            "DecryptSourceThroughS3",
            ["kms:Decrypt"],
            [source_key_arn],
            conditions={
                "StringEquals": {"kms:ViaService": f"s3.{source_region}.amazonaws.com"},
                "StringLike": {
                    "kms:EncryptionContext:aws:s3:arn": [source.bucket_arn, source.everything]
                },
            },
        ),
        statement(
            "EncryptReplicasThroughS3",
            ["kms:Encrypt", "kms:GenerateDataKey"],
            [destination_key_arn],
            conditions={
                "StringEquals": {"kms:ViaService": f"s3.{destination_region}.amazonaws.com"},
                "StringLike": {
                    "kms:EncryptionContext:aws:s3:arn": [
                        destination.bucket_arn,
                        destination.everything,
                    ]
                },
            },
        ),
    )


# ---------------------------------------------------------------------------
# Resource policies.


def bucket_policy(bucket_arn: str, kms_key_arn: str, *extra: Statement) -> Document:
    """TLS 1.2+ only, and no upload that asks for anything but this bucket's KMS key.

    An upload that names no encryption gets the bucket's default (SSE-KMS with this
    key), so there is no unencrypted path; uploads asking for SSE-S3, SSE-C or another
    KMS key are refused.
    """
    everything = [bucket_arn, f"{bucket_arn}/*"]
    return document(
        statement(
            "DenyInsecureTransport",
            ["s3:*"],
            everything,
            effect="Deny",
            principal="*",
            conditions={"Bool": {"aws:SecureTransport": "false"}},
        ),
        statement(
            "DenyTlsOlderThan12",
            ["s3:*"],
            everything,
            effect="Deny",
            principal="*",
            conditions={"NumericLessThan": {"s3:TlsVersion": "1.2"}},
        ),
        statement(
            "DenyUploadsNotSseKms",
            ["s3:PutObject"],
            [f"{bucket_arn}/*"],
            effect="Deny",
            principal="*",
            conditions={"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}},
        ),
        statement(
            "DenyUploadsWithOtherKmsKey",
            ["s3:PutObject"],
            [f"{bucket_arn}/*"],
            effect="Deny",
            principal="*",
            conditions={
                "StringNotEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id": kms_key_arn}
            },
        ),
        statement(
            "DenyCustomerProvidedKeys",
            ["s3:PutObject"],
            [f"{bucket_arn}/*"],
            effect="Deny",
            principal="*",
            conditions={"Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "false"}},
        ),
        *extra,
    )


def cloudtrail_delivery_statements(
    bucket_arn: str, account_id: str, trail_arn: str
) -> list[Statement]:
    """What CloudTrail needs on its bucket, tied to this one trail (no confused deputy)."""
    service = {"Service": "cloudtrail.amazonaws.com"}
    return [
        statement(
            "CloudTrailChecksAcl",
            ["s3:GetBucketAcl"],
            [bucket_arn],
            principal=service,
            conditions={"StringEquals": {"aws:SourceArn": trail_arn}},
        ),
        statement(
            "CloudTrailDelivers",
            ["s3:PutObject"],
            [f"{bucket_arn}/AWSLogs/{account_id}/*"],
            principal=service,
            conditions={
                "StringEquals": {
                    "aws:SourceArn": trail_arn,
                    "s3:x-amz-acl": "bucket-owner-full-control",
                }
            },
        ),
    ]


def topic_policy(
    topic_arn: str, account_id: str, region: str, publisher_role_arns: Sequence[str]
) -> Document:
    """Alarms of this account and the backup roles may publish, over TLS only."""
    return document(
        statement(
            "CloudWatchAlarmsPublish",
            ["sns:Publish"],
            [topic_arn],
            principal={"Service": "cloudwatch.amazonaws.com"},
            conditions={
                "ArnLike": {"aws:SourceArn": f"arn:aws:cloudwatch:{region}:{account_id}:alarm:*"}
            },
        ),
        statement(
            "BackupRolesPublish",
            ["sns:Publish"],
            [topic_arn],
            principal={"AWS": list(publisher_role_arns)},
        ),
        statement(
            "DenyInsecureTransport",
            ["sns:Publish"],
            [topic_arn],
            effect="Deny",
            principal="*",
            conditions={"Bool": {"aws:SecureTransport": "false"}},
        ),
    )


# ---------------------------------------------------------------------------
# Key policies. "Resource": "*" in a key policy means "this key".


def _key_admin_statement(admin_arns: Sequence[str]) -> Statement:
    return statement(
        "KeyAdministration", KEY_ADMIN_ACTIONS, "*", principal={"AWS": list(admin_arns)}
    )


def data_key_policy(
    admin_arns: Sequence[str],
    writer_arn: str,
    decrypter_arns: Sequence[str],
) -> Document:
    """The envelope key: backup hosts wrap data keys, only restore and prune unwrap."""
    return document(
        _key_admin_statement(admin_arns),
        statement(
            "BackupHostsWrapDataKeys",
            ["kms:Encrypt", "kms:GenerateDataKey"],
            "*",
            principal={"AWS": [writer_arn]},
        ),
        statement(
            "BackupHostsNeverUnwrap",
            [*KEY_DECRYPT_ACTIONS, *KEY_CONTROL_ACTIONS],
            "*",
            effect="Deny",
            principal={"AWS": [writer_arn]},
        ),
        statement(
            "OperatorsUnwrapDataKeys",
            ["kms:Decrypt", "kms:DescribeKey"],
            "*",
            principal={"AWS": list(decrypter_arns)},
        ),
    )


def storage_key_policy(
    admin_arns: Sequence[str],
    region: str,
    bucket_writer_arns: Sequence[str],
    bucket_reader_arns: Sequence[str],
    replication_role_arn: str,
    replication_side: str,
) -> Document:
    """The SSE-KMS key of one region's bucket: usable only through S3 in that region."""
    via_s3 = {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}
    statements = [_key_admin_statement(admin_arns)]
    if bucket_writer_arns:
        statements.append(
            statement(
                "BackupRolesWriteThroughS3",
                ["kms:Decrypt", "kms:GenerateDataKey"],
                "*",
                principal={"AWS": list(bucket_writer_arns)},
                conditions=via_s3,
            )
        )
    if bucket_reader_arns:
        statements.append(
            statement(
                "AuditorsReadThroughS3",
                ["kms:Decrypt"],
                "*",
                principal={"AWS": list(bucket_reader_arns)},
                conditions=via_s3,
            )
        )
    replication_actions = (
        ["kms:Decrypt"] if replication_side == "source" else ["kms:Encrypt", "kms:GenerateDataKey"]
    )
    statements.append(
        statement(
            "ReplicationThroughS3",
            replication_actions,
            "*",
            principal={"AWS": [replication_role_arn]},
            conditions=via_s3,
        )
    )
    return document(*statements)


def audit_key_policy(
    admin_arns: Sequence[str],
    account_id: str,
    region: str,
    trail_arn: str,
    auditor_arns: Sequence[str],
) -> Document:
    """CloudTrail encrypts with it; only auditors decrypt, through S3."""
    cloudtrail = {"Service": "cloudtrail.amazonaws.com"}
    return document(
        _key_admin_statement(admin_arns),
        statement(
            "CloudTrailEncryptsLogs",
            ["kms:GenerateDataKey"],
            "*",
            principal=cloudtrail,
            conditions={
                "StringEquals": {"aws:SourceArn": trail_arn},
                "StringLike": {
                    "kms:EncryptionContext:aws:cloudtrail:arn": (
                        f"arn:aws:cloudtrail:*:{account_id}:trail/*"
                    )
                },
            },
        ),
        statement(
            "CloudTrailDescribesKey",
            ["kms:DescribeKey"],
            "*",
            principal=cloudtrail,
            conditions={"StringEquals": {"aws:SourceArn": trail_arn}},
        ),
        statement(
            "AuditorsReadLogsThroughS3",
            ["kms:Decrypt"],
            "*",
            principal={"AWS": list(auditor_arns)},
            conditions={"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
        ),
    )


def alerts_key_policy(
    admin_arns: Sequence[str], region: str, publisher_role_arns: Sequence[str]
) -> Document:
    """The alert topic's key: CloudWatch alarms and the backup roles publish through SNS."""
    return document(
        _key_admin_statement(admin_arns),
        statement(
            "CloudWatchAlarmsPublish",
            ["kms:Decrypt", "kms:GenerateDataKey"],
            "*",
            principal={"Service": "cloudwatch.amazonaws.com"},
        ),
        statement(
            "BackupRolesPublishThroughSns",
            ["kms:Decrypt", "kms:GenerateDataKey"],
            "*",
            principal={"AWS": list(publisher_role_arns)},
            conditions={"StringEquals": {"kms:ViaService": f"sns.{region}.amazonaws.com"}},
        ),
    )
