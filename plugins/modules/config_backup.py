#!/usr/bin/python
# Copyright: cosmic.backup engineers
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: config_backup
short_description: Back up configuration files on change, checked by syntax first
version_added: 0.1.0
description:
  - Collects the configuration files named by O(paths) (paths or globs, C(**) spans
    directories), checks each one's syntax, and stores a snapshot of kind C(config)
    labelled O(label) when anything changed since the previous one (or O(force)).
  - Syntax checks - YAML, JSON, TOML, INI and dotenv by parsing; C(nginx.conf),
    C(postgresql.conf) and C(sshd_config) through C(nginx -t), C(postgres -C) and
    C(sshd -t) when those programs are installed. The format comes from the file name
    or O(formats).
  - Values are encrypted like everything else and never printed - messages give the
    file, the format and the line, and RV(changed_files) lists names, never a diff.
author: cosmic.backup engineers (@cosmic-backup)
extends_documentation_fragment:
  - cosmic.backup.vault
attributes:
  check_mode:
    description: Can run in check_mode and predict changed status without modifying target.
    support: full
    details: Checks the syntax and reports whether a snapshot would be stored.
options:
  paths:
    description: Absolute paths or globs of configuration files (directories are taken whole).
    type: list
    elements: str
    required: true
  label:
    description: What the configuration belongs to; restores select by it.
    type: str
    default: config
  formats:
    description: Formats by glob, overriding the file names (C(yaml), C(json), C(toml), C(ini),
      C(dotenv), C(nginx), C(postgresql), C(sshd), C(none)).
    type: dict
  on_syntax_error:
    description: C(fail) stores nothing when a file fails its check; C(warn) stores it anyway.
    type: str
    choices: [fail, warn]
    default: fail
  force:
    description: Store a snapshot even when nothing changed.
    type: bool
    default: false
  state_dir:
    description: Where this host caches what it stored (change detection, deduplication).
    type: path
    default: /var/lib/cosmic-backup/state
seealso:
  - module: cosmic.backup.config_restore
"""

EXAMPLES = r"""
- name: Configuration, when it changed
  cosmic.backup.config_backup:
    repositories: "{{ cosmic_backup_repositories }}"
    keys: "{{ cosmic_backup_keys }}"
    paths:
      - /etc/cosmic/**/*.yml
      - /etc/cosmic/.env
      - /etc/nginx/nginx.conf
      - /etc/postgresql/15/main/postgresql.conf
"""

RETURN = r"""
backup_id:
  description: The new snapshot, or null when nothing changed (or in check mode).
  returned: always
  type: str
paths:
  description: The files the patterns matched.
  returned: always
  type: list
  elements: str
formats:
  description: The format each file was checked as.
  returned: always
  type: dict
changed_files:
  description: Files that differ from the previous snapshot (names only).
  returned: always
  type: list
  elements: str
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
        paths={"type": "list", "elements": "str", "required": True},
        label={"type": "str", "default": "config"},
        formats={"type": "dict"},
        on_syntax_error={"type": "str", "choices": ["fail", "warn"], "default": "fail"},
        force={"type": "bool", "default": False},
        state_dir={"type": "path", "default": files.DEFAULT_STATE_DIRS[0]},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    params = module.params
    try:
        vault = build_vault(settings_from_params(params))
        outcome = config_files.backup_config(
            vault, params["paths"], label=params["label"], state_dir=params["state_dir"],
            formats=params["formats"], on_syntax_error=params["on_syntax_error"],
            check_mode=module.check_mode, force=params["force"])
    except BackupError as error:
        module.fail_json(msg=str(error))
    for warning in outcome.pop("warnings"):
        module.warn(warning)
    module.exit_json(**outcome)


if __name__ == "__main__":
    main()
