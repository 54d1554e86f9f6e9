"""The audit trail: CloudTrail records every access to the backups and every key use.

One multi-region trail, so the secondary bucket and the replica key (in the other
region) are covered too. It records:

- S3 data events (reads, writes, deletes of objects) on both backup buckets;
- all management events, which include every KMS call (GenerateDataKey, Decrypt,
  key policy changes) and every AssumeRole, with its MFA context;

into its own bucket: a `Vault` (locked, versioned, private, TLS-only) encrypted
with a key that only CloudTrail can encrypt with and only auditors can decrypt
with, and with log-file validation so tampering is detectable.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from access import DutyRoles
from keys import customer_key
from policy_documents import audit_key_policy, cloudtrail_delivery_statements
from retention_lifecycle import audit_lifecycle_rules
from stack_context import StackContext, render
from vaults import BackupVaults, Vault


class AuditTrail(pulumi.ComponentResource):
    """CloudTrail, its key and its locked bucket."""

    key: aws.kms.Key
    vault: Vault
    trail: aws.cloudtrail.Trail

    def __init__(
        self,
        name: str,
        ctx: StackContext,
        roles: DutyRoles,
        vaults: BackupVaults,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("cosmic-backup:audit:AuditTrail", name, None, opts)
        settings = ctx.settings
        trail_name = f"{settings.name}-backup-access"
        # The bucket and key policies must name the trail before it exists.
        trail_arn = ctx.account_id.apply(
            lambda account: (
                f"arn:aws:cloudtrail:{settings.primary_region}:{account}:trail/{trail_name}"
            )
        )

        self.key = customer_key(
            f"{name}-key",
            ctx,
            self,
            region="primary",
            purpose="audit",
            description=f"{settings.name}: encrypts the CloudTrail logs of backup access",
            policy=render(
                lambda admins, account, trail, auditor: audit_key_policy(
                    admins, account, settings.primary_region, trail, [auditor]
                ),
                admins=ctx.key_administrators(),
                account=ctx.account_id,
                trail=trail_arn,
                auditor=roles.auditor.arn,
            ),
        )
        self.vault = Vault(
            f"{settings.name}-audit",
            ctx,
            region="primary",
            purpose="audit-trail",
            kms_key_arn=self.key.arn,
            lock=settings.audit_lock,
            lifecycle_rules=audit_lifecycle_rules(
                retention_days=settings.audit_retention_days,
                grace_days=settings.pruned_version_grace_days,
                cold_after_days=settings.cold_storage_after_days,
                cold_storage_class=settings.cold_storage_class,
                abort_incomplete_upload_days=settings.abort_incomplete_upload_days,
            ),
            extra_statements=lambda bucket_arn: pulumi.Output.all(
                bucket_arn, ctx.account_id, trail_arn
            ).apply(lambda values: cloudtrail_delivery_statements(*values)),
            opts=pulumi.ResourceOptions(parent=self),
        )
        backup_objects = [
            vaults.primary.bucket.arn.apply(lambda arn: f"{arn}/"),
            vaults.secondary.bucket.arn.apply(lambda arn: f"{arn}/"),
        ]
        self.trail = aws.cloudtrail.Trail(
            f"{name}-trail",
            name=trail_name,
            s3_bucket_name=self.vault.bucket.id,
            kms_key_id=self.key.arn,
            is_multi_region_trail=True,
            include_global_service_events=True,
            enable_log_file_validation=True,
            enable_logging=True,
            advanced_event_selectors=[
                {
                    "name": "Backup object reads, writes and deletes",
                    "field_selectors": [
                        {"field": "eventCategory", "equals": ["Data"]},
                        {"field": "resources.type", "equals": ["AWS::S3::Object"]},
                        {"field": "resources.ARN", "starts_withs": backup_objects},
                    ],
                },
                {
                    "name": "Management events, including every KMS key use and AssumeRole",
                    "field_selectors": [{"field": "eventCategory", "equals": ["Management"]}],
                },
            ],
            tags={"Purpose": "audit-trail"},
            opts=ctx.child(self, depends_on=[self.vault.policy]),
        )
        self.register_outputs({"trail_arn": self.trail.arn, "bucket": self.vault.bucket.id})
