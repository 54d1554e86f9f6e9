"""The lab with STORAGE=s3: its own moto server, buckets in two regions and a KMS
key in each, and the playbooks backing up into them and restoring from them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest

from tests.integration.lab import lab_command, playbook, private_lab


@pytest.fixture(scope="module")
def s3_lab():
    # the shell's AWS settings (here the session's closed-port guard) stay: the lab's win
    with private_lab("cosmic-s3lab-") as (root, env):
        up = lab_command(env, "up", "--storage", "s3", "--scale", "0.01")
        assert up.returncode == 0, up.stderr
        yield root, env, json.loads((root / "lab" / "lab.json").read_text())


def stored_kinds(state, role: str) -> set[str]:
    """The backup kinds under the lab's prefix in one of its buckets (asked of moto itself)."""
    repository = next(r for r in state["vault"]["repositories"] if r["name"] == role)
    bucket, prefix = repository["url"].removeprefix("s3://").split("/", 1)
    s3 = boto3.client("s3", endpoint_url=repository["endpoint_url"],
                      region_name=repository["region"])
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/backups/")
    return {item["Key"].split("/")[2] for item in listing.get("Contents", [])}


def test_up_provisions_buckets_and_keys_and_is_idempotent(s3_lab):
    root, env, state = s3_lab
    repositories = state["vault"]["repositories"]
    assert [r["url"] for r in repositories] == ["s3://cosmic-lab-primary/cosmic",
                                                "s3://cosmic-lab-secondary/cosmic"]
    assert repositories[0]["region"] != repositories[1]["region"]
    endpoint = state["s3"]["endpoint_url"]
    assert endpoint.startswith("http://127.0.0.1:")
    arns = state["vault"]["keys"]["kms_key_arns"]
    assert {arn.split(":")[3] for arn in arns} == {r["region"] for r in repositories}
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-1")
    lock = s3.get_object_lock_configuration(Bucket="cosmic-lab-primary")
    assert lock["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    assert s3.get_bucket_versioning(Bucket="cosmic-lab-secondary")["Status"] == "Enabled"
    text = (root / "lab" / "lab.env").read_text()
    assert f"export AWS_ENDPOINT_URL='{endpoint}'" in text
    assert "export AWS_ACCESS_KEY_ID=" in text and "COSMIC_BACKUP_KMS_KEY_ARNS" in text

    again = lab_command(env, "up", "--storage", "s3", "--scale", "0.01")
    assert again.returncode == 0, again.stderr
    again = json.loads(again.stdout)
    assert again["processes"]["moto"] == state_pid(root, "moto")
    assert again["s3"] == {"endpoint_url": endpoint, "started": False, "created": []}
    after = json.loads((root / "lab" / "lab.json").read_text())
    assert after["vault"] == state["vault"]  # the same buckets and keys, none added
    kms = boto3.client("kms", endpoint_url=endpoint, region_name="eu-west-1")
    assert len(kms.list_keys()["Keys"]) == 1

    local = lab_command(env, "up", "--storage", "local", "--scale", "0.01")
    assert local.returncode == 2 and "keeps its backups in s3 storage" in local.stderr


def state_pid(root: Path, name: str) -> int:
    return int((root / "lab" / "run" / f"{name}.pid").read_text())


def test_backups_go_to_the_buckets_and_restore_from_them(s3_lab):
    root, env, state = s3_lab
    config = playbook(env, "backup.yml", "-e", "kind=config")
    assert config.returncode == 0, config.stdout[-3000:]
    # the dump only: the base backup and WAL archiving into S3 are the drill's (a minute here)
    database = playbook(env, "backup.yml", "-e", "kind=database",
                        "-e", '{"cosmic_database_backup_types": ["full"]}')
    assert database.returncode == 0, database.stdout[-3000:]
    assert "BACKUP database: OK" in database.stdout
    for role in ("primary", "secondary"):
        assert {"config", "database"} <= stored_kinds(state, role)
    restore = playbook(env, "restore.yml", "-e", "kind=config", "-e", "backup=latest")
    assert restore.returncode == 0, restore.stdout[-3000:]
    assert "RESTORE config latest: OK" in restore.stdout
    assert not (root / "lab" / "repositories").exists()  # nothing went to local storage


def test_a_restarted_moto_is_named_and_down_stops_it(s3_lab):
    """moto forgets its buckets and keys: `up` says the backups are gone, not "all fine"."""
    root, env, _state = s3_lab
    moto = state_pid(root, "moto")
    down = lab_command(env, "down")
    assert down.returncode == 0, down.stderr
    assert "moto" in json.loads(down.stdout)["stopped"]
    with pytest.raises(ProcessLookupError):
        os.kill(moto, 0)
    up = lab_command(env, "up", "--storage", "s3", "--scale", "0.01")
    assert up.returncode == 2
    assert "no longer has cosmic-lab-primary" in up.stderr
    assert "make lab-down PURGE=1" in up.stderr
