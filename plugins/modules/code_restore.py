#!/usr/bin/python
# Copyright: cosmic.backup engineers
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: code_restore
short_description: Restore the application's code - a working clone, deployment files, environment
version_added: 0.1.0
description:
  - Restores one backup of kind C(code) (written by M(cosmic.backup.code_backup)) into a new,
    empty directory O(target) - C(repository/) a working clone with every branch and tag,
    checked out at the backed-up commit; C(deploy/) the deployment files; and
    C(environment.env) (mode 0600) with the environment variables.
  - Environment values are never returned or printed; RV(environment) lists the names.
  - Nothing is written outside O(target), and a non-empty O(target) is refused, so the code
    currently deployed is never overwritten; switching to the restored code is the
    playbook's step.
author: cosmic.backup engineers (@cosmic-backup)
extends_documentation_fragment:
  - cosmic.backup.vault
attributes:
  check_mode:
    description: Can run in check_mode and predict changed status without modifying target.
    support: none
options:
  backup:
    description: Which code backup - C(latest), a date C(YYYY-MM-DD) (the newest of that UTC day)
      or a backup id.
    type: str
    default: latest
  label:
    description: The application's name, as given to M(cosmic.backup.code_backup).
    type: str
  target:
    description: A new or empty directory to restore into.
    type: path
    required: true
seealso:
  - module: cosmic.backup.code_backup
"""

EXAMPLES = r"""
- name: Code of the latest release, for a recovered host
  cosmic.backup.code_restore:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    backup: latest
    target: /srv/cosmic/restored-code
"""

RETURN = r"""
backup_id:
  description: The backup restored.
  returned: always
  type: str
release:
  description: The release the backup recorded.
  returned: always
  type: str
repository:
  description: Path of the working clone.
  returned: when the backup holds a git bundle
  type: str
deploy:
  description: Where the deployment files went and how many.
  returned: when the backup holds deployment files
  type: dict
environment:
  description: The environment file's path and the variables' names (never their values).
  returned: when the backup holds environment variables
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cosmic.backup.plugins.module_utils import code
from ansible_collections.cosmic.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cosmic.backup.plugins.module_utils.module_args import (
    settings_from_params,
    vault_argument_spec,
)
from ansible_collections.cosmic.backup.plugins.module_utils.settings import build_vault


def main():
    spec = vault_argument_spec()
    spec.update(
        backup={"type": "str", "default": "latest"},
        label={"type": "str"},
        target={"type": "path", "required": True},
    )
    module = AnsibleModule(argument_spec=spec)
    params = module.params
    try:
        vault = build_vault(settings_from_params(params))
        outcome = code.restore_code(vault, params["backup"], target=params["target"],
                                    label=params["label"])
    except BackupError as error:
        module.fail_json(msg=str(error))
    module.exit_json(changed=True, **outcome)


if __name__ == "__main__":
    main()
