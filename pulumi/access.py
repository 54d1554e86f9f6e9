"""IAM: one role per duty, separate credentials for each.

Roles are created first (their trust policies need nothing else), so key policies
can name them; their permissions come last, once buckets, keys and the alert topic
exist. KMS use is granted in the key policies only (the key decides who uses it);
the identity policies here grant S3, CloudWatch and SNS, and carry the explicit
denies that keep each duty in its lane.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pulumi
import pulumi_aws as aws

from policy_documents import (
    Repository,
    auditor_policy,
    human_trust,
    machine_trust,
    maintenance_policy,
    restore_policy,
    service_trust,
    writer_policy,
)
from stack_context import StackContext, render

if TYPE_CHECKING:
    from audit import AuditTrail
    from keys import BackupKeys
    from monitoring import Monitoring
    from vaults import BackupVaults

# The Duty tag says what a role is for; the policy suite keys its rules on it.
DUTIES = {
    "writer": "backup-writer",
    "restore": "restore",
    "maintenance": "maintenance",
    "auditor": "auditor",
    "replication": "replication",
}
HUMAN_DUTIES = ("restore", "maintenance", "auditor")
SESSION_SECONDS = 3600


class DutyRoles(pulumi.ComponentResource):
    """The five roles and who may assume them; people only with a recent MFA."""

    writer: aws.iam.Role
    restore: aws.iam.Role
    maintenance: aws.iam.Role
    auditor: aws.iam.Role
    replication: aws.iam.Role

    def __init__(
        self, name: str, ctx: StackContext, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("cosmic-backup:access:DutyRoles", name, None, opts)
        settings = ctx.settings

        operators = ctx.principals(settings.operator_principals)
        auditors = ctx.principals(settings.auditor_principals or settings.operator_principals)
        trust = {
            "writer": render(
                machine_trust, principals=ctx.principals(settings.backup_host_principals)
            ),
            "restore": render(
                human_trust, principals=operators, max_mfa_age_seconds=settings.mfa_max_age_seconds
            ),
            "maintenance": render(
                human_trust, principals=operators, max_mfa_age_seconds=settings.mfa_max_age_seconds
            ),
            "auditor": render(
                human_trust, principals=auditors, max_mfa_age_seconds=settings.mfa_max_age_seconds
            ),
            "replication": json.dumps(service_trust("s3.amazonaws.com")),
        }
        descriptions = {
            "writer": "Backup hosts: write new backups; no read, delete, decrypt or reconfigure",
            "restore": "Restore operators (MFA): read and decrypt backups",
            "maintenance": "Pruning (MFA): delete expired backups",
            "auditor": "Auditors (MFA): read the audit trail",
            "replication": "S3 replication from the primary to the secondary bucket",
        }
        for duty, tag in DUTIES.items():
            role = aws.iam.Role(
                f"{name}-{duty}",
                name=f"{settings.name}-{duty}",
                description=descriptions[duty],
                assume_role_policy=trust[duty],
                max_session_duration=SESSION_SECONDS,
                force_detach_policies=True,
                tags={"Duty": tag},
                opts=ctx.child(self),
            )
            setattr(self, duty, role)

        self.register_outputs({f"{duty}_role_arn": getattr(self, duty).arn for duty in DUTIES})

    def arn(self, duty: str) -> pulumi.Output[str]:
        return getattr(self, duty).arn


class DutyPolicies(pulumi.ComponentResource):
    """The inline permissions of the writer, restore, maintenance and auditor roles."""

    def __init__(
        self,
        name: str,
        ctx: StackContext,
        roles: DutyRoles,
        keys: BackupKeys,
        vaults: BackupVaults,
        audit: AuditTrail,
        monitoring: Monitoring,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("cosmic-backup:access:DutyPolicies", name, None, opts)
        prefix = ctx.settings.repository_prefix

        def repositories(primary: str, secondary: str) -> list[Repository]:
            return [Repository(primary, prefix), Repository(secondary, prefix)]

        buckets = {"primary": vaults.primary.bucket.arn, "secondary": vaults.secondary.bucket.arn}
        topic = monitoring.topic.arn
        documents = {
            "writer": render(
                lambda primary, secondary, data_keys, storage_keys, topic: writer_policy(
                    Repository(primary, prefix),
                    Repository(secondary, prefix),
                    data_keys,
                    storage_keys,
                    topic,
                ),
                **buckets,
                data_keys=keys.data_key_arns,
                storage_keys=pulumi.Output.all(*(key.arn for key in keys.storage_keys.values())),
                topic=topic,
            ),
            "restore": render(
                lambda primary, secondary, topic: restore_policy(
                    repositories(primary, secondary), topic
                ),
                **buckets,
                topic=topic,
            ),
            "maintenance": render(
                lambda primary, secondary, topic: maintenance_policy(
                    repositories(primary, secondary), topic
                ),
                **buckets,
                topic=topic,
            ),
            "auditor": render(
                lambda primary, secondary, audit_bucket, trail: auditor_policy(
                    audit_bucket, repositories(primary, secondary), trail
                ),
                **buckets,
                audit_bucket=audit.vault.bucket.arn,
                trail=audit.trail.arn,
            ),
        }
        self.policies = {
            duty: aws.iam.RolePolicy(
                f"{name}-{duty}",
                name=f"{ctx.settings.name}-{duty}",
                role=getattr(roles, duty).id,
                policy=document,
                opts=ctx.child(self),
            )
            for duty, document in documents.items()
        }
        self.register_outputs(
            {f"{duty}_policy": policy.policy for duty, policy in self.policies.items()}
        )
