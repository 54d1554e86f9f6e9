# Copyright: cosmic.backup engineers
# Apache License 2.0 (see LICENSE)
"""cosmic.backup.async_wait: tell the module where the host keeps its async jobs,
as ansible.builtin.async_status's action does (the shell's async_dir option)."""

from __future__ import annotations

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        arguments = dict(self._task.args)
        if not arguments.get("async_dir"):
            async_dir = self.get_shell_option("async_dir", default="~/.ansible_async")
            arguments["async_dir"] = self._remote_expand_user(async_dir)
        result.update(self._execute_module(module_name="cosmic.backup.async_wait",
                                           module_args=arguments, task_vars=task_vars))
        return result
