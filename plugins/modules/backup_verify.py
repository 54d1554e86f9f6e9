#!/usr/bin/python
# Copyright: cosmic.backup engineers
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_verify
short_description: Verify backups and record the result where backup_info sees it
version_added: 0.1.0
description:
  - Verifies one backup chosen by O(selector), or a random O(sample) of the retained
    backups (the guide's weekly check of random previous backups).
  - Every verification decrypts and authenticates every stored object of every copy
    against the manifest, then runs the kind's own check when one is installed
    (database - restore into a throwaway instance; files - checksums; configuration -
    syntax).
  - The result (when, which checks, pass or fail) is written as a small plain record
    into every repository (C(audit/verifications/<kind>/<id>/)), which C(backup_info)
    shows and C(backup_prune) uses to protect the newest verified backup.
  - Fails when any verification fails, naming the check, the repository and the error.
author: cosmic.backup engineers (@cosmic-backup)
extends_documentation_fragment:
  - cosmic.backup.vault
  - cosmic.backup.monitoring
attributes:
  check_mode:
    description: Can run in check_mode and predict changed status without modifying target.
    support: full
    details: Returns the backups that would be verified and verifies nothing.
options:
  selector:
    description: C(latest), a date C(YYYY-MM-DD) (the newest of that UTC day) or a backup id.
    type: str
    default: latest
  kind:
    description: The kind O(selector) or O(sample) chooses from.
    type: str
    choices: [database, wal, files, config, code]
  sample:
    description:
      - Verify this many backups drawn at random instead of O(selector). Draws from
        O(kind), or from every kind but WAL (WAL is checked by the database restore
        test that replays it).
    type: int
  deep:
    description: Run the kind's own check after the stored-object authentication.
    type: bool
    default: true
  record:
    description: Write the verification record into the repositories.
    type: bool
    default: true
notes:
  - Needs the key (decrypting is the point); with KMS, the restore role.
seealso:
  - module: cosmic.backup.backup_info
"""

EXAMPLES = r"""
- name: Verify the latest database backup (after each backup)
  cosmic.backup.backup_verify:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    kind: database

- name: Weekly - verify three random previous backups
  cosmic.backup.backup_verify:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    sample: 3
    monitoring:
      textfile_dir: /var/lib/prometheus/node-exporter
      sns_topic_arn: "{{ cosmic_backup_alert_topic_arn }}"
"""

RETURN = r"""
verifications:
  description: One entry per verified backup - backup_id, kind, time, ok, checks (name,
    ok, detail, repository), duration_seconds, notes, recorded_in and warnings.
  returned: always
  type: list
  elements: dict
would_verify:
  description: The backup ids that would be verified (check mode).
  returned: check mode
  type: list
  elements: str
verified:
  description: How many backups passed.
  returned: always
  type: int
failed:
  description: How many backups failed.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cosmic.backup.plugins.module_utils import catalog, verification
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

try:  # each kind's engine module registers its check on import (and Ansible ships it)
    from ansible_collections.cosmic.backup.plugins.module_utils import database, files
except ImportError:
    database = files = None
KIND_CHECKS = (database, files)  # imported for their registration alone

KINDS = list(catalog.KINDS)


def main():
    spec = vault_argument_spec()
    spec.update(monitoring_argument_spec())
    spec.update(
        selector={"type": "str", "default": "latest"},
        kind={"type": "str", "choices": KINDS},
        sample={"type": "int"},
        deep={"type": "bool", "default": True},
        record={"type": "bool", "default": True},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    params = module.params
    results, warnings = [], []
    try:
        monitor = Monitor(MonitoringSettings.from_dict(params["monitoring"]))
        vault = build_vault(settings_from_params(params))
        if params["sample"] is not None:
            listings = vault.list(params["kind"])
            pool = verification.sample_pool(listings, [params["kind"]] if params["kind"] else None)
            refs = verification.choose_sample(pool, params["sample"])
        else:
            refs = [vault.select(params["selector"], params["kind"])]
        if module.check_mode:
            module.exit_json(changed=False, would_verify=[ref.id for ref in refs],
                             verifications=[], verified=0, failed=0)
        for ref in refs:
            with monitor.run("verify", ref.kind) as run:
                outcome = verification.verify_backup(vault, ref, deep=params["deep"],
                                                     record=params["record"])
                if not outcome.ok:
                    run.fail(outcome.summary())
            results.append(outcome.to_dict())
            warnings += outcome.warnings + run.warnings
    except BackupError as error:
        module.fail_json(msg=str(error), verifications=results)
    for warning in warnings:
        module.warn(warning)
    failed = [item for item in results if not item["ok"]]
    summary = {"verifications": results, "verified": len(results) - len(failed),
               "failed": len(failed), "changed": params["record"] and bool(results)}
    if failed:
        first = failed[0]
        bad = next(check for check in first["checks"] if not check["ok"]) if first["checks"] \
            else {"name": "verification", "detail": "no check ran", "repository": None}
        where = f" in {bad['repository']}" if bad.get("repository") else ""
        module.fail_json(
            msg=f"{len(failed)} of {len(results)} backups failed verification; "
                f"{first['backup_id']}: {bad['name']}{where}: {bad['detail']}. Restores read "
                "the other repository's copy; take a new backup if every copy is damaged",
            **summary)
    module.exit_json(**summary)


if __name__ == "__main__":
    main()
