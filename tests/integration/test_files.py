"""File snapshots on real local repositories: round trips, increments, damage and attacks."""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil

import pytest

from tests.engine import errors
from tests.integration.filetrees import T0, allocated, change_files, describe, make_tree, write

from ansible_collections.cosmic.backup.plugins.module_utils import (  # isort: skip
    durability,
    files,
    verification,
)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "src"
    facts = make_tree(root)
    return root, facts


@pytest.fixture
def state(tmp_path):
    return str(tmp_path / "state")


def restored(target, source) -> str:
    return os.path.join(str(target), files.snapshot_path(str(source)))


def test_round_trip_keeps_every_byte_mode_owner_time_and_link(local_vault, tree, state,
                                                               tmp_path):
    root, _facts = tree
    result = files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state)
    assert result.stats.files > 60 and result.stats.hardlinks == 2
    assert result.stats.symlinks == 3 and not result.warnings
    out = tmp_path / "out"
    restore = files.restore_snapshot(local_vault, "latest", label="uploads", target=str(out))
    assert restore.files == result.stats.files and not restore.damaged
    copy = restored(out, root)
    assert describe(copy) == describe(root)
    # sparse files come back sparse, zero-byte files as zero bytes
    assert allocated(os.path.join(copy, "sparse.img")) < 1 << 20
    assert os.path.getsize(os.path.join(copy, "sparse.img")) == 64 << 20
    assert os.path.getsize(os.path.join(copy, "empty-file")) == 0
    # the snapshot passes the verification registry's files check in both copies
    checks = verification.registered("files")(local_vault, local_vault.select("latest"), {})
    assert [check.ok for check in checks] == [True, True]


def test_second_snapshot_reads_and_sends_only_what_changed(local_vault, tmp_path, state):
    root = tmp_path / "src"
    facts = make_tree(root, files=200, large=False)
    first = files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state)
    changed = change_files([p for p in facts["files"] if os.path.getsize(p) > 1000], 0.02)
    changed_bytes = sum(os.path.getsize(path) for path in changed)
    second = files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state)
    assert second.stats.read_files == len(changed)
    assert second.stats.read_bytes == changed_bytes
    assert second.stats.new_bytes == changed_bytes
    assert second.stats.reused_files == first.stats.files - len(changed)
    # what is stored: the changed content (incompressible) plus a small index
    assert changed_bytes <= second.stored_bytes < changed_bytes + 40_000
    # each snapshot restores on its own, also once the other is gone
    local_vault.delete_backup(local_vault.select(first.backup_id), "test")
    out = tmp_path / "out"
    files.restore_snapshot(local_vault, second.backup_id, target=str(out))
    assert describe(restored(out, root)) == describe(root)


def test_identical_content_is_stored_once(local_vault, tmp_path, state):
    data = os.urandom(3 << 20)
    for name in ("a", "b", "c/d"):
        write(str(tmp_path / "src" / name), data)
    result = files.take_snapshot(local_vault, [str(tmp_path / "src")], label="uploads",
                                 state_dir=state)
    assert result.stats.read_bytes == 3 * len(data)
    assert result.stats.new_bytes == len(data)


def test_lost_cache_reads_everything_but_stores_nothing_twice_in_an_index(local_vault, tree,
                                                                        state, tmp_path):
    root, _facts = tree
    files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state)
    shutil.rmtree(state)
    again = files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state)
    assert again.stats.reused_files == 0 and again.stats.read_bytes == again.stats.bytes
    assert any("no earlier files snapshot" in note for note in again.notes)
    out = tmp_path / "out"
    files.restore_snapshot(local_vault, again.backup_id, target=str(out))
    assert describe(restored(out, root)) == describe(root)


def test_pruned_packs_are_noticed_and_content_stored_again(local_vault, tmp_path, state):
    root = tmp_path / "src"
    write(str(root / "keep.bin"), os.urandom(100_000))
    first = files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state)
    local_vault.delete_backup(local_vault.select(first.backup_id), "test")
    report = files.collect_garbage(local_vault, "files", grace_seconds=0)
    assert report["removed"] == 2 and report["referenced"] == 0  # one pack, two copies
    second = files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state)
    assert second.stats.new_bytes == 100_000
    assert any("gone (pruned)" in note for note in second.notes)
    assert files.verify_snapshot(local_vault, local_vault.select(second.backup_id))[0].ok


def test_restore_in_place_takes_a_safety_backup_and_keeps_the_previous_files(
        local_vault, tree, state):
    root, facts = tree
    before = describe(root)
    files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state)
    write(str(root / "new-since.txt"), b"created after the snapshot")
    change_files(facts["files"][:3], 1.0)
    shutil.rmtree(root / "d2")
    current = describe(root)
    result = files.restore_snapshot(local_vault, "latest", label="uploads", state_dir=state)
    assert result.targets == [str(root)]
    assert describe(root) == before
    [kept] = result.previous
    assert describe(kept) == current
    # the safety backup holds what was there, and restores on its own
    safety = local_vault.manifest(local_vault.select(result.safety_backup))
    assert safety["meta"]["label"] == "uploads-safety"
    assert not [name for name in os.listdir(root.parent) if files.STAGING_MARK in name]


def test_a_restore_is_on_disk_before_it_replaces_the_current_files(local_vault, tree, state,
                                                                    monkeypatch):
    """A crash just after the swap must not leave empty files in place of the previous
    ones: the staged tree is synced (syncfs) before the rename, and in the background
    while it is written."""
    root, _facts = tree
    files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state)
    synced: list[tuple[str, bool, bool]] = []  # (path, destination replaced yet, in finish)
    real_sync = durability.sync_file_system
    finishing = []

    def recording_sync(path):
        real_sync(path)  # the real syncfs(2) on the real file system
        replaced = not any(files.STAGING_MARK in name for name in os.listdir(root.parent))
        synced.append((path, replaced, bool(finishing)))

    real_finish = durability.TreeWriteback.finish

    def finish(self):
        finishing.append(True)
        real_finish(self)

    monkeypatch.setattr(durability, "sync_file_system", recording_sync)
    monkeypatch.setattr(durability.TreeWriteback, "finish", finish)
    # a sync every MiB written: the test tree is small
    monkeypatch.setattr(files, "TreeWriteback",
                        functools.partial(durability.TreeWriteback, step=1 << 20))
    result = files.restore_snapshot(local_vault, "latest", label="uploads", state_dir=state)
    assert result.files > 60 and result.previous
    final = [entry for entry in synced if entry[2]]
    assert final and all(not replaced for _path, replaced, _final in final)
    # the tree holds a 64 MiB sparse file and more: background syncs ran while writing
    assert [entry for entry in synced if not entry[2]]
    assert all(files.STAGING_MARK in path for path, _replaced, _final in synced)


def test_a_disk_that_fails_the_sync_replaces_nothing(local_vault, tree, state, monkeypatch):
    root, _facts = tree
    files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state)
    shutil.rmtree(root / "d2")
    current = describe(root)

    def failing_sync(path):
        raise OSError(errno.EIO, os.strerror(errno.EIO), path)

    monkeypatch.setattr(durability, "sync_file_system", failing_sync)
    with pytest.raises(errors.StorageError, match=r"could not be written to disk .*nothing was "
                                                  r"replaced"):
        files.restore_snapshot(local_vault, "latest", label="uploads", state_dir=state,
                               safety_backup=False)
    assert describe(root) == current
    assert not [name for name in os.listdir(root.parent) if files.STAGING_MARK in name]


def test_sync_file_system_names_a_path_it_cannot_open(tmp_path):
    with pytest.raises(FileNotFoundError):
        durability.sync_file_system(str(tmp_path / "missing"))
    durability.sync_file_system(str(tmp_path))


def test_a_second_restore_refuses_to_race_one_still_running(local_vault, tree, state):
    root, facts = tree
    files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state)
    change_files(facts["files"][:3], 1.0)
    current = describe(root)
    # a restore that outlived its playbook (a background job) still holds the lock
    running = files.exclusive_lock(state, "files-restore.lock", "test")
    try:
        with pytest.raises(errors.BackupError, match="another files restore is running"):
            files.restore_snapshot(local_vault, "latest", label="uploads", state_dir=state)
        assert describe(root) == current
        assert not [name for name in os.listdir(root.parent) if files.STAGING_MARK in name]
        assert len(local_vault.list("files")) == 1  # no safety backup either
    finally:
        os.close(running)
    files.restore_snapshot(local_vault, "latest", label="uploads", state_dir=state)
    assert describe(root) != current


def test_restore_of_chosen_paths_leaves_the_rest_alone(local_vault, tree, state):
    root, facts = tree
    files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state)
    victim = facts["files"][0]
    original = open(victim, "rb").read()  # noqa: SIM115
    write(victim, b"overwritten by mistake")
    other = facts["files"][5]
    write(other, b"a legitimate change since")
    result = files.restore_snapshot(local_vault, "latest", label="uploads",
                                    paths=[os.fsdecode(victim)], safety_backup=False,
                                    keep_previous=False, state_dir=state)
    assert result.files == 1 and result.previous == []
    assert open(victim, "rb").read() == original  # noqa: SIM115
    assert open(other, "rb").read() == b"a legitimate change since"  # noqa: SIM115
    with pytest.raises(errors.SelectorError, match="not in this snapshot"):
        files.restore_snapshot(local_vault, "latest", paths=[str(root / "nope")],
                               target=str(root.parent / "x"))


def test_labels_select_their_own_snapshots(local_vault, tmp_path, state):
    write(str(tmp_path / "uploads" / "u.txt"), b"upload")
    write(str(tmp_path / "logs" / "app.log"), b"log line")
    files.take_snapshot(local_vault, [str(tmp_path / "uploads")], label="uploads",
                        state_dir=state)
    files.take_snapshot(local_vault, [str(tmp_path / "logs")], label="logs", state_dir=state)
    uploads = files.select_snapshot(local_vault, "latest", "files", "uploads")
    assert local_vault.manifest(uploads)["meta"]["paths"] == [str(tmp_path / "uploads")]
    with pytest.raises(errors.SelectorError, match="labelled other"):
        files.select_snapshot(local_vault, "latest", "files", "other")


def test_damaged_pack_is_named_with_its_files_and_the_rest_restores(local_vault, tmp_path,
                                                                     state, monkeypatch):
    monkeypatch.setattr(files, "PACK_TARGET", 64 << 10)
    root = tmp_path / "src"
    for number in range(6):
        write(str(root / f"file{number}.bin"), os.urandom(100_000))
    result = files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state)
    assert result.packs_written == 6
    ref = local_vault.select(result.backup_id)
    index = files.load_index(local_vault, ref)
    victim = next(e for e in index["entries"] if e["path"].endswith("file2.bin"))
    pack = index["blobs"][victim["blobs"][0]][0]
    for repository in local_vault.repositories:  # both copies: no failover can save it
        path = os.path.join(repository.storage.root, "backups/files/shared", pack)
        data = bytearray(open(path, "rb").read())  # noqa: SIM115
        data[len(data) // 2] ^= 0x40
        open(path, "wb").write(data)  # noqa: SIM115
    checks = files.verify_snapshot(local_vault, ref)
    assert [check.ok for check in checks] == [False, False]
    assert "/" + victim["path"] in checks[0].detail and "file1.bin" not in checks[0].detail
    verified = verification.verify_backup(local_vault, ref, record=False)
    assert not verified.ok and "file2.bin" in verified.summary()
    out = tmp_path / "out"
    with pytest.raises(errors.IntegrityError, match=r"file2\.bin"):
        files.restore_snapshot(local_vault, ref.id, target=str(out))
    assert not out.exists()
    healthy = [str(root / f"file{n}.bin") for n in (0, 1, 3, 4, 5)]
    files.restore_snapshot(local_vault, ref.id, target=str(out), paths=healthy)
    assert sorted(os.listdir(restored(out, root))) == [os.path.basename(p) for p in healthy]
    skipped = files.restore_snapshot(local_vault, ref.id, target=str(tmp_path / "out2"),
                                     skip_damaged=True)
    assert skipped.damaged == ["/" + victim["path"]]


def test_a_damaged_primary_copy_is_read_from_the_secondary(local_vault, tmp_path, state):
    root = tmp_path / "src"
    write(str(root / "a.bin"), os.urandom(200_000))
    result = files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state)
    [pack] = files.load_index(local_vault, local_vault.select(result.backup_id))["packs"]
    os.unlink(os.path.join(local_vault.primary.storage.root, "backups/files/shared", pack))
    out = tmp_path / "out"
    restore = files.restore_snapshot(local_vault, result.backup_id, target=str(out))
    assert any("primary" in warning for warning in restore.warnings)
    assert describe(restored(out, root)) == describe(root)


def test_files_that_vanish_or_change_while_read_are_reported(local_vault, tmp_path, state,
                                                             monkeypatch):
    root = tmp_path / "src"
    for name in ("stable", "vanishing", "growing"):
        write(str(root / name), b"x" * 1000)
    real_read = files._read_exactly

    def racing_read(fd, size):
        data = real_read(fd, size)
        name = os.readlink(f"/proc/self/fd/{fd}")
        if name.endswith("growing") and data:
            with open(name, "ab") as handle:
                handle.write(b"more")
        return data

    real_open = os.open

    def vanishing_open(path, flags, *args):
        if str(path).endswith("vanishing"):
            os.unlink(path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(files, "_read_exactly", racing_read)
    monkeypatch.setattr(files.os, "open", vanishing_open)
    result = files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state)
    monkeypatch.undo()
    assert any("vanishing vanished" in warning for warning in result.warnings)
    assert any("growing kept changing" in warning for warning in result.warnings)
    index = files.load_index(local_vault, local_vault.select(result.backup_id))
    growing = next(e for e in index["entries"] if e["path"].endswith("growing"))
    assert growing["size"] == sum(index["blobs"][b][2] for b in growing["blobs"])
    files.restore_snapshot(local_vault, result.backup_id, target=str(tmp_path / "out"))


def test_check_mode_stores_nothing_and_only_if_changed_skips_quiet_trees(local_vault,
                                                                       tmp_path, state):
    root = tmp_path / "src"
    write(str(root / "app.yml"), b"a: 1\n")
    dry = files.take_snapshot(local_vault, [str(root)], label="conf", state_dir=state,
                              check_mode=True)
    assert dry.changed and dry.backup_id is None and local_vault.list() == []
    files.take_snapshot(local_vault, [str(root)], label="conf", state_dir=state,
                        only_if_changed=True)
    quiet = files.take_snapshot(local_vault, [str(root)], label="conf", state_dir=state,
                                only_if_changed=True)
    assert not quiet.changed and len(local_vault.list()) == 1
    write(str(root / "app.yml"), b"a: 2\n", mtime_ns=T0 + 5)
    assert files.take_snapshot(local_vault, [str(root)], label="conf", state_dir=state,
                               only_if_changed=True).changed
    assert len(local_vault.list()) == 2


def test_excludes_and_special_files(local_vault, tmp_path, state):
    root = tmp_path / "src"
    write(str(root / "keep.txt"), b"keep")
    write(str(root / "cache" / "junk.bin"), b"junk")
    write(str(root / "x.tmp"), b"tmp")
    os.mkfifo(root / "a-fifo")
    result = files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state,
                                 excludes=["*.tmp", str(root / "cache")])
    names = {entry["path"].rsplit("/", 1)[-1] for entry in result.entries}
    assert "keep.txt" in names and not {"junk.bin", "cache", "x.tmp", "a-fifo"} & names
    assert any("a-fifo is a FIFO" in warning for warning in result.warnings)


# -- hand-made malicious indexes ------------------------------------------------------------


def forged_snapshot(vault, entries, *, roots=("srv/app",), blobs=None, packs=None) -> str:
    """A snapshot whose index says whatever an attacker with the key wants."""
    index = {"format": files.INDEX_FORMAT, "version": 1, "label": "uploads",
             "roots": list(roots), "entries": entries, "blobs": blobs or {},
             "packs": packs or {}}
    with vault.new_backup("files", {"label": "uploads"}) as backup:
        backup.add_bytes("index", json.dumps(index).encode())
    return backup.id


def entry(path, kind="d", **more):
    return {"path": path, "type": kind, "mode": 0o755, "uid": 0, "gid": 0,
            "mtime_ns": T0, **more}


BLOB = "ab" * 32
PACK = "packs/ab/" + "cd" * 16
BLOBS = {BLOB: [PACK, 0, 5]}
PACKS = {PACK: {"size": 100, "sha256": "0" * 64}}


@pytest.mark.parametrize(("bad", "reason"), [
    ([entry("srv/app"), entry("/etc/passwd", "f", size=5, blobs=[BLOB])], "absolute path"),
    ([entry("srv/app"), entry("srv/app/../../etc/cron.d/x", "f", size=5, blobs=[BLOB])],
     "'..'"),
    ([entry("srv/app"), entry("srv/app/tty", "c")], "device nodes"),
    ([entry("srv/app"), entry("srv/app/etc", "l", target="/etc"),
      entry("srv/app/etc/passwd", "f", size=5, blobs=[BLOB])], "under srv/app/etc, a symlink"),
    ([entry("srv/app"), entry("srv/app/up", "l", target="../../../etc")], "leaves /srv/app"),
    ([entry("srv/app"), entry("srv/app/abs", "l", target="/etc/shadow")], "absolute path"),
    ([entry("srv/app"), entry("srv/app/h", "h", target="etc/shadow")], "hard link"),
    ([entry("srv/app"), entry("etc/motd", "f", size=5, blobs=[BLOB])], "outside the snapshot"),
    ([entry("srv/app"), entry("srv/app/f", "f", size=50, blobs=[BLOB])], "5 bytes of content"),
    ([entry("srv/app"), entry("srv/app/f", "f", size=5, blobs=["ef" * 32])], "not in the index"),
    ([entry("srv/app"), entry("srv/app"), ], "appears twice"),
])
def test_malicious_indexes_are_refused_and_nothing_is_written(local_vault, tmp_path, bad,
                                                              reason):
    backup_id = forged_snapshot(local_vault, bad, blobs=BLOBS, packs=PACKS)
    out = tmp_path / "out"
    with pytest.raises(errors.IntegrityError, match="nothing was written") as raised:
        files.restore_snapshot(local_vault, backup_id, target=str(out), safety_backup=False)
    assert reason in str(raised.value)
    assert set(os.listdir(tmp_path)) == {"audit.jsonl", "keys", "primary", "secondary"}


def test_malicious_pack_locations_and_roots_are_refused(local_vault, tmp_path):
    bad_pack = {"../../../etc/passwd": {"size": 10, "sha256": "0" * 64}}
    backup_id = forged_snapshot(local_vault, [entry("srv/app")],
                                blobs={BLOB: ["../../../etc/passwd", 0, 5]}, packs=bad_pack)
    with pytest.raises(errors.IntegrityError, match="not a pack name"):
        files.restore_snapshot(local_vault, backup_id, target=str(tmp_path / "o"),
                               safety_backup=False)
    backup_id = forged_snapshot(local_vault, [entry("etc")], roots=["/etc"])
    with pytest.raises(errors.IntegrityError, match="absolute path"):
        files.restore_snapshot(local_vault, backup_id, safety_backup=False)


def test_a_pack_swapped_for_another_is_refused(local_vault, tmp_path, state):
    root = tmp_path / "src"
    write(str(root / "a"), os.urandom(1000))
    first = files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state)
    write(str(root / "a"), os.urandom(1000), mtime_ns=T0 + 1)
    second = files.take_snapshot(local_vault, [str(root)], label="uploads", state_dir=state)
    [pack1] = files.load_index(local_vault, local_vault.select(first.backup_id))["packs"]
    [pack2] = files.load_index(local_vault, local_vault.select(second.backup_id))["packs"]
    for repository in local_vault.repositories:
        shared = os.path.join(repository.storage.root, "backups/files/shared")
        shutil.copy(os.path.join(shared, pack1), os.path.join(shared, pack2))
    with pytest.raises(errors.IntegrityError, match="cannot be restored"):
        files.restore_snapshot(local_vault, second.backup_id, target=str(tmp_path / "out"))
    checks = files.verify_snapshot(local_vault, local_vault.select(second.backup_id))
    assert "moved or swapped" in checks[0].detail
