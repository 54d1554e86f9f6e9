# Copyright: cosmic.backup engineers
# Apache License 2.0 (see LICENSE)
"""Write a report file on the controller, in the playbook's own process.

Reports (the run's record, the DR plan, drill reports) belong to whoever runs
the playbook. Writing them here costs no module round trip: ansible.builtin
template or copy run two modules each (stat, then copy), about a second per
report on every playbook run.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.cosmic.backup.plugins.module_utils.atomic_file import atomic_file

ARGUMENTS = {
    "dest": {"type": "path", "required": True},
    "content": {"type": "str", "required": True},
    "mode": {"type": "raw", "default": "0644"},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self.validate_argument_spec(argument_spec=ARGUMENTS)[1]
        dest, content = args["dest"], args["content"]
        mode = args["mode"]
        try:
            # unquoted 0644 in YAML arrives as the int 420: already the permissions
            permissions = mode if isinstance(mode, int) else int(str(mode), 8)
        except ValueError:
            raise AnsibleActionFail(
                f"mode {mode!r} is not an octal mode like '0644'") from None
        data = content.encode()
        try:
            with open(dest, "rb") as existing:
                unchanged = existing.read() == data
        except OSError:
            unchanged = False
        result.update(dest=dest, changed=not unchanged, size=len(data))
        if unchanged or self._task.check_mode:
            return result
        try:
            os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
            with atomic_file(dest, "wb", permissions=permissions) as handle:
                handle.write(data)
        except OSError as error:
            raise AnsibleActionFail(f"cannot write the report {dest}: {error.strerror}; "
                                    "check the reports directory (cosmic_reports_dir)") from None
        return result
