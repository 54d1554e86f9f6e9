"""cosmic.backup storage: primary and offsite buckets, keys, duty roles, audit, alarms.

Applied by CI (`pulumi preview` on pull requests, `pulumi up` on main); see
docs/pulumi.md. Everything a stack decides lives in Pulumi.<stack>.yaml.
"""

from access import DutyPolicies, DutyRoles
from audit import AuditTrail
from keys import BackupKeys
from monitoring import Monitoring
from outputs import export, stack_outputs
from stack_context import StackContext
from stack_settings import load_settings
from vaults import BackupVaults

ctx = StackContext.create(load_settings())
roles = DutyRoles("duties", ctx)
keys = BackupKeys("keys", ctx, roles)
vaults = BackupVaults("vaults", ctx, keys, roles)
monitoring = Monitoring("monitoring", ctx, roles, vaults)
audit = AuditTrail("audit", ctx, roles, vaults)
DutyPolicies("duty-policies", ctx, roles, keys, vaults, audit, monitoring)
export(stack_outputs(ctx, roles, keys, vaults, audit, monitoring))
