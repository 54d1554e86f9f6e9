# Copyright: cosmic.backup engineers
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
name: audit_log
type: aggregate
short_description: Records every playbook run of cosmic.backup as JSON lines, without secrets
version_added: 0.1.0
description:
  - Appends one JSON line when a playbook first runs a C(cosmic.backup) module (who, from
    which controller, which playbook, which hosts), one per finished C(cosmic.backup)
    task (host, module, result, the backup ids it touched), and one when the run ends
    (per-host totals and the overall result).
  - Module arguments, variables and environment are never recorded; a task with
    C(no_log) is recorded as censored. Backup ids are taken from results by their exact
    pattern, so nothing else of a result is copied.
  - Sits alongside the engine's own audit log on the managed hosts; both carry the
    backup ids, so C(backup_info audit_for) can join them.
requirements:
  - Enable it, e.g. C(callbacks_enabled = cosmic.backup.audit_log) in ansible.cfg.
options:
  path:
    description: The JSON-lines file to append to (created with mode 0640).
    type: path
    default: ~/.ansible/cosmic-backup-audit.jsonl
    env:
      - name: COSMIC_BACKUP_PLAYBOOK_AUDIT_LOG
    ini:
      - section: callback_cosmic_backup_audit_log
        key: path
"""

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

from ansible.plugins.callback import CallbackBase  # noqa: E402
from ansible_collections.cosmic.backup.plugins.module_utils.audit import (  # noqa: E402
    current_actor,
)

COLLECTION = "cosmic.backup."
BACKUP_ID = re.compile(r"\b\d{8}T\d{6}\.\d{3}Z-[a-z][a-z0-9_]*-[a-z2-7]{6}\b")
MESSAGE_LIMIT = 500


def _backup_ids(value, found):
    """Every backup id in a result, by its exact pattern only."""
    if isinstance(value, dict):
        for item in value.values():
            _backup_ids(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _backup_ids(item, found)
    elif isinstance(value, str):
        found.update(BACKUP_ID.findall(value))
    return found


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "cosmic.backup.audit_log"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.run_id = uuid.uuid4().hex[:12]
        self.started = time.time()
        self.playbook = None
        self.play = None
        self.hosts = []
        self.check_mode = False
        self.opened = False
        self.path = None

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        self.path = os.path.expanduser(self.get_option("path"))

    def _write(self, event):
        event = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                 "run_id": self.run_id, **event}
        line = (json.dumps(event, sort_keys=True, default=str) + "\n").encode()
        try:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as error:
            self._display.warning(f"cosmic.backup.audit_log: cannot append to {self.path}: "
                                  f"{error.strerror}; set COSMIC_BACKUP_PLAYBOOK_AUDIT_LOG to a "
                                  "writable file")

    def v2_playbook_on_start(self, playbook):
        self.playbook = os.path.abspath(playbook._file_name)

    def v2_playbook_on_play_start(self, play):
        self.play = play.get_name()
        self.hosts = list(play.hosts) if isinstance(play.hosts, list) else [str(play.hosts)]
        self.check_mode = bool(getattr(play, "check_mode", False))

    def _open(self):
        if self.opened:
            return
        self.opened = True
        self._write({"event": "run_start", "actor": current_actor(),
                     "controller": socket.gethostname(), "playbook": self.playbook,
                     "play": self.play, "hosts": self.hosts, "check_mode": self.check_mode})

    def _task_event(self, result, outcome):
        task = result._task
        action = getattr(task, "resolved_action", None) or task.action
        if not str(action).startswith(COLLECTION):
            return
        self._open()
        data = result._result if isinstance(result._result, dict) else {}
        no_log = bool(task.no_log) or data.get("_ansible_no_log") or "censored" in data
        event = {"event": "task", "task": task.get_name(), "module": action,
                 "host": result._host.get_name(), "result": outcome,
                 "changed": bool(data.get("changed")),
                 "check_mode": bool(task.check_mode)}
        if no_log:
            event["censored"] = True
        else:
            event["backup_ids"] = sorted(_backup_ids(data, set()))
            if outcome == "failed" and data.get("msg"):
                event["msg"] = str(data["msg"])[:MESSAGE_LIMIT]
        self._write(event)

    def v2_runner_on_ok(self, result):
        self._task_event(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._task_event(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._task_event(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._task_event(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        if not self.opened:
            return  # the run used nothing of the collection
        totals = {host: stats.summarize(host) for host in sorted(stats.processed)}
        failed = any(t["failures"] or t["unreachable"] for t in totals.values())
        self._write({"event": "run_end", "actor": current_actor(), "playbook": self.playbook,
                     "result": "failed" if failed else "ok", "hosts": totals,
                     "duration_seconds": round(time.time() - self.started, 3)})
