"""Stack settings: everything that differs between stacks, read from pulumi.Config.

Defaults are the backup and restore guide's values; `Pulumi.<stack>.yaml` overrides
them. Validation happens here, before any resource is declared, so a bad setting
fails `pulumi preview` with the name of the key and what to set instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi

from retention_lifecycle import GUIDE_RETENTION, Retention

NAMESPACE = "cosmic-backup"

LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")

# The engine reads backups with a plain GetObject, so colder storage must still be
# instant-retrieval: GLACIER and DEEP_ARCHIVE would need a RestoreObject first.
INSTANT_RETRIEVAL_CLASSES = ("STANDARD_IA", "GLACIER_IR", "INTELLIGENT_TIERING")

# Freshness thresholds in hours per backup kind, from the guide's schedule and RPO:
# WAL is archived continuously and the database RPO is under one hour; full dumps,
# uploads and configuration run daily, so 26 h leaves two hours for timer jitter
# and a long run before a missed day raises the alarm. Code is backed up on
# release, which has no schedule to be late against.
GUIDE_FRESHNESS_HOURS: Mapping[str, int] = {"wal": 1, "database": 26, "files": 26, "config": 26}

BACKUP_KINDS = ("database", "wal", "files", "config", "code")

MAX_MFA_AGE_SECONDS = 3600

_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_PREFIX = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ARN = re.compile(r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:(root|role/.+|user/.+|assumed-role/.+)$")
_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class SettingsError(ValueError):
    """A stack setting is missing or wrong; the message names the key and the fix."""


@dataclass(frozen=True)
class ObjectLock:
    mode: str
    days: int


@dataclass(frozen=True)
class StackSettings:
    """What one stack (dev, prod, ...) decides; everything else is derived."""

    stack: str
    primary_region: str
    secondary_region: str
    repository_prefix: str
    object_lock: ObjectLock
    audit_lock: ObjectLock
    audit_retention_days: int
    retention: Retention
    pruned_version_grace_days: int
    cold_storage_after_days: int
    cold_storage_class: str
    abort_incomplete_upload_days: int
    alert_emails: tuple[str, ...]
    freshness_hours: Mapping[str, int]
    bucket_growth_alarm_gib: int
    replication_latency_alarm_minutes: int
    replication_time_control: bool
    account_id: str | None = None
    key_administrators: tuple[str, ...] = ()
    backup_host_principals: tuple[str, ...] = ()
    operator_principals: tuple[str, ...] = ()
    auditor_principals: tuple[str, ...] = ()
    mfa_max_age_seconds: int = MAX_MFA_AGE_SECONDS
    key_deletion_window_days: int = 30
    protect: bool = True
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Base of every physical name in this stack: cosmic-backup-<stack>."""
        return f"{NAMESPACE}-{self.stack}"


def _key(key: str) -> str:
    return f"{NAMESPACE}:{key}"


def _fail(key: str, problem: str, fix: str) -> SettingsError:
    return SettingsError(f"{_key(key)} {problem}; {fix}")


def _int(config: pulumi.Config, key: str, default: int | None, low: int, high: int) -> int:
    try:
        value = config.get_int(key)
    except pulumi.ConfigTypeError as error:
        raise _fail(
            key, "is not a whole number", f"set it with `pulumi config set {key} N`"
        ) from error
    if value is None:
        if default is None:
            raise _fail(key, "is not set", f"set it with `pulumi config set {key} N`")
        value = default
    if not low <= value <= high:
        raise _fail(key, f"is {value}, outside {low}..{high}", f"choose a value in {low}..{high}")
    return value


def _bool(config: pulumi.Config, key: str, default: bool) -> bool:
    try:
        value = config.get_bool(key)
    except pulumi.ConfigTypeError as error:
        raise _fail(
            key, "is not true or false", f"set it with `pulumi config set {key} true`"
        ) from error
    return default if value is None else value


def _list(config: pulumi.Config, key: str) -> tuple[str, ...]:
    value = config.get_object(key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _fail(
            key,
            "must be a list of strings",
            f"set it with `pulumi config set --path '{key}[0]' VALUE`",
        )
    return tuple(value)


def _region(config: pulumi.Config, key: str) -> str:
    value = config.get(key)
    if not value:
        raise _fail(key, "is not set", f"set it with `pulumi config set {key} eu-central-1`")
    if not _REGION.match(value):
        raise _fail(key, f"is {value!r}, not an AWS region name", "use a name such as eu-central-1")
    return value


def _lock(
    config: pulumi.Config, mode_key: str, days_key: str, default_days: int | None
) -> ObjectLock:
    mode = config.get(mode_key)
    if mode is None:
        raise _fail(
            mode_key, "is not set", f"set it with `pulumi config set {mode_key} COMPLIANCE`"
        )
    if mode not in LOCK_MODES:
        raise _fail(mode_key, f"is {mode!r}", f"use one of {', '.join(LOCK_MODES)}")
    return ObjectLock(mode=mode, days=_int(config, days_key, default_days, 1, 36500))


def _principals(config: pulumi.Config, key: str) -> tuple[str, ...]:
    principals = _list(config, key)
    for principal in principals:
        if not (_ARN.match(principal) or _ROLE_NAME.match(principal)):
            raise _fail(
                key,
                f"has {principal!r}, neither an IAM ARN nor a role name",
                "give arn:aws:iam::ACCOUNT:role/NAME, arn:aws:iam::ACCOUNT:user/NAME "
                "or a role name in this account",
            )
    return principals


def _freshness(config: pulumi.Config) -> dict[str, int]:
    value = config.get_object("freshnessHours")
    if value is None:
        return dict(GUIDE_FRESHNESS_HOURS)
    if not isinstance(value, dict):
        raise _fail(
            "freshnessHours", "must be a map of kind to hours", "for example {wal: 1, database: 26}"
        )
    freshness: dict[str, int] = {}
    for kind, hours in value.items():
        if kind not in BACKUP_KINDS:
            raise _fail(
                "freshnessHours",
                f"names unknown kind {kind!r}",
                f"use kinds from {', '.join(BACKUP_KINDS)}",
            )
        # CloudWatch evaluates at most 7 days of hourly periods.
        if not isinstance(hours, int) or isinstance(hours, bool) or not 1 <= hours <= 168:
            raise _fail("freshnessHours", f"has {kind}: {hours!r}", "use whole hours in 1..168")
        freshness[kind] = hours
    return freshness


def _emails(config: pulumi.Config) -> tuple[str, ...]:
    emails = _list(config, "alertEmails")
    if not emails:
        raise _fail(
            "alertEmails",
            "is empty",
            "set at least one with `pulumi config set --path 'alertEmails[0]' sre@example.org`",
        )
    for email in emails:
        if not _EMAIL.match(email):
            raise _fail("alertEmails", f"has {email!r}, not an e-mail address", "fix the address")
    return emails


def load_settings(config: pulumi.Config | None = None, stack: str | None = None) -> StackSettings:
    """Read and validate this stack's settings; raises SettingsError naming the bad key."""
    config = config or pulumi.Config(NAMESPACE)
    stack = stack or pulumi.get_stack()

    primary_region = _region(config, "primaryRegion")
    secondary_region = _region(config, "secondaryRegion")
    if primary_region == secondary_region:
        raise _fail(
            "secondaryRegion",
            f"equals primaryRegion ({primary_region})",
            "the secondary copy is the offsite one: choose another region",
        )

    prefix = config.get("repositoryPrefix") or "cosmic"
    if not _PREFIX.match(prefix):
        raise _fail(
            "repositoryPrefix",
            f"is {prefix!r}",
            "use lowercase letters, digits and dashes, no slash",
        )

    retention = Retention.from_config(config.get_object("retention"), GUIDE_RETENTION)
    object_lock = _lock(config, "objectLockMode", "objectLockDays", None)
    mfa_max_age = _int(config, "mfaMaxAgeSeconds", MAX_MFA_AGE_SECONDS, 60, MAX_MFA_AGE_SECONDS)

    cold_class = config.get("coldStorageClass") or "GLACIER_IR"
    if cold_class not in INSTANT_RETRIEVAL_CLASSES:
        raise _fail(
            "coldStorageClass",
            f"is {cold_class!r}",
            f"use an instant-retrieval class ({', '.join(INSTANT_RETRIEVAL_CLASSES)}) "
            "so restores need no thaw",
        )

    account_id = config.get("accountId")
    if account_id is not None and not re.fullmatch(r"\d{12}", account_id):
        raise _fail(
            "accountId", f"is {account_id!r}", "give the 12-digit AWS account this stack belongs to"
        )

    tags = config.get_object("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise _fail("tags", "must be a map of strings", "for example {cost-center: sre}")

    return StackSettings(
        stack=stack,
        primary_region=primary_region,
        secondary_region=secondary_region,
        repository_prefix=prefix,
        object_lock=object_lock,
        audit_lock=ObjectLock(
            mode=object_lock.mode,
            days=_int(config, "auditLockDays", 365, 1, 36500),
        ),
        audit_retention_days=_int(
            config, "auditRetentionDays", GUIDE_RETENTION.database.annual, 1, 36500
        ),
        retention=retention,
        pruned_version_grace_days=_int(config, "prunedVersionGraceDays", 7, 1, 365),
        cold_storage_after_days=_int(config, "coldStorageAfterDays", 90, 30, 3650),
        cold_storage_class=cold_class,
        abort_incomplete_upload_days=_int(config, "abortIncompleteUploadDays", 1, 1, 30),
        alert_emails=_emails(config),
        freshness_hours=_freshness(config),
        bucket_growth_alarm_gib=_int(config, "bucketGrowthAlarmGiB", 50, 1, 1_000_000),
        replication_latency_alarm_minutes=_int(
            config, "replicationLatencyAlarmMinutes", 30, 15, 1440
        ),
        replication_time_control=_bool(config, "replicationTimeControl", False),
        account_id=account_id,
        key_administrators=_principals(config, "keyAdministrators"),
        backup_host_principals=_principals(config, "backupHostPrincipals"),
        operator_principals=_principals(config, "operatorPrincipals"),
        auditor_principals=_principals(config, "auditorPrincipals"),
        mfa_max_age_seconds=mfa_max_age,
        key_deletion_window_days=_int(config, "keyDeletionWindowDays", 30, 7, 30),
        protect=_bool(config, "protectResources", True),
        tags={str(k): str(v) for k, v in tags.items()},
    )


def principal_arns(
    principals: tuple[str, ...], account_id: str, partition: str = "aws"
) -> list[str]:
    """IAM principal ARNs; role names resolve in this account, nothing configured: the account."""
    if not principals:
        return [f"arn:{partition}:iam::{account_id}:root"]
    return [
        p if p.startswith("arn:") else f"arn:{partition}:iam::{account_id}:role/{p}"
        for p in principals
    ]
