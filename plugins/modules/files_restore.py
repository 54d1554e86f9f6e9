#!/usr/bin/python
# Copyright: cosmic.backup engineers
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: files_restore
short_description: Restore a file snapshot safely - safety backup, staging, swap
version_added: 0.1.0
description:
  - Restores the snapshot chosen by O(selector) and O(label), whole or only O(paths),
    to where it was taken or under O(target).
  - Follows the guide's file restoration - first a safety backup of the current files
    (a snapshot labelled C(<label>-safety)); then the snapshot is written and verified
    (every blob by its SHA-256, every entry's type, size and mode) in a staging directory
    next to each destination, and swapped in by rename. A failure before the swap leaves
    the current files as they were. The replaced files are kept beside the destination
    as C(<path>.pre-restore-<time>) unless O(keep_previous=false).
  - A snapshot that names an absolute path, C(..), a device node, a path under a symlink,
    or a symlink leaving the restored tree is refused before anything is written.
author: cosmic.backup engineers (@cosmic-backup)
extends_documentation_fragment:
  - cosmic.backup.vault
attributes:
  check_mode:
    description: Can run in check_mode and predict changed status without modifying target.
    support: full
    details: Selects and checks the snapshot and reports what would be restored where.
options:
  selector:
    description: C(latest), a date C(YYYY-MM-DD) (the newest of that UTC day) or a backup id.
    type: str
    default: latest
  label:
    description: Only snapshots with this label (C(uploads), C(logs)).
    type: str
  paths:
    description: Only these absolute paths of the snapshot (files or directories).
    type: list
    elements: path
  target:
    description: Restore under this directory (as C(target/<original path>)) instead of in place.
    type: path
  safety_backup:
    description: Snapshot the files about to be replaced first (the guide's step 2).
    type: bool
    default: true
  keep_previous:
    description: Keep the replaced files beside the destination instead of deleting them.
    type: bool
    default: true
  allow_external_symlinks:
    description: Restore symlinks that point outside the restored tree (absolute ones too).
    type: bool
    default: false
  skip_damaged:
    description:
      - When some files are damaged in every copy, restore the others and list the damaged
        ones in RV(damaged) instead of failing.
    type: bool
    default: false
  state_dir:
    description: The snapshot cache, used by the safety backup.
    type: path
    default: /var/lib/cosmic-backup/state
notes:
  - Stop the services that write to the destination first; start them after.
  - Owners and groups are restored when the module runs as root.
seealso:
  - module: cosmic.backup.files_backup
"""

EXAMPLES = r"""
- name: Restore the uploads as of 6 April
  cosmic.backup.files_restore:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    label: uploads
    selector: "2025-04-06"

- name: Get one lost file back under /tmp/restore for a look
  cosmic.backup.files_restore:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    label: uploads
    paths: [/srv/cosmic/uploads/2025/04/report.pdf]
    target: /tmp/restore
    safety_backup: false
"""

RETURN = r"""
backup_id:
  description: The snapshot restored.
  returned: always
  type: str
targets:
  description: The destinations written (or that would be, in check mode).
  returned: always
  type: list
  elements: str
files:
  description: Files restored.
  returned: always
  type: int
bytes:
  description: Their total size.
  returned: always
  type: int
previous:
  description: Where the replaced files were kept.
  returned: always
  type: list
  elements: str
safety_backup:
  description: Id of the safety backup of the replaced files, if one was taken.
  returned: always
  type: str
damaged:
  description: Files left out because every copy was damaged (O(skip_damaged)).
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
        selector={"type": "str", "default": "latest"},
        label={"type": "str"},
        paths={"type": "list", "elements": "path"},
        target={"type": "path"},
        safety_backup={"type": "bool", "default": True},
        keep_previous={"type": "bool", "default": True},
        allow_external_symlinks={"type": "bool", "default": False},
        skip_damaged={"type": "bool", "default": False},
        state_dir={"type": "path", "default": files.DEFAULT_STATE_DIRS[0]},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    params = module.params
    try:
        vault = build_vault(settings_from_params(params))
        result = files.restore_snapshot(
            vault, params["selector"], label=params["label"], paths=params["paths"],
            target=params["target"], safety_backup=params["safety_backup"],
            keep_previous=params["keep_previous"],
            allow_external_symlinks=params["allow_external_symlinks"],
            skip_damaged=params["skip_damaged"], state_dir=params["state_dir"],
            check_mode=module.check_mode)
    except BackupError as error:
        module.fail_json(msg=str(error))
    outcome = result.to_dict()
    for warning in outcome.pop("warnings"):
        module.warn(warning)
    module.exit_json(**outcome)


if __name__ == "__main__":
    main()
