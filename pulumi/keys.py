"""KMS keys: the backup data (envelope) key in both regions, and each bucket's SSE key.

Two kinds of key, two jobs:

- The *data key* protects the data keys of the engine's client-side encryption (AWS
  Encryption SDK). It is multi-region: a primary in the primary region and a
  replica in the secondary one share key material, so either region alone can
  unwrap. Backup hosts may generate and wrap data keys but never unwrap them;
  unwrapping belongs to the restore and maintenance roles.
- The *storage keys* (one per region) are the buckets' SSE-KMS keys, usable only
  through S3. A backup host needs them to upload (S3 asks KMS on its behalf), and
  that gives it nothing: it can neither read backups back nor unwrap their keys.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from access import DutyRoles
from policy_documents import data_key_policy, storage_key_policy
from stack_context import StackContext, render

REGIONS = ("primary", "secondary")


def customer_key(
    name: str,
    ctx: StackContext,
    parent: pulumi.Resource,
    *,
    region: str,
    purpose: str,
    description: str,
    policy: pulumi.Input[str],
    multi_region: bool = False,
) -> aws.kms.Key:
    """A symmetric customer-managed key with rotation, a key policy and an alias."""
    key = aws.kms.Key(
        name,
        description=description,
        enable_key_rotation=True,
        rotation_period_in_days=365,
        deletion_window_in_days=ctx.settings.key_deletion_window_days,
        multi_region=multi_region,
        policy=policy,
        tags={"Purpose": purpose},
        opts=ctx.child(parent, region, protect=True),
    )
    aws.kms.Alias(
        f"{name}-alias",
        name=f"alias/{ctx.settings.name}-{purpose}",
        target_key_id=key.key_id,
        opts=ctx.child(parent, region),
    )
    return key


class BackupKeys(pulumi.ComponentResource):
    """The data key (multi-region primary + replica) and one storage key per region."""

    data_key: aws.kms.Key
    data_key_replica: aws.kms.ReplicaKey
    storage_keys: dict[str, aws.kms.Key]

    def __init__(
        self,
        name: str,
        ctx: StackContext,
        roles: DutyRoles,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("cosmic-backup:keys:BackupKeys", name, None, opts)
        settings = ctx.settings
        admins = ctx.key_administrators()
        decrypters = [roles.restore.arn, roles.maintenance.arn]

        data_policy = render(
            lambda admins, writer, restore, maintenance: data_key_policy(
                admins, writer, [restore, maintenance]
            ),
            admins=admins,
            writer=roles.writer.arn,
            restore=decrypters[0],
            maintenance=decrypters[1],
        )
        self.data_key = customer_key(
            f"{name}-data",
            ctx,
            self,
            region="primary",
            purpose="backup-data",
            description=f"{settings.name}: wraps the data keys of backups (multi-region primary)",
            policy=data_policy,
            multi_region=True,
        )
        self.data_key_replica = aws.kms.ReplicaKey(
            f"{name}-data-replica",
            description=f"{settings.name}: wraps the data keys of backups (secondary replica)",
            primary_key_arn=self.data_key.arn,
            deletion_window_in_days=settings.key_deletion_window_days,
            policy=data_policy,
            tags={"Purpose": "backup-data"},
            opts=ctx.child(self, "secondary", protect=True),
        )
        aws.kms.Alias(
            f"{name}-data-replica-alias",
            name=f"alias/{settings.name}-backup-data",
            target_key_id=self.data_key_replica.key_id,
            opts=ctx.child(self, "secondary"),
        )

        self.storage_keys = {}
        for region in REGIONS:
            # The writer uploads to the primary only; the secondary is filled by replication.
            writers = [roles.writer.arn, *decrypters] if region == "primary" else decrypters
            policy = render(
                lambda admins, writers, auditor, replication, region=region: storage_key_policy(
                    admins,
                    ctx.region_name(region),
                    writers,
                    [auditor],
                    replication,
                    "source" if region == "primary" else "destination",
                ),
                admins=admins,
                writers=pulumi.Output.all(*writers),
                auditor=roles.auditor.arn,
                replication=roles.replication.arn,
            )
            self.storage_keys[region] = customer_key(
                f"{name}-storage-{region}",
                ctx,
                self,
                region=region,
                purpose="backup-storage",
                description=f"{settings.name}: SSE-KMS of the {region} backup bucket",
                policy=policy,
            )

        self.register_outputs(
            {
                "data_key_arn": self.data_key.arn,
                "data_key_replica_arn": self.data_key_replica.arn,
                "storage_key_arns": {region: key.arn for region, key in self.storage_keys.items()},
            }
        )

    @property
    def data_key_arns(self) -> pulumi.Output[list[str]]:
        """Primary first, then the secondary-region replica (what the engine wraps with)."""
        return pulumi.Output.all(self.data_key.arn, self.data_key_replica.arn)
