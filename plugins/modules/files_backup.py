#!/usr/bin/python
# Copyright: cosmic.backup engineers
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: files_backup
short_description: Incremental, deduplicated, encrypted snapshot of files and directories
version_added: 0.1.0
description:
  - Takes a snapshot of O(paths) (user uploads, logs, ...) as a backup of kind C(files)
    labelled O(label), written to every repository.
  - Keeps the directory structure, file modes, owner and group, modification times,
    symlinks, hard links, empty directories, sparse files and names that are not UTF-8.
  - Incremental - a file whose size, modification time and inode are unchanged since
    the label's previous snapshot on this host is not read again; content already
    stored (in any file, any snapshot) is not sent again; small files are packed
    together. Every snapshot restores on its own.
  - Files that vanish or keep changing while read are reported in RV(warnings); the
    snapshot stays consistent. Device nodes, sockets and FIFOs are skipped and reported.
author: cosmic.backup engineers (@cosmic-backup)
extends_documentation_fragment:
  - cosmic.backup.vault
attributes:
  check_mode:
    description: Can run in check_mode and predict changed status without modifying target.
    support: full
    details: Walks the paths and reads what changed to report what would be sent; stores nothing.
options:
  paths:
    description: Absolute paths of the directories and files to back up.
    type: list
    elements: path
    required: true
  label:
    description: What the snapshot holds (C(uploads), C(logs)); restores select by it.
    type: str
    required: true
  excludes:
    description:
      - Patterns to leave out. A pattern without C(/) matches names (C(*.tmp)); one with
        C(/) matches absolute paths and everything under them (C(/srv/uploads/cache)).
    type: list
    elements: str
    default: []
  state_dir:
    description:
      - Where this host keeps its cache of what it stored (to skip unchanged files and
        known content without reading the repository back). Losing it costs one full read
        and upload, never a wrong snapshot.
    type: path
    default: /var/lib/cosmic-backup/state
notes:
  - In production the backup host may write but not read or decrypt backups; the cache
    in O(state_dir) is what makes snapshots incremental there.
seealso:
  - module: cosmic.backup.files_restore
"""

EXAMPLES = r"""
- name: Daily snapshot of the user uploads
  cosmic.backup.files_backup:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    paths: [/srv/cosmic/uploads]
    label: uploads
    excludes: ["*.part", /srv/cosmic/uploads/tmp]

- name: Audit logs
  cosmic.backup.files_backup:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    paths: [/var/log/cosmic]
    label: logs
"""

RETURN = r"""
backup_id:
  description: The new snapshot's id (null in check mode).
  returned: always
  type: str
  sample: 20260406T020000.123Z-files-k3f9q2
files:
  description: Files in the snapshot.
  returned: always
  type: int
bytes:
  description: Their total size.
  returned: always
  type: int
read_bytes:
  description: Bytes read from disk this time (changed and new files only).
  returned: always
  type: int
reused_files:
  description: Files unchanged since the previous snapshot, not read.
  returned: always
  type: int
new_bytes:
  description: Content not stored before (what was sent, before compression).
  returned: always
  type: int
stored_bytes:
  description: Sealed bytes written (new packs and the index) to each repository.
  returned: always
  type: int
skipped_paths:
  description: Paths left out (vanished, unreadable, special files).
  returned: always
  type: list
  elements: str
warnings:
  description: What the operator should know (changing files, a dropped secondary copy).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cosmic.backup.plugins.module_utils import files
from ansible_collections.cosmic.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cosmic.backup.plugins.module_utils.module_args import (
    settings_from_params,
    vault_argument_spec,
)
from ansible_collections.cosmic.backup.plugins.module_utils.settings import build_vault


def main():
    spec = vault_argument_spec()
    spec.update(
        paths={"type": "list", "elements": "path", "required": True},
        label={"type": "str", "required": True},
        excludes={"type": "list", "elements": "str", "default": []},
        state_dir={"type": "path", "default": files.DEFAULT_STATE_DIRS[0]},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    params = module.params
    try:
        vault = build_vault(settings_from_params(params))
        result = files.take_snapshot(vault, params["paths"], label=params["label"],
                                     excludes=params["excludes"], state_dir=params["state_dir"],
                                     check_mode=module.check_mode)
    except BackupError as error:
        module.fail_json(msg=str(error))
    outcome = result.to_dict()
    for warning in outcome.pop("warnings"):
        module.warn(warning)
    module.exit_json(**outcome)


if __name__ == "__main__":
    main()
