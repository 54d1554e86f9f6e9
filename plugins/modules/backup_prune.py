#!/usr/bin/python
# Copyright: cosmic.backup engineers
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_prune
short_description: Delete backups that the retention policy no longer keeps
version_added: 0.1.0
description:
  - Computes, per kind, which backups the retention policy keeps (the newest of each
    day, ISO week, month and year inside each rule's window, like Borg's prune) and
    deletes the others from every repository, manifest first.
  - The defaults are the guide's tables - full database daily 30 days, weekly 90 days,
    monthly 1 year, yearly 7 years; WAL 7 days; uploads (files) 90 days; configuration
    90 days; code indefinitely. Every kind also keeps its newest backup.
  - Never deletes the newest verified backup of a kind, nor WAL that the oldest retained
    base backup needs (from its manifest's start segment). When that cannot be told,
    WAL is left alone and a warning says why.
  - A refusal from storage (S3 Object Lock, versioning, permissions) is reported per
    backup and repository, not retried.
author: cosmic.backup engineers (@cosmic-backup)
extends_documentation_fragment:
  - cosmic.backup.vault
  - cosmic.backup.monitoring
attributes:
  check_mode:
    description: Can run in check_mode and predict changed status without modifying target.
    support: full
    details: Returns exactly what would be deleted and why the rest stays; deletes nothing.
options:
  kinds:
    description: Prune only these kinds (default every kind present).
    type: list
    elements: str
    choices: [database, wal, files, config, code]
  retention:
    description:
      - "Per-kind rules over the guide's defaults, e.g.
        C({database: {daily: 30d, weekly: 90d, monthly: 1y, yearly: 7y}, files: {daily: 90d}})."
      - Rules are C(last) (a count), C(within), C(hourly), C(daily), C(weekly), C(monthly),
        C(yearly) (durations C(<n>h), C(<n>d), C(<n>w), C(<n>y)), or the word C(indefinite).
    type: dict
    default: {}
  purge_versions:
    description:
      - Also remove every stored version of a pruned backup in versioned S3 buckets.
        Without it, the bucket keeps pruned objects as noncurrent versions until its
        lifecycle rule expires them. Object Lock refuses a purge until the retention
        date; that refusal is reported.
    type: bool
    default: false
notes:
  - Deleting needs the maintenance role; reading base backup manifests for the WAL rule
    needs the key.
seealso:
  - module: cosmic.backup.backup_info
  - module: cosmic.backup.backup_verify
"""

EXAMPLES = r"""
- name: Show what the guide's retention would delete
  cosmic.backup.backup_prune:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
  check_mode: true
  register: would

- name: Prune, keeping uploads for 120 days instead of 90
  cosmic.backup.backup_prune:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    retention:
      files: {daily: 120d}
    monitoring:
      textfile_dir: /var/lib/prometheus/node-exporter
"""

RETURN = r"""
delete:
  description: The backups deleted (or, in check mode, that would be) - id, kind, created,
    bytes, and per repository the outcome (C(deleted), C(absent) or C(refused - ...)).
  returned: always
  type: list
  elements: dict
keep:
  description: The backups kept, each with the rules that keep it (C(daily 2025-04-06),
    C(newest verified), C(needed by the oldest base backup ...)).
  returned: always
  type: list
  elements: dict
refused:
  description: The backups that storage refused to delete, with the refusal.
  returned: always
  type: list
  elements: dict
delete_bytes:
  description: Stored bytes of the deleted backups, summed over repositories.
  returned: always
  type: int
policies:
  description: The rules applied per kind.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cosmic.backup.plugins.module_utils import catalog, pruning, retention
from ansible_collections.cosmic.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cosmic.backup.plugins.module_utils.module_args import (
    settings_from_params,
    vault_argument_spec,
)
from ansible_collections.cosmic.backup.plugins.module_utils.monitoring import (
    Monitor,
    MonitoringSettings,
    monitoring_argument_spec,
)
from ansible_collections.cosmic.backup.plugins.module_utils.settings import build_vault

KINDS = list(catalog.KINDS)


def main():
    spec = vault_argument_spec()
    spec.update(monitoring_argument_spec())
    spec.update(
        kinds={"type": "list", "elements": "str", "choices": KINDS},
        retention={"type": "dict", "default": {}},
        purge_versions={"type": "bool", "default": False},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    params = module.params
    try:
        monitor = Monitor(MonitoringSettings.from_dict(params["monitoring"]))
        policies = retention.policies_from_settings(params["retention"])
        vault = build_vault(settings_from_params(params))
        plan = pruning.collect(vault, policies, kinds=params["kinds"])
        warnings = list(plan.warnings)
        if not module.check_mode:
            for kind in sorted({item.ref.kind for item in plan.items}):
                part = pruning.Plan(plan.now, [i for i in plan.items if i.ref.kind == kind],
                                    plan.policies)
                with monitor.run("prune", kind) as run:
                    pruning.apply(vault, part, purge_versions=params["purge_versions"])
                    run.bytes = sum(sum(item.copies.values()) for item in part.doomed)
                    refused = part.refused()
                    if refused:
                        run.fail(f"{len(refused)} backups were refused: "
                                 + next(iter(o for o in refused[0].results.values()
                                             if o.startswith("refused"))))
                warnings += part.warnings + run.warnings
    except BackupError as error:
        module.fail_json(msg=str(error))
    result = plan.to_dict()
    del result["warnings"]  # Ansible reports them through module.warn
    for warning in warnings:
        module.warn(warning)
    for item in result["refused"]:
        module.warn(f"{item['id']} was not deleted everywhere: "
                    + "; ".join(f"{name}: {outcome}" for name, outcome in item["results"].items()
                                if outcome.startswith("refused")))
    deleted = any(outcome == "deleted" for item in plan.doomed
                  for outcome in item.results.values())
    module.exit_json(changed=deleted if not module.check_mode else bool(plan.doomed), **result)


if __name__ == "__main__":
    main()
