"""The audit trail: one JSON line per backup write, read, verify and delete.

Lines carry who, what, when, where and the result; never a key, a password or
data. Appends are single writes to an O_APPEND file, so concurrent writers on
one host do not interleave lines.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from datetime import datetime, timezone
from typing import Any


def current_actor() -> str:
    """Who acts: an explicit actor, the sudo caller, or the login user."""
    for variable in ("COSMIC_BACKUP_ACTOR", "SUDO_USER"):
        if os.environ.get(variable):
            return os.environ[variable]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


class AuditLog:
    def __init__(self, path: str | None, actor: str | None = None, host: str | None = None):
        self.path = path
        self.actor = actor or current_actor()
        self.host = host or socket.gethostname()

    def record(self, action: str, *, result: str, backup_id: str | None = None,
               repository: str | None = None, **details: Any) -> dict[str, Any]:
        event = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "actor": self.actor,
            "host": self.host,
            "action": action,
            "backup_id": backup_id,
            "repository": repository,
            "result": result,
            **{name: value for name, value in details.items() if value is not None},
        }
        if self.path:
            line = (json.dumps(event, sort_keys=True, default=str) + "\n").encode()
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        return event

    def events(self, backup_id: str | None = None) -> list[dict[str, Any]]:
        """The recorded events, optionally only those of one backup."""
        if not self.path or not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8") as handle:
            events = [json.loads(line) for line in handle if line.strip()]
        return [e for e in events if backup_id is None or e.get("backup_id") == backup_id]
