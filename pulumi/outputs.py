"""Stack outputs: exactly what the Ansible inventory needs, named as its variables.

`pulumi/outputs_to_inventory.py` turns `pulumi stack output --json` into group_vars
by prefixing each name with `cosmic_backup_`; keep the two lists in step (a test
checks it).
"""

from __future__ import annotations

import pulumi

from access import DutyRoles
from audit import AuditTrail
from keys import BackupKeys
from monitoring import Monitoring
from stack_context import StackContext
from vaults import BackupVaults

OUTPUT_NAMES = (
    "primary_bucket",
    "secondary_bucket",
    "primary_region",
    "secondary_region",
    "repository_prefix",
    "kms_key_arns",
    "writer_role_arn",
    "restore_role_arn",
    "maintenance_role_arn",
    "auditor_role_arn",
    "alert_topic_arn",
    "audit_bucket",
)


def stack_outputs(
    ctx: StackContext,
    roles: DutyRoles,
    keys: BackupKeys,
    vaults: BackupVaults,
    audit: AuditTrail,
    monitoring: Monitoring,
) -> dict[str, pulumi.Input]:
    """Output name -> value; kms_key_arns lists the primary key, then the secondary replica."""
    outputs: dict[str, pulumi.Input] = {
        "primary_bucket": vaults.primary.bucket.id,
        "secondary_bucket": vaults.secondary.bucket.id,
        "primary_region": ctx.settings.primary_region,
        "secondary_region": ctx.settings.secondary_region,
        "repository_prefix": ctx.settings.repository_prefix,
        "kms_key_arns": keys.data_key_arns,
        "writer_role_arn": roles.writer.arn,
        "restore_role_arn": roles.restore.arn,
        "maintenance_role_arn": roles.maintenance.arn,
        "auditor_role_arn": roles.auditor.arn,
        "alert_topic_arn": monitoring.topic.arn,
        "audit_bucket": audit.vault.bucket.id,
    }
    assert tuple(outputs) == OUTPUT_NAMES
    return outputs


def export(outputs: dict[str, pulumi.Input]) -> None:
    for name, value in outputs.items():
        pulumi.export(name, value)
