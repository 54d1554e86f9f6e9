"""The engine on local repositories: round trips, failover, faults, bad input."""

import hashlib
import io
import json
import os
import re
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.engine import catalog, errors, keys, settings


def backup(vault, data: bytes, kind="files", name="data"):
    with vault.new_backup(kind, {"source": "test"}) as writer:
        writer.add_stream(name, io.BytesIO(data))
    return writer


def restore(vault, selector="latest", kind="files", name="data"):
    ref = vault.select(selector, kind)
    with vault.open_object(ref, name) as plain:
        return plain.read(), plain


def stored_objects(repo_root: str):
    return sorted(p for p in Path(repo_root).rglob("*") if p.is_file())


def flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


def test_round_trip_into_both_repositories(local_vault, random_data):
    writer = backup(local_vault, random_data)
    assert writer.warnings == []
    [listing] = local_vault.list("files")
    assert listing.id == writer.id
    assert set(listing.copies) == {"primary", "secondary"}
    data, plain = restore(local_vault)
    assert data == random_data
    assert plain.used == "primary" and plain.warnings == []


def zstd_content_checksum(data: bytes, folder) -> str:
    """XXH64's low 32 bits of ``data`` as ``zstd -lv`` prints it (zstd -l reads no pipe)."""
    compressed = folder / "check.zst"
    compressed.write_bytes(subprocess.run(["zstd", "-q", "-c"], input=data, check=True,
                                          capture_output=True).stdout)
    listing = subprocess.run(["zstd", "-lv", str(compressed)], check=True, capture_output=True,
                             text=True).stdout
    return re.search(r"Check: XXH64 ([0-9a-f]{8})", listing).group(1)


def test_manifest_records_what_the_issue_asks(local_vault, random_data, local_settings,
                                              tmp_path):
    writer = backup(local_vault, random_data)
    manifest = local_vault.manifest(local_vault.select(writer.id))
    [entry] = manifest["objects"]
    assert entry["size"] == len(random_data)
    assert entry["zstd_checksum"] == zstd_content_checksum(random_data, tmp_path)
    assert manifest["host"] and manifest["tool"]["cosmic_backup"]
    assert manifest["keys"] == [keys.LocalKey.load(local_settings["keys"]["local_key_file"]).key_id]
    assert manifest["meta"] == {"source": "test"}
    assert manifest["encryption"]["algorithm"] == "AES_256_GCM_HKDF_SHA512_COMMIT_KEY"


def test_a_manifest_from_a_newer_version_is_refused_clearly(local_vault, random_data,
                                                           monkeypatch):
    monkeypatch.setattr(catalog, "MANIFEST_VERSION", catalog.MANIFEST_VERSION + 1)
    writer = backup(local_vault, random_data)
    monkeypatch.undo()
    with pytest.raises(errors.BackupError, match="written by a newer cosmic-backup"):
        local_vault.manifest(local_vault.select(writer.id))


def test_listing_needs_no_key(local_settings, random_data):
    backup(settings.build_vault(local_settings), random_data)
    os.unlink(local_settings["keys"]["local_key_file"])
    assert len(settings.build_vault(local_settings).list()) == 1


def test_the_manifest_is_written_last(local_vault, random_data):
    class Boom(Exception):
        pass

    with pytest.raises(Boom), local_vault.new_backup("files") as writer:
        writer.add_stream("first", io.BytesIO(random_data))
        raise Boom
    assert local_vault.list() == []  # objects exist, but no backup does
    with pytest.raises(errors.SelectorError):
        local_vault.select("latest", "files")


def test_selectors_pick_by_day(local_vault):
    first = backup(local_vault, b"one")
    second = backup(local_vault, b"two")
    today = first.ref.created.date().isoformat()
    assert restore(local_vault, today)[0] == b"two"
    assert restore(local_vault, first.id)[0] == b"one"
    assert local_vault.select("latest", "files").id == second.id


@pytest.mark.parametrize("target", ["manifest", "data"])
def test_flipped_byte_in_the_primary_fails_over_to_the_secondary(
        local_vault, local_settings, random_data, target):
    writer = backup(local_vault, random_data)
    root = Path(local_settings["repositories"][0]["url"])
    victim = next(p for p in stored_objects(root) if p.name == target)
    flip_byte(victim, victim.stat().st_size // 2)

    report = local_vault.verify(local_vault.select(writer.id))
    failure = report.first_failure()
    assert not report.ok and failure.repository == "primary" and failure.name == target
    assert all(c.ok for c in report.checks if c.repository == "secondary")

    data, plain = restore(local_vault)
    assert data == random_data
    if target == "data":
        assert plain.used == "secondary"
        assert "primary" in plain.warnings[0]
    audit_log = Path(local_settings["audit_log"]).read_text()
    audit = [json.loads(line) for line in audit_log.splitlines()]
    assert any(e["action"] == "read" and e["result"] == "failed" for e in audit)


def test_every_stored_object_is_authenticated(local_vault, local_settings, random_data):
    """Flip one byte in each object in turn: verification names exactly that object."""
    writer = backup(local_vault, random_data, name="dump")
    with local_vault.new_backup("files") as second:
        second.add_bytes("small", b"x" * 100)
    for path in stored_objects(local_settings["repositories"][1]["url"]):
        original = path.read_bytes()
        for position in (0, len(original) // 3, len(original) - 1):
            flip_byte(path, position)
            ref = local_vault.select(path.parts[-2] if path.name == "manifest" else path.parts[-3])
            report = local_vault.verify(ref)
            failure = report.first_failure()
            assert failure is not None, f"{path} byte {position} flipped went unnoticed"
            assert failure.repository == "secondary" and failure.name == path.name
            path.write_bytes(original)
    assert local_vault.verify(local_vault.select(writer.id)).ok
    assert local_vault.verify(local_vault.select(second.id)).ok


def test_both_copies_damaged_is_a_clear_error(local_vault, local_settings, random_data):
    backup(local_vault, random_data)
    for repository in local_settings["repositories"]:
        victim = next(p for p in stored_objects(repository["url"]) if p.name == "data")
        flip_byte(victim, 5000)
    with pytest.raises(errors.IntegrityError, match=r"no repository holds a sound copy.*"
                                                    r"primary: .*secondary: "):
        restore(local_vault)


def test_missing_primary_object_falls_back(local_vault, local_settings, random_data):
    backup(local_vault, random_data)
    victim = next(p for p in stored_objects(local_settings["repositories"][0]["url"])
                  if p.name == "data")
    victim.unlink()
    data, plain = restore(local_vault)
    assert data == random_data and plain.used == "secondary"
    assert "is missing from" in plain.warnings[0]


def test_failover_in_the_middle_of_a_stream(local_vault, local_settings, random_data):
    """Damage late in the primary copy: the reader switches copies mid-stream."""
    backup(local_vault, random_data)
    victim = next(p for p in stored_objects(local_settings["repositories"][0]["url"])
                  if p.name == "data")
    flip_byte(victim, victim.stat().st_size - 5000)
    ref = local_vault.select("latest", "files")
    with local_vault.open_object(ref, "data") as plain:
        first = plain.read(1 << 20)
        assert plain.used == "primary"
        rest = plain.read()
    assert first + rest == random_data
    assert plain.used == "secondary"


@pytest.mark.parametrize("version", [2, 1])
def test_copy_to_a_file_fails_over_in_the_middle(local_vault, local_settings, random_data,
                                                  tmp_path, version):
    """copy_to splices zstd's output into the file (or, to hash a version 1
    SHA-256, writes it): a copy failing late is replaced all the same."""
    backup(local_vault, random_data)
    victim = next(p for p in stored_objects(local_settings["repositories"][0]["url"])
                  if p.name == "data")
    flip_byte(victim, victim.stat().st_size - 5000)
    ref = local_vault.select("latest", "files")
    manifest = local_vault.manifest(ref)
    if version == 1:
        entry = manifest["objects"][0]
        entry["sha256"] = hashlib.sha256(random_data).hexdigest()
        del entry["zstd_checksum"]
    with local_vault.open_object(ref, "data", manifest, checksum=True) as plain, \
            open(tmp_path / "out", "wb") as out:
        assert plain.copy_to(out.fileno()) == len(random_data)
    assert (tmp_path / "out").read_bytes() == random_data
    assert plain.used == "secondary" and len(plain.warnings) == 1


def test_copy_to_a_file_opened_for_appending(local_vault, random_data, tmp_path):
    """splice(2) refuses O_APPEND: the bytes go through Python instead."""
    backup(local_vault, random_data)
    (tmp_path / "out").write_bytes(b"before\n")
    with local_vault.open_object(local_vault.select("latest", "files"), "data") as plain, \
            open(tmp_path / "out", "ab") as out:
        plain.copy_to(out.fileno())
    assert (tmp_path / "out").read_bytes() == b"before\n" + random_data


def test_secondary_failure_is_a_warning_not_a_loss(local_settings, random_data, tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the secondary's directory should be")
    local_settings["repositories"][1]["url"] = str(blocker / "repo")
    vault = settings.build_vault(local_settings)
    writer = backup(vault, random_data)
    assert len(writer.warnings) == 1 and "secondary copy" in writer.warnings[0]
    [listing] = vault.list()
    assert set(listing.copies) == {"primary"}
    assert restore(vault)[0] == random_data


def test_secondary_failing_under_two_concurrent_objects_is_one_warning(local_settings,
                                                                       random_data):
    """WAL batches and file packs seal objects of one backup in parallel: both can
    find the secondary broken at once."""
    vault = settings.build_vault(local_settings)
    secondary = vault.repositories[1].storage
    both_writing = threading.Barrier(2, timeout=30)

    class Failing:
        def __init__(self, writer):
            self.abort = writer.abort

        def write(self, data):
            both_writing.wait()
            raise errors.StorageError("secondary disk failed")

    real_writer = secondary.writer
    secondary.writer = lambda key: Failing(real_writer(key))
    with vault.new_backup("files") as writer, ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda name: writer.add_bytes(name, random_data), ["one", "two"]))
    assert len(writer.warnings) == 1 and "secondary copy" in writer.warnings[0]
    [listing] = vault.list()
    assert set(listing.copies) == {"primary"}
    for name in ("one", "two"):
        with vault.open_object(listing.ref, name) as plain:
            assert plain.read() == random_data


def test_unusable_primary_fails_before_anything_is_written(local_settings, tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("x")
    local_settings["repositories"][0]["url"] = str(blocker / "repo")
    vault = settings.build_vault(local_settings)
    with pytest.raises(errors.StorageError, match=r"repository file://.* is not usable"):
        backup(vault, b"data")
    assert stored_objects(local_settings["repositories"][1]["url"]) == []


def test_wrong_key_is_a_clear_error_and_changes_nothing(local_settings, random_data):
    backup(settings.build_vault(local_settings), random_data)
    before = {p: p.read_bytes() for p in stored_objects(local_settings["repositories"][0]["url"])}
    keys.LocalKey.generate().save(local_settings["keys"]["local_key_file"], overwrite=True)
    vault = settings.build_vault(local_settings)
    with pytest.raises(errors.KeyUnavailable, match="none of this host's keys"):
        restore(vault)
    after = {p: p.read_bytes() for p in stored_objects(local_settings["repositories"][0]["url"])}
    assert before == after


def test_lost_key_restores_after_import_of_the_recovery_code(local_settings, random_data):
    key_file = local_settings["keys"]["local_key_file"]
    code = keys.LocalKey.load(key_file).recovery_code()
    backup(settings.build_vault(local_settings), random_data)
    os.unlink(key_file)
    with pytest.raises(errors.KeyUnavailable, match="does not exist"):
        restore(settings.build_vault(local_settings))
    keys.LocalKey.from_recovery_code(code).save(key_file)
    assert restore(settings.build_vault(local_settings))[0] == random_data


def test_incomplete_backups_are_cleaned_only_when_old(local_vault, random_data):
    with pytest.raises(RuntimeError), local_vault.new_backup("files") as writer:
        writer.add_stream("part", io.BytesIO(random_data))
        raise RuntimeError("killed")
    assert local_vault.remove_incomplete() == []  # could still be running
    removed = local_vault.remove_incomplete(older_than=0)
    assert len(removed) == 2  # the object in each repository
    for repository in local_vault.repositories:
        assert list(repository.storage.list("backups")) == []


def test_object_names_are_unique_per_backup(local_vault):
    with pytest.raises(errors.BackupError, match="already used"), \
            local_vault.new_backup("files") as writer:
        writer.add_bytes("a", b"1")
        writer.add_bytes("a", b"2")
    with pytest.raises(errors.ConfigError), local_vault.new_backup("files") as writer:
        writer.add_bytes("../escape", b"1")


def test_manifest_of_another_backup_is_rejected(local_vault, local_settings):
    """A manifest copied over another backup's fails on its encryption context."""
    first, second = backup(local_vault, b"one"), backup(local_vault, b"two")
    for repository in local_settings["repositories"]:
        root = Path(repository["url"])
        source = root / catalog.manifest_key("files", first.id)
        (root / catalog.manifest_key("files", second.id)).write_bytes(source.read_bytes())
    with pytest.raises(errors.IntegrityError, match="moved or swapped"):
        local_vault.manifest(local_vault.select(second.id))


def test_delete_backup_removes_every_copy_manifest_first(local_vault, local_settings):
    keep, drop = backup(local_vault, b"keep"), backup(local_vault, b"drop")
    results = local_vault.delete_backup(local_vault.select(drop.id), reason="test")
    assert results == {"primary": "deleted", "secondary": "deleted"}
    assert [item.id for item in local_vault.list()] == [keep.id]
    assert restore(local_vault)[0] == b"keep"
    audit_log = Path(local_settings["audit_log"]).read_text()
    deletes = [e for e in map(json.loads, audit_log.splitlines()) if e["action"] == "delete"]
    assert {(e["repository"], e["result"], e["backup_id"]) for e in deletes} == {
        ("primary", "ok", drop.id), ("secondary", "ok", drop.id)}


def test_checksum_on_request_and_size_always(local_vault, random_data):
    writer = backup(local_vault, random_data)
    ref = local_vault.select(writer.id)
    manifest = local_vault.manifest(ref)
    assert manifest["version"] == 2 and "sha256" not in manifest["objects"][0]
    doctored = json.loads(json.dumps(manifest))
    doctored["objects"][0]["zstd_checksum"] = "0" * 8
    with pytest.raises(errors.IntegrityError, match="zstd checksum"), \
            local_vault.open_object(ref, "data", doctored) as plain:
        plain.read()
    # A version 1 manifest: a SHA-256 and no zstd checksum.
    del doctored["objects"][0]["zstd_checksum"]
    doctored["objects"][0]["sha256"] = "0" * 64
    with local_vault.open_object(ref, "data", doctored) as plain:
        assert plain.read() == random_data  # frames and zstd's XXH64 vouch for it
    with pytest.raises(errors.IntegrityError, match="SHA-256"), \
            local_vault.open_object(ref, "data", doctored, checksum=True) as plain:
        plain.read()
    doctored["objects"][0]["sha256"] = hashlib.sha256(random_data).hexdigest()
    with local_vault.open_object(ref, "data", doctored, checksum=True) as plain:
        assert plain.read() == random_data
    doctored["objects"][0]["size"] += 1
    with pytest.raises(errors.IntegrityError, match="the manifest says"), \
            local_vault.open_object(ref, "data", doctored) as plain:
        plain.read()
