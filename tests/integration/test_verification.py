"""Verification records: what backup_info and pruning read to know a backup passed."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible_collections.cosmic.backup.plugins.module_utils import verification

from tests.integration.backdated import backup_at, days_ago


@pytest.fixture
def registry():
    """Leave the verifier registry as it was found."""
    saved = dict(verification._VERIFIERS)
    yield verification
    verification._VERIFIERS.clear()
    verification._VERIFIERS.update(saved)


def test_a_verification_is_recorded_in_every_repository(local_vault, local_settings, registry):
    backup_id = backup_at(local_vault, "database", days_ago(1))
    ref = local_vault.select(backup_id)
    result = verification.verify_backup(local_vault, ref, deep=False)
    assert result.ok, result.summary()
    assert [c.repository for c in result.checks] == ["primary", "secondary"]
    assert result.recorded_in == ["primary", "secondary"]
    assert result.notes == ["stored-object authentication only (deep checks not requested)"]

    last = verification.last_results(local_vault)[backup_id]
    assert last.ok and last.backup_id == backup_id
    for repository in ("primary", "secondary"):
        root = Path(local_settings["repositories"][0 if repository == "primary" else 1]["url"])
        [record] = (root / "audit" / "verifications" / "database" / backup_id).iterdir()
        assert record.name.endswith("-ok.json")
        document = json.loads(record.read_text())
        assert document["backup_id"] == backup_id and document["ok"] is True
        key = Path(local_settings["keys"]["local_key_file"]).read_bytes()
        assert key not in record.read_bytes()
    events = [e for e in local_vault.audit.events(backup_id) if e["action"] == "verification"]
    assert events[-1]["result"] == "ok"


def test_the_kinds_check_runs_and_its_failure_is_recorded(local_vault, registry):
    seen = []

    def config_syntax(vault, ref, manifest):
        seen.append((ref.id, [o["name"] for o in manifest["objects"]]))
        return [verification.Check("yaml syntax", False, "app.yml line 3: mapping values "
                                   "are not allowed here")]

    registry.register("config", config_syntax)
    backup_id = backup_at(local_vault, "config", days_ago(0.5), {"app.yml": b"a: b: c"})
    result = verification.verify_backup(local_vault, local_vault.select(backup_id))
    assert seen == [(backup_id, ["app.yml"])]
    assert not result.ok
    assert "yaml syntax" in result.summary() and "line 3" in result.summary()
    assert verification.last_results(local_vault)[backup_id].ok is False


def test_a_crashing_check_fails_the_verification_and_says_so(local_vault, registry):
    registry.register("files", lambda vault, ref, manifest: 1 / 0)
    backup_id = backup_at(local_vault, "files", days_ago(0.1))
    result = verification.verify_backup(local_vault, local_vault.select(backup_id))
    assert not result.ok
    assert "crashed (ZeroDivisionError" in result.failures()[0].detail


def test_damaged_primary_copy_is_a_failed_verification_naming_it(local_vault, local_settings):
    backup_id = backup_at(local_vault, "database", days_ago(2), {"dump": b"rows" * 1000})
    kind_dir = Path(local_settings["repositories"][0]["url"]) / "backups" / "database"
    data = kind_dir / backup_id / "data" / "dump"
    damaged = bytearray(data.read_bytes())
    damaged[-40] ^= 1
    data.write_bytes(bytes(damaged))
    result = verification.verify_backup(local_vault, local_vault.select(backup_id), deep=False)
    assert not result.ok
    [failed] = result.failures()
    assert failed.repository == "primary" and failed.name == "stored objects authenticated"
    assert "dump" in failed.detail
    assert verification.last_results(local_vault)[backup_id].ok is False


def test_a_later_pass_supersedes_an_earlier_failure(local_vault):
    backup_id = backup_at(local_vault, "code", days_ago(3))
    ref = local_vault.select(backup_id)
    first = verification.Verification(backup_id, "code", days_ago(1),
                                       [verification.Check("x", False, "boom")])
    verification.write_record(local_vault, first)
    verification.verify_backup(local_vault, ref, deep=False)
    history = verification.records(local_vault)[backup_id]
    assert [item.ok for item in history] == [False, True]
    assert verification.read_record(local_vault, history[0])["checks"][0]["detail"] == "boom"


def test_random_sample_draws_from_every_kind_but_wal(local_vault):
    for kind in ("database", "files", "config", "wal", "wal", "wal"):
        backup_at(local_vault, kind, days_ago(random.uniform(1, 30)))
    pool = verification.sample_pool(local_vault.list())
    assert sorted(ref.kind for ref in pool) == ["config", "database", "files"]
    sample = verification.choose_sample(pool, 2, random.Random(7))
    assert len(sample) == 2 and sample == sorted(sample)
    assert len(verification.choose_sample(pool, 10)) == 3


def test_a_kind_without_a_check_says_so(local_vault, registry):
    registry._VERIFIERS["code"] = None  # as if no engine module registered one
    backup_id = backup_at(local_vault, "code", days_ago(1))
    result = verification.verify_backup(local_vault, local_vault.select(backup_id))
    assert result.ok
    assert result.notes == ["no code-specific check is installed; stored-object "
                            "authentication only"]


def cosmic_backup(config: Path, *args: str):
    cli = str(Path(__file__).resolve().parents[2] / "bin" / "cosmic-backup")
    return subprocess.run([cli, "--config", str(config), *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_verify_a_sample_records_each_and_info_shows_it(local_settings, local_vault, tmp_path):
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(local_settings))
    ids = [backup_at(local_vault, kind, days_ago(day))
           for kind, day in (("files", 3), ("files", 2), ("config", 1))]
    result = cosmic_backup(config, "verify", "--sample", "2", "--shallow", "--json")
    assert result.returncode == 0, result.stderr
    verified = [item["backup_id"] for item in json.loads(result.stdout)]
    assert len(verified) == 2 and set(verified) <= set(ids)
    assert set(verification.last_results(local_vault)) == set(verified)
    info = cosmic_backup(config, "info", "--max-age", "files=26h")
    assert info.returncode == 2  # the newest files backup is two days old
    assert "files     STALE" in info.stdout and "stale backups: files" in info.stderr
    bare = cosmic_backup(config, "verify")
    assert bare.returncode == 2 and "or --sample N" in bare.stderr


def test_cli_prune_dry_run_then_prune(local_settings, local_vault, tmp_path):
    old = backup_at(local_vault, "config", days_ago(120))
    new = backup_at(local_vault, "config", days_ago(1))
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(dict(local_settings,
                                          retention={"config": {"within": "30d"}})))
    dry = cosmic_backup(config, "prune", "--dry-run", "--verbose")
    assert f"would delete {old}" in dry.stdout
    assert f"keep {new}  newest 1, within 30d" in dry.stdout
    assert len(local_vault.list()) == 2
    done = cosmic_backup(config, "prune")
    assert f"deleted {old}" in done.stdout and "1 backup(s) deleted, 1 kept" in done.stdout
    assert done.returncode == 1  # warns that no config backup was verified
    assert "no config backup has passed verification" in done.stderr
    assert [item.id for item in local_vault.list()] == [new]
