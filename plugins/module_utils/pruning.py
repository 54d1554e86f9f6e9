"""Pruning: apply the retention keep sets to the repositories.

``plan()`` is pure: from the catalog, the verified state and the WAL a base
backup needs, it decides what stays and what goes, with reasons. ``collect()``
gathers those inputs from a vault; ``apply()`` deletes, per backup and per
repository, and reports refusals (S3 Object Lock, versioning, permissions)
instead of retrying them. Two protections sit on top of the policy: the
newest verified backup of a series is never deleted, and WAL is never deleted
while a retained base backup needs it.

A retention rule counts backups within a *series*: one host's backups of one
thing (a database's full dumps, its base backups, a files label). Counted by
kind alone, "newest of each day" would keep a schema-only dump or a restore's
safety snapshot and drop that day's full dump or uploads snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import retention, verification
from .catalog import BackupRef
from .errors import BackupError, KeyUnavailable, StorageError

# function(vault, retained database refs, oldest first) -> the oldest WAL segment
# they need, or None when none is a base backup. The database issue installs
# its own with register_wal_anchor(); the default reads the manifests (below).
WalAnchor = Callable[[Any, Sequence[BackupRef]], "str | None"]
# function(vault, retained refs of the kind, dry_run) -> what it removed (or would).
# For kinds whose backups share stored data (files: deduplicated blobs).
Collector = Callable[[Any, Sequence[BackupRef], bool], list]

_wal_anchor: list[WalAnchor] = []
_collectors: dict[str, Collector] = {}


def register_wal_anchor(function: WalAnchor) -> None:
    _wal_anchor[:] = [function]


def register_collector(kind: str, function: Collector) -> None:
    _collectors[kind] = function


def manifest_wal_anchor(vault, retained: Sequence[BackupRef]) -> str | None:
    """The start segment of the oldest retained base backup, from its manifest's meta
    (``type: base`` and ``start_wal_segment``, the contract with the database issue)."""
    for ref in retained:
        meta = vault.manifest(ref).get("meta") or {}
        if meta.get("type") != "base":
            continue
        start = meta.get("start_wal_segment")
        if not start or retention.segment_position(str(start)) is None:
            raise BackupError(
                f"base backup {ref.id} does not record its start WAL segment "
                "(meta.start_wal_segment), so no WAL can be pruned safely; "
                "keep WAL until that backup expires, or prune with kinds that exclude wal"
            )
        return str(start)
    return None


@dataclass
class Item:
    """One backup in a prune plan."""

    ref: BackupRef
    copies: dict[str, int]
    keep: bool
    reasons: list[str]
    results: dict[str, str] = field(default_factory=dict)  # repository -> outcome

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "id": self.ref.id, "kind": self.ref.kind,
            "created": self.ref.created.isoformat(), "keep": self.keep,
            "reasons": self.reasons, "bytes": sum(self.copies.values()),
        }
        if self.results:
            result["results"] = self.results
        return result


@dataclass
class Plan:
    now: datetime
    items: list[Item]
    policies: dict[str, retention.Policy]
    warnings: list[str] = field(default_factory=list)

    @property
    def doomed(self) -> list[Item]:
        return [item for item in self.items if not item.keep]

    @property
    def kept(self) -> list[Item]:
        return [item for item in self.items if item.keep]

    def refused(self) -> list[Item]:
        return [item for item in self.doomed
                if any(outcome.startswith("refused") for outcome in item.results.values())]

    def to_dict(self) -> dict[str, Any]:
        doomed = self.doomed
        return {
            "now": self.now.isoformat(),
            "policies": {kind: policy.to_dict() for kind, policy in self.policies.items()},
            "delete": [item.to_dict() for item in doomed],
            "keep": [item.to_dict() for item in self.kept],
            "delete_bytes": sum(sum(item.copies.values()) for item in doomed),
            "refused": [item.to_dict() for item in self.refused()],
            "warnings": self.warnings,
        }


def series_of(manifest: Mapping[str, Any]) -> str:
    """The series a backup belongs to, from its manifest: host, type, database, label."""
    meta = manifest.get("meta") or {}
    parts = (("host", manifest.get("host")), ("type", meta.get("type")),
             ("database", meta.get("database")), ("label", meta.get("label")))
    return " ".join(f"{name}={value}" for name, value in parts if value)


def read_series(vault, listings: Iterable[Any]) -> tuple[dict[str, str], list[str]]:
    """The series of every backup except WAL (one series), and warnings.

    A backup whose manifest cannot be read becomes a series of its own: the
    rules then keep it like any newest backup, never in place of another.
    """
    series, unreadable = {}, []
    for listing in listings:
        if listing.ref.kind == "wal":
            continue
        try:
            series[listing.ref.id] = series_of(vault.manifest(listing.ref))
        except BackupError as error:
            series[listing.ref.id] = f"unreadable={listing.ref.id}"
            unreadable.append(f"{listing.ref.id} ({error})")
    warnings = [f"the manifests of {len(unreadable)} backups could not be read, so each "
                f"counts as a series of its own: {'; '.join(unreadable[:5])}"] if unreadable \
        else []
    return series, warnings


def plan(listings: Iterable[Any], policies: Mapping[str, retention.Policy], now: datetime, *,
         verified: Mapping[str, bool] | None = None,
         wal_segments: Mapping[str, Sequence[str]] | None = None,
         wal_needed_from: str | None = None,
         kinds: Sequence[str] | None = None,
         series: Mapping[str, str] | None = None) -> Plan:
    """Decide, without touching storage, which backups go.

    ``verified`` maps backup ids to the outcome of their latest verification;
    ``wal_segments`` maps WAL backup ids to the WAL file names they hold;
    ``series`` maps backup ids to their series (read_series), one per kind if absent.
    """
    verified = verified or {}
    by_kind: dict[str, list[Any]] = {}
    for listing in listings:
        if kinds is None or listing.ref.kind in kinds:
            by_kind.setdefault(listing.ref.kind, []).append(listing)
    result = Plan(now, [], dict(policies))
    for kind, members in sorted(by_kind.items()):
        policy = policies.get(kind)
        if policy is None:
            result.warnings.append(f"no retention policy for kind {kind!r}: all its "
                                   f"{len(members)} backups are kept")
            policy = retention.Policy(indefinite=True)
        refs = {member.ref.id: member for member in members}
        if kind == "wal":
            archives = [retention.WalArchive(m.ref.id, m.ref.created,
                                             tuple((wal_segments or {}).get(m.ref.id, ())))
                        for m in members]
            groups = [retention.decide_wal(archives, policy, now, wal_needed_from)]
        else:
            by_series: dict[str, list[BackupRef]] = {}
            for member in members:
                by_series.setdefault((series or {}).get(member.ref.id, ""), []).append(
                    member.ref)
            groups = [retention.decide(by_series[name], policy, now)
                      for name in sorted(by_series)]
        protected = [next((d.id for d in decisions if verified.get(d.id)), None)
                     for decisions in groups]
        if not any(protected) and kind != "wal" and not policy.indefinite:
            result.warnings.append(
                f"no {kind} backup has passed verification: pruning follows the policy "
                f"alone; run backup_verify (./scripts/verify-backup.sh latest)")
        items = []
        for decisions, newest_verified in zip(groups, protected, strict=True):
            for decision in decisions:
                reasons = list(decision.reasons)
                keep = decision.keep
                if decision.id == newest_verified:
                    reasons.append("newest verified")
                    keep = True
                member = refs[decision.id]
                items.append(Item(member.ref, dict(member.copies), keep, reasons))
        result.items += sorted(items, key=lambda item: item.ref.id)  # oldest first
    return result


def collect(vault, policies: Mapping[str, retention.Policy], *, now: datetime | None = None,
            kinds: Sequence[str] | None = None) -> Plan:
    """A plan from the vault's catalog, verification records and WAL contents."""
    now = now or datetime.now(timezone.utc)
    listings = [item for item in vault.list() if kinds is None or item.ref.kind in kinds]
    verified = {backup_id: summary.ok
                for backup_id, summary in verification.last_results(vault).items()}
    present = {item.ref.kind for item in listings}
    database = vault.list("database") if "wal" in present else []
    series, warnings = read_series(
        vault, {item.ref.id: item for item in [*listings, *database]}.values())
    wal_segments, needed_from = None, None
    if "wal" in present:
        wal_segments = wal_contents(vault)
        # Which database backups are retained decides which WAL must stay.
        database = plan(database, policies, now, verified=verified, kinds=["database"],
                        series=series)
        retained = [item.ref for item in database.kept]
        try:
            anchor = _wal_anchor[0] if _wal_anchor else manifest_wal_anchor
            needed_from = anchor(vault, retained)
        except KeyUnavailable as error:
            raise BackupError(f"cannot tell which WAL the retained base backups need: {error}"
                              ) from None
        except BackupError as error:
            warnings.append(f"WAL is not pruned: {error}")
            kinds = [kind for kind in (kinds or sorted(present)) if kind != "wal"]
    result = plan(listings, policies, now, verified=verified, wal_segments=wal_segments,
                  wal_needed_from=needed_from, kinds=kinds, series=series)
    result.warnings[:0] = warnings
    return result


def wal_contents(vault) -> dict[str, list[str]]:
    """WAL file names per WAL backup, from the data object names (no key needed)."""
    contents: dict[str, list[str]] = {}
    for repository in vault.repositories:
        try:
            for stored in repository.storage.list("backups/wal"):
                parts = stored.key.split("/")
                if len(parts) >= 5 and parts[3] == "data":
                    contents.setdefault(parts[2], []).append("/".join(parts[4:]))
            return contents
        except StorageError:
            continue
    return contents


def apply(vault, prune_plan: Plan, *, purge_versions: bool = False) -> Plan:
    """Delete what the plan dooms, newest protections already applied; record outcomes.

    With ``purge_versions`` every stored version is removed too (versioned S3
    buckets keep a pruned object as a noncurrent version until lifecycle expires
    it); Object Lock refuses that until the retention date, which is reported.
    """
    for item in prune_plan.doomed:
        reason = "retention: " + prune_plan.policies.get(
            item.ref.kind, retention.Policy()).describe()
        try:
            item.results = vault.delete_backup(item.ref, reason)
        except StorageError as error:
            item.results = {"all": f"refused: {error}"}
            continue
        if purge_versions:
            for repository in vault.repositories:
                if item.results.get(repository.name, "").startswith("refused"):
                    continue
                refusal = purge_object_versions(repository.storage, item.ref.prefix + "/")
                if refusal:
                    item.results[repository.name] = f"refused: {refusal}"
                    vault.audit.record("delete", backup_id=item.ref.id,
                                       repository=repository.name, result="failed",
                                       reason="purge versions", error=refusal)
    from . import files  # noqa: F401 - registers the snapshot kinds' pack collector
    for kind, collector in sorted(_collectors.items()):
        retained = [item.ref for item in prune_plan.kept if item.ref.kind == kind]
        if any(item.ref.kind == kind for item in prune_plan.items):
            removed = collector(vault, retained, False)
            if removed:
                prune_plan.warnings.append(f"{kind}: {len(removed)} unreferenced objects removed")
    return prune_plan


def purge_object_versions(storage, prefix: str) -> str | None:
    """Delete every version and delete marker under ``prefix`` of a versioned S3
    storage; returns the first refusal, or None. Other storages have no versions."""
    client = getattr(storage, "client", None)
    bucket = getattr(storage, "bucket", None)
    if client is None or bucket is None:
        return None
    full_prefix = f"{storage.prefix}/{prefix}" if storage.prefix else prefix
    try:
        pages = client.get_paginator("list_object_versions").paginate(
            Bucket=bucket, Prefix=full_prefix)
        versions = []
        for page in pages:
            versions += page.get("Versions", []) + page.get("DeleteMarkers", [])
    except Exception as error:  # noqa: BLE001 - reported to the operator as it is
        return f"cannot list the versions under s3://{bucket}/{full_prefix}: {error}"
    # Manifest versions first, so a half-purged backup can never look complete.
    versions.sort(key=lambda item: not item["Key"].endswith("/manifest"))
    for version in versions:
        try:
            client.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
        except Exception as error:  # noqa: BLE001
            return (f"s3://{bucket}/{version['Key']} version {version['VersionId']} cannot be "
                    f"removed ({_error_text(error)}); an Object Lock retention or legal hold "
                    "keeps it until it expires, after which the bucket's lifecycle removes it")
    return None


def _error_text(error: Exception) -> str:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        details = response.get("Error", {})
        return f"{details.get('Code', 'error')}: {details.get('Message', '')}".rstrip(": ")
    return str(error)
