"""The catalog as data (``backup_info``, ``cosmic-backup info``): backups per kind
and repository, sizes, ages, verified state, secondary copies, the database's
point-in-time window, freshness against ``max_age``, storage capacity and the
audit trail of a backup. Everything comes from listings: no key is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from . import capacity, metrics, verification
from .alerts import Alert, stale_alert
from .audit import AuditLog
from .catalog import KINDS
from .retention import Duration


def _age(now: datetime, then: datetime) -> float:
    return round((now - then).total_seconds(), 3)


def report(vault, *, now: datetime | None = None, kinds: Sequence[str] | None = None,
           max_age: Mapping[str, Duration] | None = None, spool_paths: Sequence[str] = (),
           min_free_percent: float = capacity.DEFAULT_MIN_FREE_PERCENT,
           min_free_bytes: int = 0) -> dict[str, Any]:
    """The whole catalog report; ``stale`` lists kinds older than their ``max_age``."""
    now = now or datetime.now(timezone.utc)
    max_age = dict(max_age or {})
    listings = [item for item in vault.list() if not kinds or item.ref.kind in kinds]
    verified = verification.last_results(vault)
    names = [repository.name for repository in vault.repositories]
    backups = []
    for item in listings:
        last = verified.get(item.ref.id)
        backups.append({
            "id": item.ref.id,
            "kind": item.ref.kind,
            "created": item.ref.created.isoformat(),
            "age_seconds": _age(now, item.ref.created),
            "copies": dict(item.copies),
            "bytes": max(item.copies.values(), default=0),
            "secondary_copy": any(name in item.copies for name in names[1:]),
            "verified": last.to_dict() if last else None,
        })
    summary_kinds: dict[str, Any] = {}
    stale = []
    for kind in [k for k in KINDS if not kinds or k in kinds] + sorted(
            {b["kind"] for b in backups} - set(KINDS)):
        mine = [b for b in backups if b["kind"] == kind]
        newest = mine[-1] if mine else None
        passed = [b for b in mine if b["verified"] and b["verified"]["ok"]]
        last_verified = max((b["verified"]["time"] for b in passed), default=None)
        limit = max_age.get(kind)
        entry = {
            "count": len(mine),
            "bytes": sum(b["bytes"] for b in mine),
            "newest": newest["id"] if newest else None,
            "newest_created": newest["created"] if newest else None,
            "newest_age_seconds": newest["age_seconds"] if newest else None,
            "oldest": mine[0]["id"] if mine else None,
            "newest_verified": passed[-1]["id"] if passed else None,
            "last_verified": last_verified,
            "verify_age_seconds": (_age(now, datetime.fromisoformat(last_verified))
                                   if last_verified else None),
            "without_secondary_copy": [b["id"] for b in mine if not b["secondary_copy"]]
            if len(names) > 1 else [],
            "max_age": str(limit) if limit else None,
            "stale": False,
        }
        if limit is not None and (newest is None or newest["age_seconds"] > limit.seconds()):
            entry["stale"] = True
            stale.append(kind)
        if mine or limit is not None:
            summary_kinds[kind] = entry
    usage, warnings = capacity.repository_usage(vault)
    spaces = capacity.free_space([*spool_paths, *capacity.local_roots(vault)],
                                 min_free_percent=min_free_percent, min_free_bytes=min_free_bytes)
    warnings += [space.message for space in spaces if space.low]
    result = {
        "now": now.isoformat(),
        "repositories": [{"name": r.name, "url": r.storage.url} for r in vault.repositories],
        "kinds": summary_kinds,
        "backups": backups,
        "stale": stale,
        "point_in_time": point_in_time_window(backups),
        "usage": [u.__dict__ for u in usage],
        "free_space": [space.to_dict() for space in spaces],
        "warnings": warnings,
    }
    result["summary"] = summary_lines(result)
    return result


def point_in_time_window(backups: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Earliest and latest recoverable time, estimated from names: from the oldest
    database backup taken after the oldest archived WAL, to the newest WAL."""
    wal = [b for b in backups if b["kind"] == "wal"]
    if not wal:
        return None
    bases = [b for b in backups if b["kind"] == "database" and b["created"] >= wal[0]["created"]]
    if not bases:
        return None
    return {"earliest": bases[0]["created"], "latest": wal[-1]["created"],
            "basis": "backup and WAL archive times (the restore checks the exact WAL range)"}


def audit_trail(vault, backup_id: str, extra_logs: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Who created, verified, restored or pruned a backup: the engine's audit log,
    any playbook audit logs, and the verification records in the repositories."""
    events = list(vault.audit.events(backup_id))
    for path in extra_logs:
        for event in AuditLog(path).events():
            if backup_id in (event.get("backup_ids") or []) or event.get("backup_id") == backup_id:
                # The playbook callback's lines name an event and a module, not an action.
                event.setdefault("action", f"playbook {event.get('event', 'event')}: "
                                           f"{event.get('module', '')}".rstrip(": "))
                events.append(event)
    for summary in verification.records(vault).get(backup_id, []):
        events.append({"time": summary.time.isoformat(timespec="milliseconds"),
                       "action": "verification record", "backup_id": backup_id,
                       "repository": summary.repository,
                       "result": "ok" if summary.ok else "failed"})
    return sorted(events, key=lambda event: event.get("time", ""))


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for kind, entry in result["kinds"].items():
        state = "STALE" if entry["stale"] else "ok"
        limit = f" (limit {entry['max_age']})" if entry["max_age"] else ""
        verified = (f"verified {_hours(entry['verify_age_seconds'])} ago"
                    if entry["last_verified"] else "never verified")
        lines.append(f"{kind:<9} {state:<5} {entry['count']:>4} backups, "
                     f"{_size(entry['bytes']):>10}, newest {_hours(entry['newest_age_seconds'])} "
                     f"old{limit}, {verified}")
        if entry["without_secondary_copy"]:
            lines.append(f"          {len(entry['without_secondary_copy'])} without a "
                         "secondary copy")
    if result["point_in_time"]:
        window = result["point_in_time"]
        lines.append(f"point in time: {window['earliest']} .. {window['latest']}")
    lines += [f"warning: {warning}" for warning in result["warnings"]]
    return lines or ["no backups yet"]


def stale_alerts(result: dict[str, Any]) -> list[Alert]:
    """One alert per stale kind of a report."""
    where = ", ".join(f"{r['name']} ({r['url']})" for r in result["repositories"])
    return [stale_alert(kind, entry["newest_age_seconds"], entry["max_age"], where,
                        entry["newest"])
            for kind, entry in result["kinds"].items() if entry["stale"]]


def write_metrics(directory: str, result: dict[str, Any]) -> str:
    """The report as ``cosmic_backup_catalog.prom``: ages, freshness, verification,
    repository sizes and free space."""
    samples = []
    for kind, entry in result["kinds"].items():
        labels = {"kind": kind}
        if entry["newest_created"]:
            created = datetime.fromisoformat(entry["newest_created"]).timestamp()
            samples.append(metrics.Sample("newest_backup_timestamp_seconds", created, labels))
            samples.append(metrics.Sample("newest_backup_age_seconds",
                                          entry["newest_age_seconds"], labels))
        if entry["max_age"]:
            limit = Duration.parse(entry["max_age"]).seconds()
            samples.append(metrics.Sample("backup_max_age_seconds", limit, labels))
            samples.append(metrics.Sample("backup_stale", entry["stale"], labels))
        if entry["last_verified"]:
            verified = datetime.fromisoformat(entry["last_verified"]).timestamp()
            samples.append(metrics.Sample("last_verified_timestamp_seconds", verified, labels))
            samples.append(metrics.Sample("verify_age_seconds", entry["verify_age_seconds"],
                                          labels))
    for usage in result["usage"]:
        labels = {"repository": usage["repository"], "kind": usage["kind"]}
        samples.append(metrics.Sample("backups", usage["backups"], labels))
        samples.append(metrics.Sample("repository_bytes", usage["bytes"], labels))
    for space in result["free_space"]:
        labels = {"path": space["path"]}
        samples.append(metrics.Sample("filesystem_free_bytes", space["free_bytes"], labels))
        samples.append(metrics.Sample("filesystem_free_ratio", space["free_ratio"], labels))
        samples.append(metrics.Sample("filesystem_low", space["low"], labels))
    return metrics.write_textfile(directory, "cosmic_backup_catalog.prom", samples)
