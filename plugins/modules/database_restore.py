#!/usr/bin/python
# Copyright: cosmic.backup engineers
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: database_restore
short_description: Restore PostgreSQL from a logical backup, or to a point in time
version_added: 0.1.0
description:
  - "Logical restore (the default): the backup named by O(selector) is restored into a new
    database on the server, every table's row count is compared with the manifest, and only
    then is it swapped in by renaming, in one transaction. The database that was there is
    kept as C(<name>_pre_restore_<time>) until an operator drops it: it is the guide's
    backup of the current database, and nothing is lost if anything fails."
  - The backup's roles and memberships are created when missing (existing roles are never
    changed), so a restore onto a fresh cluster works.
  - "Point-in-time restore (O(target_time), or O(method=point_in_time)): a new data
    directory is built beside O(data_directory) from the newest base backup before the
    target, archived WAL is replayed up to O(target_time) (or to the end of the archive),
    and the server is waited for until it has left recovery. Only then, and only when
    PostgreSQL is stopped, is the current data directory moved to
    C(<data_directory>.pre_restore_<time>) and the new one put in its place."
  - Stop the application before a logical restore (the guide's step 2); sessions connected
    to the database make the restore fail unless O(terminate_connections) is set.
author: cosmic.backup engineers (@cosmic-backup)
extends_documentation_fragment:
  - cosmic.backup.vault
  - cosmic.backup.postgres
attributes:
  check_mode:
    description: Can run in check_mode and predict changed status without modifying target.
    support: full
    details: Resolves the backup, checks the WAL archive for gaps and reports what would be
      replaced; nothing is restored.
options:
  method:
    description: C(logical) restores a dump; C(point_in_time) a base backup and WAL.
    type: str
    choices: [logical, point_in_time]
    default: logical
  selector:
    description:
      - C(latest), a date C(YYYY-MM-DD) (the newest backup of that UTC day) or a backup id.
      - Selects among logical backups (full or schema) for O(method=logical), among base
        backups for O(method=point_in_time) without O(target_time).
    type: str
    default: latest
  target_time:
    description:
      - Recover to this moment (ISO 8601 with a time zone, such as C(2026-04-06T14:30:00+00:00)).
        Transactions committed before it are kept, later ones are not. Implies
        O(method=point_in_time).
    type: str
  jobs:
    description:
      - Parallel restore jobs for O(method=logical).
      - More than 1 writes the dump out under O(work_dir) first, and each table loads with
        C(COPY FREEZE), so it needs no second write when it is first read. A custom-format
        dump that does not fit there is streamed into C(pg_restore) with one job instead,
        with a warning.
    type: int
    default: 1
  restore_globals:
    description: Create the backup's roles and memberships that the server lacks.
    type: bool
    default: true
  no_owner:
    description: Do not restore ownership and privileges (a development copy on a server
      without the production roles).
    type: bool
    default: false
  terminate_connections:
    description: Disconnect sessions of the database being replaced instead of failing.
    type: bool
    default: false
  maintenance_database:
    description: Database to connect to for creating and renaming databases.
    type: str
    default: postgres
  work_dir:
    description: Scratch space for parallel restores (the system's temporary directory if unset).
    type: path
  data_directory:
    description: The cluster's data directory (O(method=point_in_time)).
    type: path
  owner:
    description: The operating-system user PostgreSQL runs as (owns the restored files).
    type: str
    default: postgres
  swap:
    description: Move the restored data directory into place when PostgreSQL is stopped.
      With C(false) it is left beside the current one.
    type: bool
    default: true
seealso:
  - module: cosmic.backup.database_backup
"""

EXAMPLES = r"""
- name: Restore the latest backup (the guide's ./scripts/restore.sh database latest)
  cosmic.backup.database_restore:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    login_host: /var/run/postgresql
    database: cosmic
  become: true
  become_user: postgres

- name: Restore the backup of 2026-04-06 into a copy for inspection
  cosmic.backup.database_restore:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    selector: "2026-04-06"
    database: cosmic_20260406

- name: Recover the cluster to just before a bad migration
  cosmic.backup.database_restore:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    target_time: "2026-04-06T14:29:00+00:00"
    data_directory: /var/lib/postgresql/15/main
  become: true
"""

RETURN = r"""
backup_id:
  description: The backup restored (the base backup for a point-in-time restore).
  returned: always
  type: str
database:
  description: The database restored (logical).
  returned: when method is logical
  type: str
previous:
  description: Where what was replaced now lives (database name or data directory), or null.
  returned: always
  type: str
checks:
  description: Per table, whether the restored row count matches the manifest.
  returned: when method is logical
  type: list
  elements: dict
data_directory:
  description: Where the restored data directory is (point in time).
  returned: when method is point_in_time
  type: str
restored_to:
  description: The target time, or C(end of archived WAL).
  returned: when method is point_in_time
  type: str
wal_files:
  description: WAL files fetched for the replay.
  returned: when method is point_in_time
  type: int
duration:
  description: Seconds the restore took.
  returned: success
  type: float
executed_commands:
  description: The tool command lines run (passwords are never on them).
  returned: when method is logical
  type: list
  elements: str
plan:
  description: In check mode, what would be restored and what would be replaced.
  returned: check mode
  type: dict
"""

from datetime import datetime

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


def parse_time(module, text):
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        module.fail_json(msg=f"target_time {text!r} is not an ISO 8601 time: use "
                             "2026-04-06T14:30:00+00:00")
    if value.tzinfo is None:
        module.fail_json(msg=f"target_time {text!r} has no time zone: add +00:00 (UTC) or "
                             "the server's offset")
    return value


def main():
    spec = vault_argument_spec()
    spec.update(postgres_argument_spec())
    spec.update(
        method={"type": "str", "choices": ["logical", "point_in_time"], "default": "logical"},
        selector={"type": "str", "default": "latest"},
        target_time={"type": "str"},
        jobs={"type": "int", "default": 1},
        restore_globals={"type": "bool", "default": True},
        no_owner={"type": "bool", "default": False},
        terminate_connections={"type": "bool", "default": False},
        maintenance_database={"type": "str", "default": "postgres"},
        work_dir={"type": "path"},
        data_directory={"type": "path"},
        owner={"type": "str", "default": "postgres"},
        swap={"type": "bool", "default": True},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    params = module.params
    target_time = parse_time(module, params["target_time"])
    point_in_time = params["method"] == "point_in_time" or target_time is not None
    if point_in_time and not params["data_directory"]:
        module.fail_json(msg="a point-in-time restore needs data_directory (the cluster's "
                             "PGDATA, e.g. /var/lib/postgresql/15/main)")
    connection = connection_from_params(params)
    selector = None if params["selector"] == "latest" else params["selector"]
    try:
        vault = build_vault(settings_from_params(params))
        if point_in_time:
            if module.check_mode:
                plan = pitr.plan_point_in_time(vault, params["data_directory"],
                                               target_time=target_time, selector=selector)
                module.exit_json(changed=True, backup_id=plan["backup_id"], previous=None,
                                 plan=plan)
            restored = pitr.restore_point_in_time(
                vault, params["data_directory"], target_time=target_time, selector=selector,
                owner=params["owner"], swap=params["swap"])
            for warning in restored.warnings:
                module.warn(warning)
            module.exit_json(changed=True, backup_id=restored.backup_id,
                             data_directory=restored.data_directory,
                             previous=restored.previous, restored_to=restored.restored_to,
                             wal_files=restored.wal_files, duration=round(restored.duration, 3),
                             replay_log=restored.log_tail)
        if module.check_mode:
            plan = database.plan_restore(vault, connection, selector=params["selector"],
                                         database=params["database"],
                                         maintenance_database=params["maintenance_database"])
            module.exit_json(changed=True, backup_id=plan["backup_id"], database=plan["database"],
                             previous=None, plan=plan)
        restored = database.restore_database(
            vault, connection, selector=params["selector"], database=params["database"],
            jobs=params["jobs"], restore_globals=params["restore_globals"],
            no_owner=params["no_owner"], terminate_connections=params["terminate_connections"],
            maintenance_database=params["maintenance_database"], work_dir=params["work_dir"])
    except BackupError as error:
        module.fail_json(msg=str(error))
    for warning in restored.warnings:
        module.warn(warning)
    module.exit_json(changed=True, backup_id=restored.backup_id, database=restored.database,
                     previous=restored.previous, duration=round(restored.duration, 3),
                     checks=[check.__dict__ for check in restored.checks],
                     executed_commands=restored.commands)


if __name__ == "__main__":
    main()
