#!/usr/bin/python
# Copyright: cosmic.backup engineers
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_info
short_description: The backup catalog as data, with freshness, verification and capacity
version_added: 0.1.0
description:
  - Lists every complete backup in every repository, per kind, with sizes, ages,
    whether a secondary copy exists, when each was last verified and with what
    result, and the database's point-in-time window.
  - With O(max_age), fails when the newest backup of a kind is older than its limit
    (the guide's RPO), so a monitoring job can page on stale backups; with
    O(monitoring) it also sends the alert and writes C(cosmic_backup_catalog.prom).
  - Needs no key. Everything comes from object names and the plain verification
    records (C(audit/verifications/) in each repository).
  - Shows the audit trail of one backup (who created, verified, restored or pruned
    it) with O(audit_for).
author: cosmic.backup engineers (@cosmic-backup)
extends_documentation_fragment:
  - cosmic.backup.vault
  - cosmic.backup.monitoring
attributes:
  check_mode:
    description: Can run in check_mode and predict changed status without modifying target.
    support: full
    details: Reads only; in check mode no metrics file is written and no alert is sent.
options:
  kinds:
    description: Only these kinds (default all).
    type: list
    elements: str
    choices: [database, wal, files, config, code]
  max_age:
    description:
      - "Freshness limit per kind, such as C({database: 26h, wal: 1h, files: 26h}).
        Durations are C(<n>h), C(<n>d), C(<n>w) or C(<n>y). The word C(guide) uses
        the guide's limits (database 26h, wal 1h, files 26h)."
      - Kinds without a limit are listed but never stale.
    type: raw
  fail_on_stale:
    description: Fail when a kind is stale. With C(false) the stale kinds are only returned.
    type: bool
    default: true
  audit_for:
    description: A backup (C(latest), C(YYYY-MM-DD) or an id) whose audit trail to return.
    type: str
  audit_kind:
    description: The kind O(audit_for) selects from.
    type: str
  audit_logs:
    description:
      - Further JSON-lines audit logs to search for O(audit_for), such as the one the
        C(cosmic.backup.audit_log) callback writes on the controller (readable on the
        managed host).
    type: list
    elements: path
    default: []
seealso:
  - module: cosmic.backup.backup_verify
  - module: cosmic.backup.backup_prune
"""

EXAMPLES = r"""
- name: Page when a backup is older than the guide's RPO
  cosmic.backup.backup_info:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    max_age: {database: 26h, wal: 1h, files: 26h}
    monitoring:
      textfile_dir: /var/lib/prometheus/node-exporter
      webhook_url: "{{ cosmic_backup_alert_webhook }}"
      paths: [/var/spool/cosmic-backup]

- name: Who touched yesterday's database backup?
  cosmic.backup.backup_info:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    kinds: [database]
    audit_for: "2025-04-06"
    audit_kind: database
  register: catalog

- name: Print the summary
  ansible.builtin.debug:
    msg: "{{ catalog.summary }}"
"""

RETURN = r"""
summary:
  description: One line per kind, for people.
  returned: always
  type: list
  elements: str
  sample:
    - "database  ok      31 backups,   4.2 GiB, newest 5.1 h old (limit 26h), verified 5.0 h ago"
kinds:
  description: Per kind, count, bytes, newest and oldest id, newest age, newest verified backup,
    last verification time and age, backups without a secondary copy, max_age and stale.
  returned: always
  type: dict
backups:
  description: Every backup, oldest first, with id, kind, created, age_seconds, copies
    (repository to stored bytes), bytes, secondary_copy and verified (time, ok, repository).
  returned: always
  type: list
  elements: dict
stale:
  description: Kinds whose newest backup is older than their max_age (or that have none).
  returned: always
  type: list
  elements: str
point_in_time:
  description: Earliest and latest recoverable time of the database, estimated from backup and
    WAL archive times; null without WAL archives.
  returned: always
  type: dict
usage:
  description: Backups and stored bytes per repository and kind.
  returned: always
  type: list
  elements: dict
free_space:
  description: Free space of the monitored paths and local repositories, with C(low) flags.
  returned: always
  type: list
  elements: dict
audit_trail:
  description: Events of the O(audit_for) backup, oldest first.
  returned: when audit_for is set
  type: list
  elements: dict
alerts:
  description: Alerts sent for stale kinds, and how each delivery went.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cosmic.backup.plugins.module_utils import catalog, info
from ansible_collections.cosmic.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cosmic.backup.plugins.module_utils.module_args import (
    settings_from_params,
    vault_argument_spec,
)
from ansible_collections.cosmic.backup.plugins.module_utils.monitoring import (
    Monitor,
    MonitoringSettings,
    monitoring_argument_spec,
    parse_max_age,
)
from ansible_collections.cosmic.backup.plugins.module_utils.settings import build_vault

KINDS = list(catalog.KINDS)


def main():
    spec = vault_argument_spec()
    spec.update(monitoring_argument_spec())
    spec.update(
        kinds={"type": "list", "elements": "str", "choices": KINDS},
        max_age={"type": "raw"},
        fail_on_stale={"type": "bool", "default": True},
        audit_for={"type": "str"},
        audit_kind={"type": "str"},
        audit_logs={"type": "list", "elements": "path", "default": []},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    params = module.params
    try:
        monitoring = MonitoringSettings.from_dict(params["monitoring"])
        vault = build_vault(settings_from_params(params))
        result = info.report(vault, kinds=params["kinds"], max_age=parse_max_age(
            params["max_age"]), spool_paths=monitoring.paths,
            min_free_percent=monitoring.min_free_percent,
            min_free_bytes=monitoring.min_free_bytes)
        if params["audit_for"]:
            ref = vault.select(params["audit_for"], params["audit_kind"])
            result["audit_trail"] = info.audit_trail(vault, ref.id, params["audit_logs"])
        deliveries = []
        if not module.check_mode:
            if monitoring.textfile_dir:
                try:
                    info.write_metrics(monitoring.textfile_dir, result)
                except BackupError as error:
                    result["warnings"].append(str(error))
            monitor = Monitor(monitoring)
            for alert in info.stale_alerts(result):
                for delivery in monitor.alert(alert):
                    deliveries.append({"kind": alert.kind, "channel": delivery.channel,
                                       "ok": delivery.ok, "detail": delivery.detail})
    except BackupError as error:
        module.fail_json(msg=str(error))
    result["alerts"] = deliveries
    for warning in result.pop("warnings"):
        module.warn(warning)
    if result["stale"] and params["fail_on_stale"]:
        details = "; ".join(f"{kind}: newest {result['kinds'][kind]['newest'] or 'none'}, "
                            f"limit {result['kinds'][kind]['max_age']}"
                            for kind in result["stale"])
        module.fail_json(msg=f"stale backups: {details}; run ./scripts/backup.sh "
                             f"{result['stale'][0]} and check the backup timers",
                         changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
