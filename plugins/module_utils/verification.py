"""Verification of backups, and the records that say when each one last passed.

Every verification authenticates each stored object of every copy
(``Vault.verify``), then runs the kind's own check when one is registered
(database: restore into a throwaway instance; files: checksums; config:
syntax). Kinds register theirs with ``register(kind, function)``.

The result is kept as a small plain JSON record in every repository, under

    audit/verifications/<kind>/<backup-id>/<YYYYmmddTHHMMSS.fffZ>-<ok|failed>.json

The outcome is in the object name, so ``backup_info`` and pruning read the
verified state from a listing alone, with no key and no download. Records carry
ids, check names, counts and error messages, never keys or data. They live under
``audit/`` because every duty role may append there and none may delete
(docs/pulumi.md): a verification record outlives the backup it describes.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import random
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from .audit import current_actor
from .catalog import KINDS, BackupRef
from .errors import BackupError, KeyUnavailable, StorageError
from .version import VERSION

RECORD_ROOT = "audit/verifications"
RECORD_FORMAT = "cosmic-backup verification"
RECORD_VERSION = 1
STAMP_FORMAT = "%Y%m%dT%H%M%S"


@dataclass
class Check:
    """One thing verified: its name, where, whether it passed, and what was seen."""

    name: str
    ok: bool
    detail: str = ""
    repository: str | None = None


# function(vault, ref, manifest) -> the kind's checks; raising BackupError fails them.
KindVerifier = Callable[[Any, BackupRef, dict], Sequence[Check]]
# The module that registers a kind's check, where it is not named after the kind.
KIND_MODULES = {"config": "config_files"}
RAW_STREAM_LAYOUT = "stream"  # meta["layout"] of `cosmic-backup backup-stream` backups
_VERIFIERS: dict[str, KindVerifier] = {}


def register(kind: str, verifier: KindVerifier) -> None:
    """Make ``verifier`` run for every verification of ``kind`` (replacing an earlier one)."""
    _VERIFIERS[kind] = verifier


def registered(kind: str) -> KindVerifier | None:
    """The kind's check; by convention ``module_utils/<kind>.py`` registers it on import."""
    if kind not in _VERIFIERS and kind in KINDS:
        with contextlib.suppress(ImportError):
            importlib.import_module(f"{__package__}.{KIND_MODULES.get(kind, kind)}")
    return _VERIFIERS.get(kind)


@dataclass
class Verification:
    """The outcome of verifying one backup."""

    backup_id: str
    kind: str
    time: datetime
    checks: list[Check] = field(default_factory=list)
    duration_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    recorded_in: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    objects: list[Any] = field(default_factory=list)  # Vault.verify's per-object checks

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "kind": self.kind,
            "time": self.time.isoformat(timespec="milliseconds"),
            "ok": self.ok,
            "checks": [asdict(check) for check in self.checks],
            "duration_seconds": round(self.duration_seconds, 3),
            "notes": self.notes,
            "recorded_in": self.recorded_in,
            "warnings": self.warnings,
        }

    def summary(self) -> str:
        if self.ok:
            return f"{self.backup_id}: verified ({len(self.checks)} checks passed)"
        failed = self.failures()
        first = failed[0] if failed else Check("no check ran", False)
        where = f" in {first.repository}" if first.repository else ""
        return (f"{self.backup_id}: verification FAILED: {first.name}{where}: {first.detail}"
                + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""))


def verify_backup(vault, ref: BackupRef, *, deep: bool = True, record: bool = True,
                  now: datetime | None = None) -> Verification:
    """Authenticate every stored object, run the kind's check, and record the result."""
    started = time.monotonic()
    result = Verification(ref.id, ref.kind, now or datetime.now(timezone.utc))
    try:
        report = vault.verify(ref)
    except KeyUnavailable:
        raise  # no record: nothing was verified, and the operator must fix the key
    except BackupError as error:
        result.checks.append(Check("manifest", False, str(error)))
        report = None
    if report is not None:
        result.objects = list(report.checks)
        for repository in vault.repositories:
            mine = [check for check in report.checks if check.repository == repository.name]
            failed = next((check for check in mine if not check.ok), None)
            result.checks.append(Check(
                "stored objects authenticated", failed is None,
                f"{len(mine)} objects" if failed is None else f"{failed.name}: {failed.error}",
                repository.name,
            ))
    verifier = registered(ref.kind) if deep else None
    if deep and verifier is not None and _is_raw_stream(vault, ref):
        verifier = None
        result.notes.append("a raw stream (cosmic-backup backup-stream): "
                            "stored-object authentication only")
    elif not deep:
        result.notes.append("stored-object authentication only (deep checks not requested)")
    elif verifier is None:
        result.notes.append(f"no {ref.kind}-specific check is installed; "
                            "stored-object authentication only")
    elif report is None or all(not check.ok for check in result.checks):
        result.notes.append(f"{ref.kind} check skipped: no sound copy to check")
    else:
        result.checks.extend(_run_verifier(verifier, vault, ref))
    result.duration_seconds = time.monotonic() - started
    if record:
        write_record(vault, result)
    vault.audit.record("verification", backup_id=ref.id, result="ok" if result.ok else "failed",
                       kind=ref.kind, checks=len(result.checks),
                       failed=[check.name for check in result.failures()] or None)
    return result


def _is_raw_stream(vault, ref: BackupRef) -> bool:
    """Streams sealed as they came carry no layout a kind's check could read."""
    try:
        return vault.manifest(ref).get("meta", {}).get("layout") == RAW_STREAM_LAYOUT
    except BackupError:
        return False  # the kind's check reports the unreadable manifest


def _run_verifier(verifier: KindVerifier, vault, ref: BackupRef) -> list[Check]:
    try:
        return list(verifier(vault, ref, vault.manifest(ref)))
    except KeyUnavailable:
        raise
    except BackupError as error:
        return [Check(f"{ref.kind} check", False, str(error))]
    except Exception as error:  # noqa: BLE001 - a broken checker must not hide the backup's state
        return [Check(f"{ref.kind} check", False,
                      f"the check itself crashed ({type(error).__name__}: {error}); "
                      "report this as a bug")]


def record_key(kind: str, backup_id: str, when: datetime, ok: bool) -> str:
    stamp = when.astimezone(timezone.utc).strftime(STAMP_FORMAT)
    millis = f"{when.microsecond // 1000:03d}"
    return f"{RECORD_ROOT}/{kind}/{backup_id}/{stamp}.{millis}Z-{'ok' if ok else 'failed'}.json"


def write_record(vault, result: Verification) -> None:
    """Write the record into every repository; a failure is a warning, not a lost result."""
    document = {
        "format": RECORD_FORMAT,
        "version": RECORD_VERSION,
        "host": socket.gethostname(),
        "actor": current_actor(),
        "tool": VERSION,
        **result.to_dict(),
    }
    for name in ("recorded_in", "warnings"):
        document.pop(name)
    data = (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()
    key = record_key(result.kind, result.backup_id, result.time, result.ok)
    for repository in vault.repositories:
        try:
            writer = repository.storage.writer(key)
            try:
                writer.write(data)
                writer.commit()
            except BaseException:
                writer.abort()
                raise
            result.recorded_in.append(repository.name)
        except StorageError as error:
            result.warnings.append(f"the verification record of {result.backup_id} could not "
                                   f"be written to {repository.describe()}: {error}")


@dataclass(frozen=True)
class RecordSummary:
    """A verification as its record's name tells it."""

    backup_id: str
    kind: str
    time: datetime
    ok: bool
    repository: str
    key: str

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time.isoformat(timespec="milliseconds"), "ok": self.ok,
                "repository": self.repository}


def parse_record_key(key: str, repository: str) -> RecordSummary | None:
    parts = key.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != RECORD_ROOT:
        return None
    kind, backup_id, name = parts[2], parts[3], parts[4]
    stamp, _dash, outcome = name.removesuffix(".json").rpartition("-")
    if outcome not in ("ok", "failed"):
        return None
    try:
        when = datetime.strptime(stamp, STAMP_FORMAT + ".%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return RecordSummary(backup_id, kind, when, outcome == "ok", repository, key)


def records(vault, kind: str | None = None) -> dict[str, list[RecordSummary]]:
    """Every verification record per backup id, oldest first, from listings alone."""
    prefix = f"{RECORD_ROOT}/{kind}" if kind else RECORD_ROOT
    found: dict[tuple[str, datetime], RecordSummary] = {}
    listed = 0
    errors = []
    for repository in vault.repositories:
        try:
            for stored in repository.storage.list(prefix):
                summary = parse_record_key(stored.key, repository.name)
                if summary is not None:
                    found.setdefault((summary.backup_id, summary.time), summary)
            listed += 1
        except StorageError as error:
            errors.append(str(error))
    if not listed and errors:
        raise StorageError("no repository can list verification records: " + "; ".join(errors))
    result: dict[str, list[RecordSummary]] = {}
    for summary in sorted(found.values(), key=lambda item: item.time):
        result.setdefault(summary.backup_id, []).append(summary)
    return result


def last_results(vault, kind: str | None = None) -> dict[str, RecordSummary]:
    """The most recent verification of each backup."""
    return {backup_id: items[-1] for backup_id, items in records(vault, kind).items()}


def read_record(vault, summary: RecordSummary) -> dict[str, Any]:
    """The full record (checks and details) behind a summary."""
    for repository in vault.repositories:
        if repository.name != summary.repository:
            continue
        with repository.storage.reader(summary.key) as handle:
            return json.loads(handle.read())
    raise StorageError(f"repository {summary.repository} is no longer configured")


def choose_sample(refs: Iterable[BackupRef], count: int,
                  rng: random.Random | None = None) -> list[BackupRef]:
    """``count`` backups drawn at random (the guide's weekly check), oldest first."""
    pool = sorted(refs)
    if count < 0:
        raise BackupError(f"sample size {count} is negative: ask for 1 or more backups")
    picked = (rng or random.SystemRandom()).sample(pool, min(count, len(pool)))
    return sorted(picked)


def sample_pool(listings: Iterable[Any], kinds: Sequence[str] | None = None) -> list[BackupRef]:
    """The backups a random check draws from: the given kinds, else all but WAL
    (WAL is verified through the database restore test that replays it)."""
    return [item.ref for item in listings
            if (item.ref.kind in kinds if kinds else item.ref.kind != "wal")]
