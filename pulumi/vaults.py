"""Buckets that keep backups: locked, versioned, encrypted, private, TLS-only.

`Vault` is one such bucket with everything that protects it; `BackupVaults` is the
primary repository, its offsite copy in the secondary region, and the replication
between them. The audit trail's bucket is a `Vault` too (see audit.py), so no
bucket in this stack is declared without the protections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

from access import DutyRoles
from keys import BackupKeys
from policy_documents import Repository, Statement, bucket_policy, replication_policy
from retention_lifecycle import repository_lifecycle_rules
from stack_context import StackContext, render
from stack_settings import ObjectLock

REPLICATION_RULE_ID = "repository-to-secondary"
# Replication Time Control's SLA, and the threshold of its missed-threshold events.
REPLICATION_SLA_MINUTES = 15

ExtraStatements = Callable[[pulumi.Output[str]], pulumi.Output[list[Statement]]]


class Vault(pulumi.ComponentResource):
    """One bucket and the resources that protect it."""

    bucket: aws.s3.Bucket
    versioning: aws.s3.BucketVersioning
    policy: aws.s3.BucketPolicy

    def __init__(
        self,
        name: str,
        ctx: StackContext,
        *,
        region: str,
        purpose: str,
        kms_key_arn: pulumi.Input[str],
        lock: ObjectLock,
        lifecycle_rules: Sequence[dict[str, Any]],
        extra_statements: ExtraStatements | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("cosmic-backup:vaults:Vault", name, None, opts)

        def child(**kwargs: Any) -> pulumi.ResourceOptions:
            return ctx.child(self, region, **kwargs)

        # Object Lock can only be switched on when a bucket is created.
        self.bucket = aws.s3.Bucket(
            name,
            object_lock_enabled=True,
            force_destroy=False,
            tags={"Purpose": purpose},
            opts=child(protect=True),
        )
        bucket = self.bucket.id
        self.ownership = aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket,
            rule={"object_ownership": "BucketOwnerEnforced"},
            opts=child(),
        )
        self.public_access_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access-block",
            bucket=bucket,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child(),
        )
        self.versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket,
            versioning_configuration={"status": "Enabled"},
            opts=child(),
        )
        self.encryption = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket,
            rules=[
                {
                    "apply_server_side_encryption_by_default": {
                        "sse_algorithm": "aws:kms",
                        "kms_master_key_id": kms_key_arn,
                    },
                    "bucket_key_enabled": True,
                    "blocked_encryption_types": ["SSE-C"],
                }
            ],
            opts=child(),
        )
        self.object_lock = aws.s3.BucketObjectLockConfiguration(
            f"{name}-object-lock",
            bucket=bucket,
            object_lock_enabled="Enabled",
            rule={"default_retention": {"mode": lock.mode, "days": lock.days}},
            opts=child(depends_on=[self.versioning]),
        )
        extra = extra_statements(self.bucket.arn) if extra_statements else []
        self.policy = aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=bucket,
            policy=render(
                lambda arn, key, extra: bucket_policy(arn, key, *extra),
                arn=self.bucket.arn,
                key=kms_key_arn,
                extra=extra,
            ),
            # With every public-access block on, S3 would refuse a public policy outright.
            opts=child(depends_on=[self.public_access_block, self.ownership]),
        )
        self.lifecycle = aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket,
            rules=list(lifecycle_rules),
            opts=child(depends_on=[self.versioning]),
        )
        self.register_outputs({"bucket": self.bucket.id, "arn": self.bucket.arn})


class BackupVaults(pulumi.ComponentResource):
    """The primary repository, the offsite secondary, and replication between them."""

    primary: Vault
    secondary: Vault
    replication: aws.s3.BucketReplicationConfig

    def __init__(
        self,
        name: str,
        ctx: StackContext,
        keys: BackupKeys,
        roles: DutyRoles,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("cosmic-backup:vaults:BackupVaults", name, None, opts)
        settings = ctx.settings
        prefix = settings.repository_prefix
        rules = repository_lifecycle_rules(
            prefix,
            settings.retention,
            grace_days=settings.pruned_version_grace_days,
            cold_after_days=settings.cold_storage_after_days,
            cold_storage_class=settings.cold_storage_class,
            abort_incomplete_upload_days=settings.abort_incomplete_upload_days,
        )
        vaults = {
            region: Vault(
                f"{settings.name}-{region}",
                ctx,
                region=region,
                purpose=f"backups-{region}",
                kms_key_arn=keys.storage_keys[region].arn,
                lock=settings.object_lock,
                lifecycle_rules=rules,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for region in ("primary", "secondary")
        }
        self.primary, self.secondary = vaults["primary"], vaults["secondary"]

        replication_permissions = aws.iam.RolePolicy(
            f"{name}-replication-permissions",
            name=f"{settings.name}-replication",
            role=roles.replication.id,
            policy=render(
                lambda source, destination, source_key, destination_key: replication_policy(
                    Repository(source, prefix),
                    Repository(destination, prefix),
                    source_key,
                    destination_key,
                    settings.primary_region,
                    settings.secondary_region,
                ),
                source=self.primary.bucket.arn,
                destination=self.secondary.bucket.arn,
                source_key=keys.storage_keys["primary"].arn,
                destination_key=keys.storage_keys["secondary"].arn,
            ),
            opts=ctx.child(self),
        )

        destination: dict[str, Any] = {
            "bucket": self.secondary.bucket.arn,
            "encryption_configuration": {"replica_kms_key_id": keys.storage_keys["secondary"].arn},
            "metrics": {"status": "Enabled"},
        }
        if settings.replication_time_control:
            destination["metrics"]["event_threshold"] = {"minutes": REPLICATION_SLA_MINUTES}
            destination["replication_time"] = {
                "status": "Enabled",
                "time": {"minutes": REPLICATION_SLA_MINUTES},
            }
        self.replication = aws.s3.BucketReplicationConfig(
            f"{name}-replication",
            bucket=self.primary.bucket.id,
            role=roles.replication.arn,
            rules=[
                {
                    "id": REPLICATION_RULE_ID,
                    "status": "Enabled",
                    "priority": 1,
                    # The whole repository: backups and the tool's audit events.
                    "filter": {"prefix": f"{prefix}/"},
                    # Pruning removes each copy on its own; a delete in the primary
                    # (or a compromised writer's) never reaches the offsite copy.
                    "delete_marker_replication": {"status": "Disabled"},
                    "source_selection_criteria": {
                        "sse_kms_encrypted_objects": {"status": "Enabled"}
                    },
                    "destination": destination,
                }
            ],
            opts=ctx.child(
                self,
                depends_on=[
                    self.primary.versioning,
                    self.secondary.versioning,
                    replication_permissions,
                ],
            ),
        )
        self.register_outputs(
            {
                "primary_bucket": self.primary.bucket.id,
                "secondary_bucket": self.secondary.bucket.id,
                "replication_rule": REPLICATION_RULE_ID,
            }
        )
