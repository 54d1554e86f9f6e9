"""The guide's retention table, and the bucket lifecycle rules derived from it.

Who deletes what:

- The backup tool prunes *current* objects itself (daily/weekly/monthly/annual
  keep sets, WAL still needed by a retained base backup, the newest verified
  backup of a kind). Lifecycle never expires a current backup: it cannot tell a
  monthly dump from a daily one, and it would delete the last backup of a kind
  whose schedule stopped.
- Lifecycle cleans up behind the tool: it aborts abandoned multipart uploads,
  removes delete markers with nothing behind them, permanently removes a pruned
  (noncurrent) version after a grace period (and never before its Object Lock
  retention ends: S3 refuses that), and moves backups that outlive the cold
  threshold to colder, still instant-retrieval storage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

KINDS = ("database", "wal", "files", "config", "code")


class RetentionError(ValueError):
    """The retention setting is malformed; the message says which entry."""


@dataclass(frozen=True)
class DatabaseRetention:
    """Grandfather-father-son tiers of full database backups, in days."""

    daily: int
    weekly: int
    monthly: int
    annual: int


@dataclass(frozen=True)
class Retention:
    """Days each kind of backup is kept; code None means indefinitely."""

    database: DatabaseRetention
    wal: int
    files: int
    config: int
    code: int | None

    def longest_days(self, kind: str) -> int | None:
        """The longest any backup of this kind is kept (None: forever)."""
        if kind == "database":
            return self.database.annual
        return getattr(self, kind)

    @classmethod
    def from_config(cls, value: Any, default: Retention) -> Retention:
        """Overrides from the stack's `retention` object on top of `default`."""
        if value is None:
            return default
        if not isinstance(value, Mapping):
            raise RetentionError(
                "cosmic-backup:retention must be a map such as {wal: 7, files: 90}"
            )
        unknown = set(value) - set(KINDS)
        if unknown:
            raise RetentionError(
                f"cosmic-backup:retention names unknown kinds {sorted(unknown)}; "
                f"use {', '.join(KINDS)}"
            )
        result = default
        database = value.get("database")
        if database is not None:
            if not isinstance(database, Mapping) or set(database) - {
                "daily",
                "weekly",
                "monthly",
                "annual",
            }:
                raise RetentionError(
                    "cosmic-backup:retention.database must be a map of "
                    "daily, weekly, monthly, annual days"
                )
            tiers = replace(
                default.database, **{k: _days(f"database.{k}", v) for k, v in database.items()}
            )
            if not tiers.daily <= tiers.weekly <= tiers.monthly <= tiers.annual:
                raise RetentionError(
                    "cosmic-backup:retention.database tiers must not shrink: "
                    "daily <= weekly <= monthly <= annual"
                )
            result = replace(result, database=tiers)
        for kind in ("wal", "files", "config"):
            if kind in value:
                result = replace(result, **{kind: _days(kind, value[kind])})
        if "code" in value:
            code = value["code"]
            result = replace(
                result, code=None if code in (None, "indefinite") else _days("code", code)
            )
        return result


def _days(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RetentionError(
            f"cosmic-backup:retention.{name} is {value!r}; use a whole number of days >= 1"
        )
    return value


# Backup and restore guide, "Backup Schedule" and "Data Retention".
GUIDE_RETENTION = Retention(
    database=DatabaseRetention(daily=30, weekly=90, monthly=365, annual=7 * 365),
    wal=7,
    files=90,
    config=90,
    code=None,
)


def backups_prefix(repository_prefix: str, kind: str) -> str:
    """Where the tool writes backups of one kind: <prefix>/backups/<kind>/."""
    return f"{repository_prefix}/backups/{kind}/"


def goes_cold(retention: Retention, kind: str, cold_after_days: int) -> bool:
    """Whether backups of this kind can outlive the cold threshold."""
    longest = retention.longest_days(kind)
    return longest is None or longest > cold_after_days


def repository_lifecycle_rules(
    repository_prefix: str,
    retention: Retention,
    *,
    grace_days: int,
    cold_after_days: int,
    cold_storage_class: str,
    abort_incomplete_upload_days: int,
) -> list[dict[str, Any]]:
    """Lifecycle rules for a backup bucket, as BucketLifecycleConfiguration rule args."""
    rules: list[dict[str, Any]] = [
        {
            "id": "repository-housekeeping",
            "status": "Enabled",
            "filter": {"prefix": f"{repository_prefix}/"},
            "abort_incomplete_multipart_upload": {
                "days_after_initiation": abort_incomplete_upload_days
            },
            "expiration": {"expired_object_delete_marker": True},
        }
    ]
    for kind in KINDS:
        rule: dict[str, Any] = {
            "id": f"{kind}-backups",
            "status": "Enabled",
            "filter": {"prefix": backups_prefix(repository_prefix, kind)},
            "noncurrent_version_expiration": {"noncurrent_days": grace_days},
        }
        if goes_cold(retention, kind, cold_after_days):
            rule["transitions"] = [{"days": cold_after_days, "storage_class": cold_storage_class}]
        rules.append(rule)
    return rules


def audit_lifecycle_rules(
    *,
    retention_days: int,
    grace_days: int,
    cold_after_days: int,
    cold_storage_class: str,
    abort_incomplete_upload_days: int,
) -> list[dict[str, Any]]:
    """Lifecycle rules for the CloudTrail bucket: nobody prunes it, so lifecycle expires it."""
    rule: dict[str, Any] = {
        "id": "audit-trail-retention",
        "status": "Enabled",
        "filter": {"prefix": "AWSLogs/"},
        "abort_incomplete_multipart_upload": {
            "days_after_initiation": abort_incomplete_upload_days
        },
        "expiration": {"days": retention_days},
        "noncurrent_version_expiration": {"noncurrent_days": grace_days},
    }
    if retention_days > cold_after_days:
        rule["transitions"] = [{"days": cold_after_days, "storage_class": cold_storage_class}]
    return [rule]
