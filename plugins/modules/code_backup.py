#!/usr/bin/python
# Copyright: cosmic.backup engineers
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: code_backup
short_description: Back up the application's code - git bundle, deployment files, environment
version_added: 0.1.0
description:
  - Stores one backup of kind C(code) with the git repository as a bundle of all refs
    (checked with C(git bundle verify) before it is stored, tagged with O(release)), the
    deployment configuration (a file snapshot of O(deploy_paths)) and the environment
    variables (from O(env_file) and O(environment)).
  - Environment values are encrypted like everything else and never printed - the
    manifest and RV(environment) list only their names.
  - A restore (C(cosmic.backup.code) engine, C(restore_code)) gives back a working clone
    with every branch and tag, the deployment files, and an C(environment.env) of mode 0600.
author: cosmic.backup engineers (@cosmic-backup)
extends_documentation_fragment:
  - cosmic.backup.vault
attributes:
  check_mode:
    description: Can run in check_mode and predict changed status without modifying target.
    support: none
options:
  repository:
    description: Path of the application's git repository (a working tree or a bare one).
    type: path
  release:
    description: The release this code is; default C(git describe --tags --always).
    type: str
  deploy_paths:
    description: Deployment configuration files and directories.
    type: list
    elements: path
    default: []
  env_file:
    description: A dotenv file of environment variables (C(NAME=VALUE) lines).
    type: path
  environment:
    description: More environment variables; they override O(env_file).
    type: dict
  label:
    description: The application's name.
    type: str
    default: app
  state_dir:
    description: Where this host caches what it stored.
    type: path
    default: /var/lib/cosmic-backup/state
seealso:
  - module: cosmic.backup.files_backup
"""

EXAMPLES = r"""
- name: Code of the release just deployed
  cosmic.backup.code_backup:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    repository: /srv/cosmic/app
    release: "{{ cosmic_release }}"
    deploy_paths: [/srv/cosmic/deploy]
    env_file: /etc/cosmic/app.env
  no_log: false  # values are never returned
"""

RETURN = r"""
backup_id:
  description: The new backup's id.
  returned: always
  type: str
release:
  description: The release recorded.
  returned: when a repository was given
  type: str
commit:
  description: The commit HEAD pointed to.
  returned: when a repository was given
  type: str
environment:
  description: Names of the environment variables stored (never their values).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cosmic.backup.plugins.module_utils import code, files
from ansible_collections.cosmic.backup.plugins.module_utils.errors import BackupError
from ansible_collections.cosmic.backup.plugins.module_utils.module_args import (
    settings_from_params,
    vault_argument_spec,
)
from ansible_collections.cosmic.backup.plugins.module_utils.settings import build_vault


def main():
    spec = vault_argument_spec()
    spec.update(
        repository={"type": "path"},
        release={"type": "str"},
        deploy_paths={"type": "list", "elements": "path", "default": []},
        env_file={"type": "path"},
        environment={"type": "dict", "no_log": True},
        label={"type": "str", "default": "app"},
        state_dir={"type": "path", "default": files.DEFAULT_STATE_DIRS[0]},
    )
    module = AnsibleModule(argument_spec=spec, required_one_of=[
        ["repository", "deploy_paths", "env_file", "environment"]])
    params = module.params
    try:
        vault = build_vault(settings_from_params(params))
        outcome = code.backup_code(
            vault, repository=params["repository"], release=params["release"],
            deploy_paths=params["deploy_paths"], env_file=params["env_file"],
            environment={name: str(value) for name, value in (params["environment"] or {}).items()},
            label=params["label"], state_dir=params["state_dir"])
    except BackupError as error:
        module.fail_json(msg=str(error))
    for warning in outcome.pop("warnings"):
        module.warn(warning)
    module.exit_json(changed=True, **outcome)


if __name__ == "__main__":
    main()
