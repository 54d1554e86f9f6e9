"""Pruning real sealed backups in local repositories: plan, dry run, deletion, protections."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from ansible_collections.cosmic.backup.plugins.module_utils import (
    errors,
    pruning,
    retention,
    verification,
)

from tests.integration.backdated import backup_at

NOW = datetime(2025, 4, 6, 3, 0, tzinfo=timezone.utc)
POLICIES = retention.GUIDE_POLICIES


def daily(vault, kind, days, **extra):
    return [backup_at(vault, kind, NOW - timedelta(days=day, hours=1), **extra)
            for day in range(days, 0, -1)]


def stored_ids(root: Path, kind: str) -> set[str]:
    folder = root / "backups" / kind
    return {entry.name for entry in folder.iterdir()} if folder.exists() else set()


def test_dry_run_then_prune_deletes_exactly_the_plan(local_vault, local_settings):
    ids = daily(local_vault, "database", 45)
    expected = retention.keep_set([local_vault.select(i) for i in ids], POLICIES["database"], NOW)
    dry = pruning.collect(local_vault, POLICIES, now=NOW)
    assert {item.ref.id for item in dry.kept} == expected
    assert len(dry.doomed) == 45 - len(expected) > 0
    assert len(local_vault.list()) == 45  # planning deletes nothing

    done = pruning.apply(local_vault, dry)
    assert {item.ref.id for item in local_vault.list()} == expected
    for item in done.doomed:
        assert item.results == {"primary": "deleted", "secondary": "deleted"}
    for repository in local_settings["repositories"]:
        assert stored_ids(Path(repository["url"]), "database") == expected
    deletes = [e for e in local_vault.audit.events() if e["action"] == "delete"]
    assert len(deletes) == 2 * len(done.doomed)
    assert deletes[0]["reason"].startswith("retention: keep the newest 1, daily for 30 days")
    assert pruning.collect(local_vault, POLICIES, now=NOW).doomed == []  # idempotent


def test_the_newest_verified_backup_survives_any_policy(local_vault):
    old = backup_at(local_vault, "files", NOW - timedelta(days=200))
    verification.verify_backup(local_vault, local_vault.select(old), deep=False)
    newer = backup_at(local_vault, "files", NOW - timedelta(days=150))
    failed = verification.Verification(newer, "files", NOW, [verification.Check("x", False, "bad")])
    verification.write_record(local_vault, failed)
    backup_at(local_vault, "files", NOW - timedelta(days=100))
    result = pruning.collect(local_vault, POLICIES, now=NOW)
    by_id = {item.ref.id: item for item in result.items}
    assert by_id[old].keep and by_id[old].reasons == ["newest verified"]
    assert not by_id[newer].keep  # failed verification: not a protected copy
    pruning.apply(local_vault, result)
    assert old in {item.ref.id for item in local_vault.list()}


def test_an_unverified_kind_warns_the_operator(local_vault):
    daily(local_vault, "config", 2)
    result = pruning.collect(local_vault, POLICIES, now=NOW)
    assert any("no config backup has passed verification" in w and "backup_verify" in w
               for w in result.warnings)


def segment(log: int, seg: int, timeline: int = 1) -> str:
    return f"{timeline:08X}{log:08X}{seg:08X}"


def test_wal_needed_by_the_oldest_retained_base_backup_is_kept(local_vault):
    wal_ids = [backup_at(local_vault, "wal", NOW - timedelta(days=40 - n),
                         {segment(0, n + 1): b"wal"}) for n in range(12)]
    # A base backup 35 days old, kept as its week's newest, that starts at segment 6.
    base = backup_at(local_vault, "database", NOW - timedelta(days=35, hours=1),
                     meta={"type": "base", "start_wal_segment": segment(0, 6)})
    older_base = backup_at(local_vault, "database", NOW - timedelta(days=36, hours=1),
                           meta={"type": "base", "start_wal_segment": segment(0, 3)})
    result = pruning.collect(local_vault, POLICIES, now=NOW)
    decisions = {item.ref.id: item for item in result.items}
    assert decisions[base].keep and not decisions[older_base].keep
    assert [decisions[i].keep for i in wal_ids] == [False] * 5 + [True] * 7
    assert decisions[wal_ids[5]].reasons == [
        f"needed by the oldest base backup (from {segment(0, 6)})"]
    pruning.apply(local_vault, result)
    assert {item.ref.id for item in local_vault.list("wal")} == set(wal_ids[5:])


def test_wal_is_not_pruned_when_a_base_backup_hides_its_start(local_vault):
    backup_at(local_vault, "wal", NOW - timedelta(days=20), {segment(0, 1): b"wal"})
    backup_at(local_vault, "wal", NOW - timedelta(days=19), {segment(0, 2): b"wal"})
    backup_at(local_vault, "database", NOW - timedelta(days=19), meta={"type": "base"})
    result = pruning.collect(local_vault, POLICIES, now=NOW)
    assert not [item for item in result.doomed if item.ref.kind == "wal"]
    assert any("WAL is not pruned" in w and "start_wal_segment" in w for w in result.warnings)


def test_a_registered_anchor_replaces_the_manifest_reader(local_vault):
    seen = []
    pruning.register_wal_anchor(lambda vault, refs: seen.append(len(refs)) or segment(0, 2))
    try:
        first = backup_at(local_vault, "wal", NOW - timedelta(days=20), {segment(0, 1): b"w"})
        backup_at(local_vault, "wal", NOW - timedelta(days=19), {segment(0, 2): b"w"})
        result = pruning.collect(local_vault, POLICIES, now=NOW)
    finally:
        pruning._wal_anchor.clear()
    assert seen == [0]
    assert [item.ref.id for item in result.doomed] == [first]


class RefusingStorage:
    """Wraps a storage and refuses deletes, as a locked or read-only store would."""

    def __init__(self, storage):
        self._storage = storage
        self.deletes = 0

    def __getattr__(self, name):
        return getattr(self._storage, name)

    def delete(self, key):
        self.deletes += 1
        raise errors.StorageError(f"cannot delete {key} in {self._storage.url}: AccessDenied")


def test_a_refusal_is_reported_once_and_the_copy_stays_complete(local_vault):
    old = backup_at(local_vault, "config", NOW - timedelta(days=200))
    backup_at(local_vault, "config", NOW - timedelta(days=1))
    secondary = local_vault.repositories[1]
    refusing = RefusingStorage(secondary.storage)
    local_vault.repositories[1] = type(secondary)(secondary.name, refusing)
    result = pruning.apply(local_vault, pruning.collect(local_vault, POLICIES, now=NOW))
    [item] = result.refused()
    assert item.ref.id == old
    assert item.results["primary"] == "deleted"
    assert item.results["secondary"].startswith("refused: cannot delete backups/config/")
    assert refusing.deletes == 1  # the manifest, once: no retry loop
    [left] = [i for i in local_vault.list("config") if i.ref.id == old]
    assert set(left.copies) == {"secondary"}  # still listed and complete where refused


def test_rules_count_each_series_apart(local_vault):
    """A schema-only dump after the full dump, a logs snapshot after the uploads one:
    "newest of the day" is per series, so neither displaces the other."""
    full, schema, uploads, logs = [], [], [], []
    for day in range(40, 0, -1):
        when = NOW - timedelta(days=day, hours=4)
        full.append(backup_at(local_vault, "database", when,
                              meta={"type": "full", "database": "cosmic"}))
        schema.append(backup_at(local_vault, "database", when + timedelta(hours=1),
                                meta={"type": "schema", "database": "cosmic"}))
        uploads.append(backup_at(local_vault, "files", when, meta={"label": "uploads"}))
        logs.append(backup_at(local_vault, "files", when + timedelta(hours=1),
                              meta={"label": "logs"}))
    result = pruning.collect(local_vault, POLICIES, now=NOW)
    kept = {item.ref.id for item in result.items if item.keep}
    # the guide: database daily for 30 days, uploads daily for 90 days
    assert set(full[-29:]) <= kept and set(schema[-29:]) <= kept
    assert set(uploads) | set(logs) <= kept
    # beyond 30 days, the weekly rule keeps one full dump per week, not only schema dumps
    old_full = [backup_id for backup_id in full[:11] if backup_id in kept]
    assert old_full and len(old_full) < 11
    pruning.apply(local_vault, result)
    assert set(full[-29:]) | set(uploads) <= {item.ref.id for item in local_vault.list()}


def test_a_backup_whose_manifest_cannot_be_read_is_a_series_of_its_own(local_vault, tmp_path):
    kept = backup_at(local_vault, "files", NOW - timedelta(days=2, hours=2),
                     meta={"label": "uploads"})
    damaged = backup_at(local_vault, "files", NOW - timedelta(days=2, hours=1),
                        meta={"label": "uploads"})
    for repository in local_vault.repositories:
        manifest = Path(repository.storage.root, "backups", "files", damaged, "manifest")
        manifest.write_bytes(b"not a sealed manifest")
    result = pruning.collect(local_vault, POLICIES, now=NOW)
    decisions = {item.ref.id: item for item in result.items}
    assert decisions[kept].keep and decisions[damaged].keep  # neither displaces the other
    assert any("could not be read" in warning and damaged in warning
               for warning in result.warnings)
