#!/usr/bin/python
# Copyright: cosmic.backup engineers
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: config_restore
short_description: Restore configuration files, checked by syntax before they replace anything
version_added: 0.1.0
description:
  - Restores the configuration snapshot chosen by O(selector) and O(label), whole or
    only O(paths), in place or under O(target).
  - Follows the guide's configuration restoration - a safety backup of the current
    configuration, then the files are staged next to their destinations, checked by
    syntax (as C(config_backup) checks them) and only then swapped in; a failed check
    replaces nothing. Replaced files are kept as C(<file>.pre-restore-<time>).
author: cosmic.backup engineers (@cosmic-backup)
extends_documentation_fragment:
  - cosmic.backup.vault
attributes:
  check_mode:
    description: Can run in check_mode and predict changed status without modifying target.
    support: full
    details: Reports what would be restored where.
options:
  selector:
    description: C(latest), a date C(YYYY-MM-DD) or a backup id.
    type: str
    default: latest
  label:
    description: Only snapshots with this label.
    type: str
    default: config
  paths:
    description: Only these files of the snapshot.
    type: list
    elements: path
  target:
    description: Restore under this directory instead of in place.
    type: path
  formats:
    description: Formats by glob, as for C(config_backup).
    type: dict
  check_syntax:
    description: Check every restored file before it replaces the current one.
    type: bool
    default: true
  safety_backup:
    description: Snapshot the current configuration first.
    type: bool
    default: true
  keep_previous:
    description: Keep the replaced files beside the restored ones.
    type: bool
    default: true
  state_dir:
    description: The snapshot cache, used by the safety backup.
    type: path
    default: /var/lib/cosmic-backup/state
notes:
  - Restart the services that read the configuration afterwards.
seealso:
  - module: cosmic.backup.config_backup
"""

EXAMPLES = r"""
- name: Roll the configuration back to yesterday's
  cosmic.backup.config_restore:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    selector: "2025-04-05"
"""

RETURN = r"""
backup_id:
  description: The snapshot restored.
  returned: always
  type: str
targets:
  description: The destinations written.
  returned: always
  type: list
  elements: str
formats:
  description: The format each restored file was checked as.
  returned: always
  type: dict
previous:
  description: Where the replaced files were kept.
  returned: always
  type: list
  elements: str
safety_backup:
  description: Id of the safety backup, if one was taken.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cosmic.backup.plugins.module_utils import config_files, files
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
        label={"type": "str", "default": "config"},
        paths={"type": "list", "elements": "path"},
        target={"type": "path"},
        formats={"type": "dict"},
        check_syntax={"type": "bool", "default": True},
        safety_backup={"type": "bool", "default": True},
        keep_previous={"type": "bool", "default": True},
        state_dir={"type": "path", "default": files.DEFAULT_STATE_DIRS[0]},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    params = module.params
    try:
        vault = build_vault(settings_from_params(params))
        outcome = config_files.restore_config(
            vault, params["selector"], label=params["label"], paths=params["paths"],
            target=params["target"], formats=params["formats"], check=params["check_syntax"],
            safety_backup=params["safety_backup"], keep_previous=params["keep_previous"],
            state_dir=params["state_dir"], check_mode=module.check_mode)
    except BackupError as error:
        module.fail_json(msg=str(error))
    for warning in outcome.pop("warnings"):
        module.warn(warning)
    module.exit_json(**outcome)


if __name__ == "__main__":
    main()
