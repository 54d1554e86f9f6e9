#!/usr/bin/python
# Copyright: cosmic.backup engineers
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: database_backup
short_description: Full, schema-only or base backups of PostgreSQL into encrypted repositories
version_added: 0.1.0
description:
  - O(type=full) is a logical dump (C(pg_dump)) streamed through zstd and encryption into
    every repository, with the cluster's globals (roles, memberships, tablespaces from
    C(pg_dumpall --globals-only)) beside it, so a restore onto a fresh cluster works.
  - The manifest records the server version, the database size and the exact row count of
    every table, taken in the very snapshot the dump reads (an exported snapshot shared with
    C(pg_dump --snapshot)). A restore and the verification compare against those counts.
  - O(type=schema) is the same without data, for development environments.
  - O(type=base) is a physical base backup (C(pg_basebackup)) of the whole cluster, for
    point-in-time recovery with the WAL that C(cosmic-backup wal-push) archives (see the
    C(cosmic.backup.postgresql_archiving) role).
  - Remote and serverless PostgreSQL (Neon) work through O(connection_string) with
    C(sslmode=require).
  - A backup that fails (the server stops, the dump fails, the primary repository fails)
    leaves nothing that a restore could select.
author: cosmic.backup engineers (@cosmic-backup)
extends_documentation_fragment:
  - cosmic.backup.vault
  - cosmic.backup.postgres
attributes:
  check_mode:
    description: Can run in check_mode and predict changed status without modifying target.
    support: full
    details: Connects and reports what would be backed up (server, size, tables); nothing
      is dumped or stored.
options:
  type:
    description: What to back up.
    type: str
    choices: [full, schema, base]
    default: full
  format:
    description:
      - C(custom) streams one archive (no temporary space); C(directory) lets O(jobs)
        dump tables in parallel, through a spool directory under O(work_dir).
      - Ignored for O(type=base).
    type: str
    choices: [custom, directory]
    default: custom
  jobs:
    description: Parallel dump jobs (needs O(format=directory)).
    type: int
    default: 1
  globals:
    description: Also back up roles, memberships and tablespaces.
    type: bool
    default: true
  label:
    description: A note kept in the manifest (why this backup was taken).
    type: str
  work_dir:
    description: Where O(format=directory) spools the dump (needs room for it).
    type: path
  verify:
    description:
      - After a logical backup, restore it into a throwaway PostgreSQL instance and compare
        every table's row count and run amcheck on every btree index (the guide's
        "verified by restoring to a test instance").
    type: bool
    default: false
seealso:
  - module: cosmic.backup.database_restore
  - module: cosmic.backup.backup_verify
  - module: community.postgresql.postgresql_db
    description: Its dump and restore have no checksum, encryption, upload or check mode.
"""

EXAMPLES = r"""
- name: Daily full backup (the guide's automated daily backup)
  cosmic.backup.database_backup:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    login_host: /var/run/postgresql
    database: cosmic
    verify: true
  become: true
  become_user: postgres

- name: Schema-only backup for development environments
  cosmic.backup.database_backup:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    database: cosmic
    type: schema

- name: Neon serverless PostgreSQL, by connection string
  cosmic.backup.database_backup:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    connection_string: "{{ neon_connection_string }}"  # postgresql://...?sslmode=require
    sslmode: require

- name: Weekly base backup for point-in-time recovery
  cosmic.backup.database_backup:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    type: base
    login_host: /var/run/postgresql
  become: true
  become_user: postgres
"""

RETURN = r"""
backup_id:
  description: The new backup's id (null in check mode).
  returned: always
  type: str
  sample: 20260406T020000.123Z-database-k3f9q2
type:
  description: full, schema or base.
  returned: always
  type: str
database:
  description: The database backed up (the cluster for a base backup).
  returned: always
  type: str
size:
  description: Bytes read from PostgreSQL (dump and globals, or the base backup's tar).
  returned: success
  type: int
stored_size:
  description: Bytes stored in each repository after compression and encryption.
  returned: success
  type: int
tables:
  description: Number of tables in the manifest (with their row counts).
  returned: when type is full or schema
  type: int
rows:
  description: Total rows counted in the dump's snapshot.
  returned: when type is full
  type: int
duration:
  description: Seconds the backup took.
  returned: success
  type: float
executed_commands:
  description: The tool command lines run (passwords are never on them).
  returned: success
  type: list
  elements: str
start_wal_segment:
  description: First WAL segment a base backup needs (pruning keeps WAL from here on).
  returned: when type is base
  type: str
verification:
  description: The throwaway-instance checks, when O(verify) is set; each with name, ok, detail.
  returned: when verify is true
  type: dict
would_back_up:
  description: In check mode, the server, database size and table count that would be read.
  returned: check mode
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cosmic.backup.plugins.module_utils import database, pitr
from ansible_collections.cosmic.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cosmic.backup.plugins.module_utils.module_args import (
    settings_from_params,
    vault_argument_spec,
)
from ansible_collections.cosmic.backup.plugins.module_utils.pg_tools import (
    connection_from_params,
    postgres_argument_spec,
)
from ansible_collections.cosmic.backup.plugins.module_utils.settings import build_vault


def main():
    spec = vault_argument_spec()
    spec.update(postgres_argument_spec())
    spec.update(
        type={"type": "str", "choices": ["full", "schema", "base"], "default": "full"},
        format={"type": "str", "choices": ["custom", "directory"], "default": "custom"},
        jobs={"type": "int", "default": 1},
        globals={"type": "bool", "default": True},
        label={"type": "str"},
        work_dir={"type": "path"},
        verify={"type": "bool", "default": False},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    params = module.params
    connection = connection_from_params(params)
    try:
        vault = build_vault(settings_from_params(params))
        if module.check_mode:
            facts = database.describe_database(connection)
            vault.primary.storage.probe()
            module.exit_json(changed=True, backup_id=None, type=params["type"],
                             database=facts["database"], would_back_up=facts)
        if params["type"] == "base":
            base = pitr.base_backup(vault, connection, label=params["label"])
            result = {"backup_id": base.backup_id, "size": base.size,
                      "stored_size": base.stored_size, "duration": round(base.duration, 3),
                      "executed_commands": base.commands, "database": "(cluster)",
                      "start_wal_segment": base.meta["start_wal_segment"]}
            warnings = base.warnings
        else:
            dump = database.backup_database(
                vault, connection, type=params["type"], format=params["format"],
                jobs=params["jobs"], include_globals=params["globals"],
                work_dir=params["work_dir"], label=params["label"])
            result = {"backup_id": dump.backup_id, "database": dump.database, "size": dump.size,
                      "stored_size": dump.stored_size, "tables": dump.tables, "rows": dump.rows,
                      "duration": round(dump.duration, 3), "executed_commands": dump.commands}
            warnings = dump.warnings
            if params["verify"]:
                report = database.verify_database_backup(vault, dump.backup_id,
                                                         work_dir=params["work_dir"])
                result["verification"] = {
                    "ok": report.ok, "duration": round(report.duration, 3),
                    "checks": [check.__dict__ for check in report.checks]}
                if not report.ok:
                    failed = next(check for check in report.checks if not check.ok)
                    module.fail_json(
                        msg=f"backup {dump.backup_id} was stored but failed verification: "
                            f"{failed.name}: {failed.detail}; do not rely on it and "
                            "investigate before the next run", changed=True, **result)
    except BackupError as error:
        module.fail_json(msg=str(error))
    for warning in warnings:
        module.warn(warning)
    module.exit_json(changed=True, type=params["type"], **result)


if __name__ == "__main__":
    main()
