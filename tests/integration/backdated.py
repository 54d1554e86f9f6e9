"""Backups taken "in the past": real sealed backups whose ids carry a chosen time."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone

from ansible_collections.cosmic.backup.plugins.module_utils import catalog


@contextlib.contextmanager
def clock(when: datetime):
    """New backup ids read ``when`` instead of the current time."""
    original = catalog.new_backup_id
    catalog.new_backup_id = lambda kind, now=None: original(kind, now=when)
    try:
        yield
    finally:
        catalog.new_backup_id = original


def backup_at(vault, kind: str, when: datetime, objects: dict[str, bytes] | None = None,
              meta: dict | None = None) -> str:
    with clock(when), vault.new_backup(kind, meta) as writer:
        for name, data in (objects or {"data": f"{kind} at {when.isoformat()}".encode()}).items():
            writer.add_bytes(name, data)
    return writer.id


def days_ago(days: float, now: datetime | None = None) -> datetime:
    return (now or datetime.now(timezone.utc)) - timedelta(days=days)
