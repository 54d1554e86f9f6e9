"""Backup ids, selectors and manifests.

A backup id reads as its UTC time, its kind and a short random tag, e.g.
``20261126T074512.123Z-database-k3f9q2``; ids sort in time order, so the
catalog can be listed and selected from object names alone, without
decrypting anything.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .errors import ConfigError, SelectorError

KINDS = ("database", "wal", "files", "config", "code")
ID_PATTERN = re.compile(
    r"^(?P<time>\d{8}T\d{6}\.\d{3}Z)-(?P<kind>[a-z][a-z0-9_]*)-(?P<tag>[a-z2-7]{6})$"
)
DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
OBJECT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
MANIFEST_NAME = "manifest"
MANIFEST_FORMAT = "cosmic-backup manifest"
# 2: objects record zstd's content checksum ("zstd_checksum"); 1 recorded
# the SHA-256 of the plaintext ("sha256"). Both are read.
MANIFEST_VERSION = 2


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ConfigError(f"unknown backup kind {kind!r}: use one of {', '.join(KINDS)}")
    return kind


def check_object_name(name: str) -> str:
    if not OBJECT_NAME_PATTERN.match(name) or ".." in name or len(name) > 512:
        raise ConfigError(
            f"object name {name!r} is not allowed: letters, digits, '.', '_', '-' and '/'"
        )
    return name


def new_backup_id(kind: str, now: datetime | None = None) -> str:
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%S.") + f"{now.microsecond // 1000:03d}Z"
    tag = base64.b32encode(secrets.token_bytes(5)).decode().lower()[:6]
    return f"{stamp}-{check_kind(kind)}-{tag}"


@dataclass(frozen=True, order=True)
class BackupRef:
    """A backup as the catalog sees it without decrypting: id, kind and time."""

    id: str
    kind: str = field(compare=False)
    created: datetime = field(compare=False)

    @classmethod
    def parse(cls, backup_id: str) -> BackupRef | None:
        match = ID_PATTERN.match(backup_id)
        if not match:
            return None
        created = datetime.strptime(match["time"], "%Y%m%dT%H%M%S.%fZ").replace(
            tzinfo=timezone.utc
        )
        return cls(backup_id, match["kind"], created)

    @property
    def prefix(self) -> str:
        return backup_prefix(self.kind, self.id)


def backup_prefix(kind: str, backup_id: str) -> str:
    return f"backups/{kind}/{backup_id}"


def object_key(kind: str, backup_id: str, name: str) -> str:
    return f"{backup_prefix(kind, backup_id)}/data/{name}"


def manifest_key(kind: str, backup_id: str) -> str:
    return f"{backup_prefix(kind, backup_id)}/{MANIFEST_NAME}"


def select(backups: Iterable[BackupRef], selector: str, kind: str | None = None) -> BackupRef:
    """``latest``, ``YYYY-MM-DD`` (the newest of that UTC day) or an exact id."""
    candidates = sorted(b for b in backups if kind is None or b.kind == kind)
    what = f"{kind} backup" if kind else "backup"
    if selector == "latest":
        if not candidates:
            raise SelectorError(f"there is no {what} yet: take one first")
        return candidates[-1]
    if DATE_PATTERN.match(selector):
        try:
            day = datetime.strptime(selector, "%Y-%m-%d").date()
        except ValueError:
            raise SelectorError(f"{selector!r} is not a calendar date") from None
        same_day = [b for b in candidates if b.created.date() == day]
        if not same_day:
            days = sorted({b.created.date().isoformat() for b in candidates})[-5:]
            hint = f"; recent days with one: {', '.join(days)}" if days else ""
            raise SelectorError(f"no {what} was taken on {selector} (UTC){hint}")
        return same_day[-1]
    if BackupRef.parse(selector):
        for backup in candidates:
            if backup.id == selector:
                return backup
        raise SelectorError(f"{what} {selector} is not in any repository")
    raise SelectorError(
        f"unknown selector {selector!r}: use latest, a date YYYY-MM-DD or a backup id "
        "(`cosmic-backup list` shows them)"
    )
