"""The rules. Each walks every resource of its kind, so nothing added later skips them.

Written independently of the program's own documents (`policy_documents.py`):
the suite restates what must hold instead of trusting the code it checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from parliament.statement import get_privilege_info

from .iam_lint import blocking_findings
from .model import (
    BUCKET,
    IDENTITY_POLICY_TYPES,
    KEY,
    POLICY_PROPERTIES,
    REPLICA_KEY,
    ROLE,
    Resource,
    StackView,
    allowed_actions,
    as_list,
    principals,
    statements,
)


@dataclass(frozen=True)
class PolicyConfig:
    """Per-stack knobs, like a CrossGuard policy pack's config."""

    required_lock_mode: str | None = None
    min_lock_days: int = 1
    max_mfa_age_seconds: int = 3600
    scheduled_kinds: tuple[str, ...] = ("wal", "database", "files", "config")
    freshness_namespace: str = "CosmicBackup"
    freshness_metric: str = "LastSuccessTimestamp"


@dataclass(frozen=True)
class Violation:
    policy: str
    resource: str
    message: str

    def __str__(self) -> str:
        return f"[{self.policy}] {self.resource}: {self.message}"


Check = Callable[[StackView, PolicyConfig], Iterable[tuple[Resource | None, str]]]


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    check: Check
    enforcement: str = "mandatory"


POLICIES: list[Policy] = []


def policy(name: str, description: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        POLICIES.append(Policy(name, description, check))
        return check

    return register


# ---------------------------------------------------------------------------
# Shared facts.

DESTRUCTIVE_S3 = {
    "s3:BypassGovernanceRetention",
    "s3:DeleteBucket",
    "s3:DeleteBucketPolicy",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutBucketPolicy",
    "s3:PutBucketVersioning",
    "s3:PutEncryptionConfiguration",
    "s3:PutLifecycleConfiguration",
    "s3:PutObjectLegalHold",
    "s3:PutObjectRetention",
    "s3:PutReplicationConfiguration",
}
OBJECT_LEVEL_S3 = {
    "s3:BypassGovernanceRetention",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:PutObjectLegalHold",
    "s3:PutObjectRetention",
}
KEY_USE = {
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
}
KEY_UNWRAP = {"kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo"}
KEY_ADMIN_MARKERS = {
    "kms:PutKeyPolicy",
    "kms:ScheduleKeyDeletion",
    "kms:CreateGrant",
    "kms:DisableKey",
}
READ_ONLY_PREFIXES = ("Get", "List", "Describe", "LookupEvents")


def _matches(pattern: str, action: str) -> bool:
    """IAM action matching: case-insensitive, with * and ? wildcards."""
    import fnmatch

    return fnmatch.fnmatchcase(action.lower(), pattern.lower())


def _grants(stmt: dict[str, Any], action: str) -> bool:
    return any(_matches(pattern, action) for pattern in as_list(stmt.get("Action")))


def duty(resource: Resource) -> str | None:
    return resource.tags.get("Duty")


def purpose(resource: Resource) -> str | None:
    return resource.tags.get("Purpose")


def is_backup_bucket(bucket: Resource) -> bool:
    return (purpose(bucket) or "").startswith("backups-")


def mfa_required(stmt: dict[str, Any], max_age: int) -> bool:
    condition = stmt.get("Condition") or {}
    present = (
        str((condition.get("Bool") or {}).get("aws:MultiFactorAuthPresent", "")).lower() == "true"
    )
    age = (condition.get("NumericLessThanEquals") or {}).get("aws:MultiFactorAuthAge")
    try:
        return present and age is not None and int(age) <= max_age
    except (TypeError, ValueError):
        return False


def trust_statements(role: Resource) -> list[dict[str, Any]]:
    return [s for s in statements(role.policy_document()) if s.get("Effect") == "Allow"]


def is_machine_role(role: Resource, max_age: int) -> bool:
    """Assumable without a person's MFA: by a service, or by principals without MFA."""
    return any(
        principals(stmt, "Service") or (principals(stmt, "AWS") and not mfa_required(stmt, max_age))
        for stmt in trust_statements(role)
    )


def _single(resources: list[Resource]) -> Resource | None:
    return resources[0] if len(resources) == 1 else None


# ---------------------------------------------------------------------------
# Providers.


@policy(
    "aws-explicit-provider",
    "Every AWS resource names an explicit regional provider, never the default one.",
)
def _explicit_provider(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    for resource in stack.resources:
        if not resource.custom or not resource.type.startswith("aws:"):
            continue
        if not resource.provider or "::default" in resource.provider:
            yield resource, "uses the default AWS provider; pass the primary or secondary provider"


# ---------------------------------------------------------------------------
# Buckets.


@policy(
    "s3-object-lock",
    "Every bucket has Object Lock on, with a default retention of the required mode and days.",
)
def _object_lock(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    for bucket in stack.of_type(BUCKET):
        if not bucket.props.get("objectLockEnabled"):
            yield bucket, "is created without Object Lock (it cannot be switched on later)"
        lock = _single(
            stack.companions(
                "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration", bucket
            )
        )
        retention = ((lock.props.get("rule") or {}).get("defaultRetention") or {}) if lock else {}
        if not retention:
            yield bucket, "has no default Object Lock retention"
            continue
        mode, days, years = (
            retention.get("mode"),
            retention.get("days") or 0,
            retention.get("years") or 0,
        )
        if mode not in ("COMPLIANCE", "GOVERNANCE"):
            yield bucket, f"has lock mode {mode!r}"
        if config.required_lock_mode and mode != config.required_lock_mode:
            yield bucket, f"locks in {mode} mode; this stack requires {config.required_lock_mode}"
        if days + 365 * years < config.min_lock_days:
            yield bucket, f"locks for {days} days; at least {config.min_lock_days} required"


@policy("s3-versioning", "Every bucket keeps versions.")
def _versioning(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    for bucket in stack.of_type(BUCKET):
        versioning = _single(stack.companions("aws:s3/bucketVersioning:BucketVersioning", bucket))
        status = (
            ((versioning.props.get("versioningConfiguration") or {}).get("status"))
            if versioning
            else None
        )
        if status != "Enabled":
            yield bucket, f"versioning is {status or 'not configured'}"


@policy(
    "s3-sse-kms",
    "Every bucket encrypts by default with a customer KMS key and bucket keys; SSE-C is blocked.",
)
def _encryption(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    sse_type = (
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    for bucket in stack.of_type(BUCKET):
        sse = _single(stack.companions(sse_type, bucket))
        rules = (sse.props.get("rules") or []) if sse else []
        if len(rules) != 1:
            yield bucket, "has no single default-encryption rule"
            continue
        rule = rules[0]
        default = rule.get("applyServerSideEncryptionByDefault") or {}
        key = default.get("kmsMasterKeyId") or ""
        if default.get("sseAlgorithm") != "aws:kms":
            yield bucket, f"encrypts with {default.get('sseAlgorithm')!r}, not aws:kms"
        if not key.startswith("arn:aws:kms:") or stack.key_by_arn(key) is None:
            yield bucket, f"default key {key!r} is not a customer-managed key of this stack"
        if not rule.get("bucketKeyEnabled"):
            yield bucket, "does not use S3 bucket keys"
        if "SSE-C" not in (rule.get("blockedEncryptionTypes") or []):
            yield bucket, "accepts SSE-C uploads (customer-provided keys it cannot restore with)"


@policy("s3-public-access-blocked", "Every bucket has all four public-access blocks on.")
def _public_access(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    for bucket in stack.of_type(BUCKET):
        block = _single(
            stack.companions("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", bucket)
        )
        missing = [flag for flag in flags if not (block and block.props.get(flag) is True)]
        if missing:
            yield bucket, f"public access not blocked: {', '.join(missing)}"


@policy("s3-acls-disabled", "Every bucket enforces bucket-owner ownership (ACLs disabled).")
def _ownership(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    for bucket in stack.of_type(BUCKET):
        controls = _single(
            stack.companions("aws:s3/bucketOwnershipControls:BucketOwnershipControls", bucket)
        )
        ownership = (
            ((controls.props.get("rule") or {}).get("objectOwnership")) if controls else None
        )
        if ownership != "BucketOwnerEnforced":
            yield bucket, f"object ownership is {ownership or 'not set'}, not BucketOwnerEnforced"


# A TLS deny must cover every S3 action, not a chosen few.
EVERY_S3_ACTION = (
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObjectVersion",
    "s3:ListBucket",
    "s3:PutBucketPolicy",
)


def _denies_everyone(stmt: dict[str, Any], resources: set[str], actions: tuple[str, ...]) -> bool:
    return (
        stmt.get("Effect") == "Deny"
        and principals(stmt) == ["*"]
        and all(_grants(stmt, action) for action in actions)
        and resources <= set(as_list(stmt.get("Resource")))
    )


@policy(
    "s3-tls-and-encrypted-uploads",
    "Every bucket policy denies plain HTTP, TLS < 1.2, and non-KMS uploads.",
)
def _bucket_policy(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    for bucket in stack.of_type(BUCKET):
        arn = stack.bucket_arn(bucket)
        policy_resource = _single(stack.companions("aws:s3/bucketPolicy:BucketPolicy", bucket))
        if policy_resource is None:
            yield bucket, "has no bucket policy"
            continue
        found = statements(policy_resource.policy_document())
        everything = {arn, f"{arn}/*"}
        objects = {f"{arn}/*"}

        def condition(stmt: dict[str, Any], operator: str, key: str) -> Any:
            return ((stmt.get("Condition") or {}).get(operator) or {}).get(key)

        if not any(
            _denies_everyone(s, everything, EVERY_S3_ACTION)
            and str(condition(s, "Bool", "aws:SecureTransport")).lower() == "false"
            for s in found
        ):
            yield bucket, "policy does not deny requests without TLS on the bucket and its objects"
        if not any(
            _denies_everyone(s, everything, EVERY_S3_ACTION)
            and _float(condition(s, "NumericLessThan", "s3:TlsVersion")) >= 1.2
            for s in found
        ):
            yield bucket, "policy does not deny TLS versions below 1.2"
        if not any(
            _denies_everyone(s, objects, ("s3:PutObject",))
            and condition(s, "StringNotEquals", "s3:x-amz-server-side-encryption") == "aws:kms"
            for s in found
        ):
            yield bucket, "policy does not deny uploads that ask for anything but SSE-KMS"
        key = stack.default_kms_key(bucket)
        if not any(
            _denies_everyone(s, objects, ("s3:PutObject",))
            and key is not None
            and condition(s, "StringNotEquals", "s3:x-amz-server-side-encryption-aws-kms-key-id")
            == key
            for s in found
        ):
            yield bucket, "policy does not deny uploads encrypted with another KMS key"


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


@policy(
    "s3-lifecycle",
    "Every bucket aborts stale multipart uploads; backup buckets never expire current objects.",
)
def _lifecycle(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    for bucket in stack.of_type(BUCKET):
        lifecycle = _single(
            stack.companions(
                "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", bucket
            )
        )
        rules = (
            [r for r in (lifecycle.props.get("rules") or []) if r.get("status") == "Enabled"]
            if lifecycle
            else []
        )
        if not any(
            (r.get("abortIncompleteMultipartUpload") or {}).get("daysAfterInitiation")
            for r in rules
        ):
            yield bucket, "no lifecycle rule aborts incomplete multipart uploads"
        if is_backup_bucket(bucket):
            for rule in rules:
                expiration = rule.get("expiration") or {}
                if expiration.get("days") or expiration.get("date"):
                    yield (
                        bucket,
                        (
                            f"lifecycle rule {rule.get('id')!r} expires current backups; "
                            "pruning belongs to the tool, "
                            "which keeps the newest verified backup"
                        ),
                    )


@policy("s3-no-force-destroy", "No bucket can be deleted with its contents by `pulumi destroy`.")
def _force_destroy(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    for bucket in stack.of_type(BUCKET):
        if bucket.props.get("forceDestroy"):
            yield bucket, "has forceDestroy on"


@policy(
    "s3-replication",
    "Every primary backup bucket replicates to another region, re-encrypting with KMS.",
)
def _replication(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    replication_type = "aws:s3/bucketReplicationConfig:BucketReplicationConfig"
    for bucket in stack.of_type(BUCKET):
        configs = stack.companions(replication_type, bucket)
        if purpose(bucket) == "backups-primary" and not configs:
            yield bucket, "is a primary backup bucket without replication to the secondary"
        for replication in configs:
            for rule in replication.props.get("rules") or []:
                label = f"replication rule {rule.get('id')!r}"
                if rule.get("status") != "Enabled":
                    yield bucket, f"{label} is not enabled"
                criteria = (rule.get("sourceSelectionCriteria") or {}).get(
                    "sseKmsEncryptedObjects"
                ) or {}
                if criteria.get("status") != "Enabled":
                    yield bucket, f"{label} skips SSE-KMS objects"
                destination = rule.get("destination") or {}
                replica_key = (destination.get("encryptionConfiguration") or {}).get(
                    "replicaKmsKeyId"
                )
                target = stack.bucket_by_ref(destination.get("bucket") or "")
                if target is None:
                    yield bucket, f"{label} replicates to a bucket outside this stack"
                    continue
                if target.provider == bucket.provider:
                    yield bucket, f"{label} replicates within the same region: not offsite"
                target_key = stack.default_kms_key(target)
                if not replica_key or replica_key != target_key:
                    yield (
                        bucket,
                        f"{label} does not re-encrypt replicas with the destination bucket's key",
                    )
                if (destination.get("metrics") or {}).get("status") != "Enabled":
                    yield bucket, f"{label} has no replication metrics"
                if (rule.get("deleteMarkerReplication") or {}).get("status") != "Disabled":
                    yield bucket, f"{label} replicates deletions to the offsite copy"


@policy(
    "cloudtrail-covers-backups",
    "A hardened multi-region trail records data events of every backup bucket and all KMS use.",
)
def _cloudtrail(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource | None, str]]:
    trails = stack.of_type("aws:cloudtrail/trail:Trail")
    covered: set[str] = set()
    for trail in trails:
        props = trail.props
        for flag in ("isMultiRegionTrail", "enableLogFileValidation", "includeGlobalServiceEvents"):
            if not props.get(flag):
                yield trail, f"{flag} is off"
        if props.get("enableLogging") is False:
            yield trail, "logging is off"
        if not props.get("kmsKeyId"):
            yield trail, "logs are not encrypted with a KMS key"
        management = False
        for selector in props.get("advancedEventSelectors") or []:
            fields = {f.get("field"): f for f in selector.get("fieldSelectors") or []}
            category = (fields.get("eventCategory") or {}).get("equals") or []
            if "Management" in category:
                excluded = (fields.get("eventSource") or {}).get("notEquals") or []
                read_only = fields.get("readOnly")
                management = "kms.amazonaws.com" not in excluded and read_only is None
            if "Data" in category and "AWS::S3::Object" in (
                (fields.get("resources.type") or {}).get("equals") or []
            ):
                covered.update((fields.get("resources.ARN") or {}).get("startsWiths") or [])
        if not management:
            yield trail, "does not record all management events (KMS key use, AssumeRole)"
    for bucket in stack.of_type(BUCKET):
        if is_backup_bucket(bucket) and f"{stack.bucket_arn(bucket)}/" not in covered:
            yield bucket, "no trail records its object-level (data) events"


# ---------------------------------------------------------------------------
# KMS.


@policy(
    "kms-rotation", "Every customer key rotates automatically; replicas follow a rotating primary."
)
def _rotation(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    for key in stack.of_type(KEY):
        if not key.props.get("enableKeyRotation"):
            yield key, "automatic rotation is off"
        if (key.props.get("deletionWindowInDays") or 30) < 7:
            yield key, "deletion window shorter than 7 days"
    for replica in stack.of_type(REPLICA_KEY):
        primary = stack.key_by_arn(replica.props.get("primaryKeyArn") or "")
        if primary is None or primary.type != KEY or not primary.props.get("multiRegion"):
            yield replica, "does not replicate a multi-region key of this stack"
        elif not primary.props.get("enableKeyRotation"):
            yield replica, "its primary key does not rotate"


def _key_resources(stack: StackView) -> list[Resource]:
    return [*stack.of_type(KEY), *stack.of_type(REPLICA_KEY)]


@policy(
    "kms-admins-do-not-use",
    "Key policies separate administrators from users; no kms:* and no root use.",
)
def _key_separation(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    for key in _key_resources(stack):
        document = key.policy_document()
        if document is None:
            yield key, "has no explicit key policy (the default gives the account kms:*)"
            continue
        for stmt in statements(document):
            if stmt.get("Effect") != "Allow":
                continue
            actions = as_list(stmt.get("Action"))
            sid = stmt.get("Sid") or "(no Sid)"
            if any(a in ("*", "kms:*") for a in actions):
                yield key, f"statement {sid} grants kms:*"
            uses = [a for a in KEY_USE if _grants(stmt, a)]
            if uses and any(_grants(stmt, a) for a in KEY_ADMIN_MARKERS):
                yield key, f"statement {sid} lets the same principals administer and use the key"
            if uses and any(p.endswith(":root") for p in principals(stmt)):
                yield key, f"statement {sid} lets the whole account use the key"


@policy("kms-backup-hosts-never-decrypt", "Backup writers wrap data keys but cannot unwrap them.")
def _writer_cannot_decrypt(
    stack: StackView, config: PolicyConfig
) -> Iterator[tuple[Resource, str]]:
    writers = {r.props.get("arn") for r in stack.of_type(ROLE) if duty(r) == "backup-writer"}
    for key in _key_resources(stack):
        found = statements(key.policy_document())
        for stmt in found:
            writer_principals = writers & set(principals(stmt))
            if not writer_principals or stmt.get("Effect") != "Allow":
                continue
            unwraps = [a for a in KEY_UNWRAP if _grants(stmt, a)]
            via_service = ((stmt.get("Condition") or {}).get("StringEquals") or {}).get(
                "kms:ViaService"
            )
            if unwraps and (purpose(key) == "backup-data" or not via_service):
                yield (
                    key,
                    f"statement {stmt.get('Sid')} lets the backup writer "
                    f"{', '.join(sorted(unwraps))}",
                )
        if purpose(key) == "backup-data":
            denied = [
                s
                for s in found
                if s.get("Effect") == "Deny"
                and writers <= set(principals(s))
                and _grants(s, "kms:Decrypt")
            ]
            if writers and not denied:
                yield key, "has no explicit deny of kms:Decrypt for the backup writer"


# ---------------------------------------------------------------------------
# IAM.


def _identity_documents(stack: StackView) -> Iterator[tuple[Resource, dict[str, Any]]]:
    for typ in IDENTITY_POLICY_TYPES:
        for resource in stack.of_type(typ):
            document = resource.policy_document()
            if document:
                yield resource, document


@policy(
    "iam-roles-declare-duty",
    "Every role says what it is for (Duty tag), so duty rules can apply to it.",
)
def _declared_duty(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    known = {"backup-writer", "restore", "maintenance", "auditor", "replication"}
    for role in stack.of_type(ROLE):
        if duty(role) not in known:
            yield role, f"has Duty tag {duty(role)!r}; use one of {', '.join(sorted(known))}"


@policy(
    "iam-no-wildcard-actions",
    "Identity policies allow named actions only: no *, service:*, globs or NotAction.",
)
def _wildcard_actions(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    for resource, document in _identity_documents(stack):
        for stmt in statements(document):
            if stmt.get("Effect") != "Allow":
                continue
            if "NotAction" in stmt or "NotResource" in stmt:
                yield resource, f"statement {stmt.get('Sid')} uses NotAction/NotResource with Allow"
            for action in as_list(stmt.get("Action")):
                if "*" in action or "?" in action:
                    yield (
                        resource,
                        f"statement {stmt.get('Sid')} allows the wildcard action {action}",
                    )


def _supports_resources(action: str) -> bool:
    service, _, name = action.partition(":")
    try:
        info = get_privilege_info(service, name)
    except Exception:  # noqa: BLE001 parliament raises bare Exception for unknown actions
        return True  # unknown to parliament's catalogue: assume it could be scoped
    return any(r.get("resource_type") for r in info.get("resource_types", []))


@policy(
    "iam-no-wildcard-resources",
    "Allow statements name their resources; * only for actions that cannot be scoped.",
)
def _wildcard_resources(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    for resource, document in _identity_documents(stack):
        for stmt in statements(document):
            if stmt.get("Effect") != "Allow":
                continue
            for target in as_list(stmt.get("Resource")):
                head = target.split("/", 1)[0]
                if target == "*":
                    scopable = [a for a in as_list(stmt.get("Action")) if _supports_resources(a)]
                    if scopable:
                        yield (
                            resource,
                            f"statement {stmt.get('Sid')} allows "
                            f"{', '.join(scopable)} on every resource",
                        )
                elif "*" in head or "?" in head:
                    yield (
                        resource,
                        f"statement {stmt.get('Sid')} allows a wildcard resource {target}",
                    )


@policy(
    "iam-people-need-mfa",
    "Roles that people assume require an MFA session no older than the limit.",
)
def _people_need_mfa(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    for role in stack.of_type(ROLE):
        if duty(role) in ("backup-writer", "replication"):
            continue
        for stmt in trust_statements(role):
            if principals(stmt, "Service"):
                yield role, f"a {duty(role)} role is assumable by a service"
            elif not mfa_required(stmt, config.max_mfa_age_seconds):
                yield (
                    role,
                    (
                        f"statement {stmt.get('Sid')} trusts {principals(stmt)} without "
                        "aws:MultiFactorAuthPresent=true and "
                        f"aws:MultiFactorAuthAge<={config.max_mfa_age_seconds}"
                    ),
                )


@policy(
    "iam-machines-cannot-destroy",
    "Roles assumable without MFA cannot delete, unlock or reconfigure backups.",
)
def _machines_cannot_destroy(
    stack: StackView, config: PolicyConfig
) -> Iterator[tuple[Resource, str]]:
    for role in stack.of_type(ROLE):
        if not is_machine_role(role, config.max_mfa_age_seconds):
            continue
        for action, stmt in allowed_actions(stack.identity_documents(role)):
            hits = sorted(d for d in DESTRUCTIVE_S3 if _matches(action, d))
            if hits:
                yield (
                    role,
                    f"assumable without MFA but statement {stmt.get('Sid')} allows "
                    f"{', '.join(hits)}",
                )


@policy(
    "iam-writer-explicit-denies",
    "The backup writer carries explicit denies for destroying and reconfiguring.",
)
def _writer_denies(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    backup_buckets = [stack.bucket_arn(b) for b in stack.of_type(BUCKET) if is_backup_bucket(b)]
    for role in stack.of_type(ROLE):
        if duty(role) != "backup-writer":
            continue
        denies = [
            s
            for d in stack.identity_documents(role)
            for s in statements(d)
            if s.get("Effect") == "Deny"
        ]
        for bucket_arn in backup_buckets:
            for action in sorted(DESTRUCTIVE_S3):
                target = f"{bucket_arn}/*" if action in OBJECT_LEVEL_S3 else bucket_arn
                if not any(
                    _grants(s, action) and target in as_list(s.get("Resource")) for s in denies
                ):
                    yield role, f"no explicit deny of {action} on {target}"


@policy("iam-auditors-read-only", "Auditor roles can only read.")
def _auditors_read_only(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    for role in stack.of_type(ROLE):
        if duty(role) != "auditor":
            continue
        for action, stmt in allowed_actions(stack.identity_documents(role)):
            name = action.split(":", 1)[-1]
            if not name.startswith(READ_ONLY_PREFIXES):
                yield role, f"statement {stmt.get('Sid')} allows {action}, which is not read-only"


@policy(
    "iam-documents-lint-clean", "Every policy document passes parliament with no finding above LOW."
)
def _lint(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    for resource in stack.resources:
        if resource.type not in POLICY_PROPERTIES:
            continue
        document = resource.policy_document()
        if document is None:
            continue
        trust_for = resource.props.get("arn") or f"arn:aws:iam::000000000000:role/{resource.name}"
        for finding in blocking_findings(document, trust_for if resource.type == ROLE else None):
            yield resource, f"parliament: {finding}"


# ---------------------------------------------------------------------------
# Monitoring.


@policy(
    "sns-topics-encrypted", "Alert topics are encrypted with a customer key CloudWatch may use."
)
def _topics(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    for topic in stack.of_type("aws:sns/topic:Topic"):
        key = topic.props.get("kmsMasterKeyId") or ""
        if not key or key.startswith("alias/aws/"):
            yield (
                topic,
                f"is encrypted with {key or 'nothing'}; use a customer key "
                "(CloudWatch cannot use alias/aws/sns)",
            )


@policy("alarms-notify", "Every alarm notifies a topic of this stack.")
def _alarms_notify(stack: StackView, config: PolicyConfig) -> Iterator[tuple[Resource, str]]:
    topics = {t.props.get("arn") for t in stack.of_type("aws:sns/topic:Topic")}
    for alarm in stack.of_type("aws:cloudwatch/metricAlarm:MetricAlarm"):
        actions = as_list(alarm.props.get("alarmActions"))
        if not actions or not set(actions) <= topics:
            yield alarm, "does not notify this stack's alert topic"


@policy(
    "alarms-cover-freshness-and-replication",
    "Stale backups of each scheduled kind and failed replication raise alarms.",
)
def _alarm_coverage(
    stack: StackView, config: PolicyConfig
) -> Iterator[tuple[Resource | None, str]]:
    alarms = stack.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    for kind in config.scheduled_kinds:
        fresh = [
            a
            for a in alarms
            if a.props.get("namespace") == config.freshness_namespace
            and a.props.get("metricName") == config.freshness_metric
            and (a.props.get("dimensions") or {}).get("Kind") == kind
        ]
        if not fresh:
            yield None, f"no alarm fires when {kind} backups go stale"
        for alarm in fresh:
            if alarm.props.get("treatMissingData") != "breaching":
                yield alarm, "does not treat missing datapoints (no backups at all) as breaching"
    for replication in stack.of_type("aws:s3/bucketReplicationConfig:BucketReplicationConfig"):
        source = replication.props.get("bucket")
        if not any(
            a.props.get("metricName") == "OperationsFailedReplication"
            and (a.props.get("dimensions") or {}).get("SourceBucket") == source
            for a in alarms
        ):
            yield replication, "no alarm fires when replication fails"


# ---------------------------------------------------------------------------


def check(resources: Iterable[Resource], config: PolicyConfig | None = None) -> list[Violation]:
    """Run every policy over every resource; an empty list means the stack passes."""
    stack = StackView(list(resources))
    config = config or PolicyConfig()
    violations = []
    for item in POLICIES:
        for resource, message in item.check(stack, config):
            violations.append(
                Violation(item.name, resource.label if resource else "stack", message)
            )
    return violations
