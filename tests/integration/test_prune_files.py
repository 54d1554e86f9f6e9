"""Pruning file snapshots frees the packs no remaining snapshot uses, and only those."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ansible_collections.cosmic.backup.plugins.module_utils import files, pruning, retention


def age_packs(repository_root: str, seconds: float) -> None:
    """Packs older than the grace period, as they are a day after their snapshot."""
    then = time.time() - seconds
    packs = [p for p in Path(repository_root).rglob("*") if p.is_file() and "shared" in p.parts]
    assert packs
    for pack in packs:
        os.utime(pack, (then, then))


def test_prune_collects_the_packs_of_deleted_snapshots_only(local_vault, local_settings,
                                                             tmp_path):
    tree = tmp_path / "uploads"
    tree.mkdir()
    (tree / "old.bin").write_bytes(os.urandom(300_000))
    state = str(tmp_path / "state")
    first = files.take_snapshot(local_vault, [str(tree)], label="uploads", state_dir=state)
    (tree / "old.bin").unlink()
    (tree / "new.bin").write_bytes(os.urandom(300_000))
    second = files.take_snapshot(local_vault, [str(tree)], label="uploads", state_dir=state)
    for repository in local_settings["repositories"]:
        age_packs(repository["url"], 2 * 24 * 3600)
    packs_before = files.referenced_packs(local_vault, "files")

    keep_newest = {"files": retention.Policy(last=1)}
    plan = pruning.collect(local_vault, keep_newest, kinds=["files"])
    assert [item.ref.id for item in plan.doomed] == [first.backup_id]
    pruning.apply(local_vault, plan)

    assert [item.id for item in local_vault.list("files")] == [second.backup_id]
    still_used = files.referenced_packs(local_vault, "files")
    assert still_used < packs_before  # the first snapshot's own pack went
    stored = {key.split("/shared/", 1)[1] for repository in local_vault.repositories
              for key in (item.key for item in repository.storage.list("backups/files/shared"))}
    assert stored == still_used
    restored = tmp_path / "restored"
    files.restore_snapshot(local_vault, "latest", target=str(restored), safety_backup=False,
                           state_dir=state)
    assert sorted(p.name for p in restored.rglob("*.bin")) == ["new.bin"]
