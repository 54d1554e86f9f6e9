"""backup_info, backup_verify and backup_prune run for real by ansible-playbook, with
the audit_log callback on and a known password that must never surface anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.integration.backdated import backup_at
from tests.receiver import Receiver

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PASSWORD = "Kn0wn-Pa55word-7f3c9e"
NOW = datetime.now(timezone.utc)


def ansible_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ,
            "ANSIBLE_COLLECTIONS_PATH": str(REPO / "var" / "collections"),
            "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "0", **extra}


@pytest.mark.parametrize("plugin", [("module", "cosmic.backup.backup_info"),
                                    ("module", "cosmic.backup.backup_verify"),
                                    ("module", "cosmic.backup.backup_prune"),
                                    ("callback", "cosmic.backup.audit_log")])
def test_ansible_doc_renders(plugin, tmp_path):
    kind, name = plugin
    result = subprocess.run([str(BIN / "ansible-doc"), "-t", kind, name], capture_output=True,
                            text=True, env=ansible_environment(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    assert name in result.stdout and "ERROR" not in result.stderr


def test_playbook_run_freshness_verify_prune_and_audit(local_vault, local_settings, tmp_path):
    stale_id = backup_at(local_vault, "database", NOW - timedelta(hours=30))
    backup_at(local_vault, "files", NOW - timedelta(days=100, hours=1))
    backup_at(local_vault, "files", NOW - timedelta(days=95, hours=1))
    fresh_id = backup_at(local_vault, "files", NOW - timedelta(hours=2))
    backup_at(local_vault, "config", NOW - timedelta(days=200))
    backup_at(local_vault, "config", NOW - timedelta(days=1))

    textfile = tmp_path / "textfile"
    playbook_log = tmp_path / "controller" / "playbook-audit.jsonl"
    results_file = tmp_path / "results.json"
    with Receiver() as receiver:
        variables = {
            "cosmic_backup_repositories": local_settings["repositories"],
            "cosmic_backup_keys": local_settings["keys"],
            "cosmic_backup_audit_log": local_settings["audit_log"],
            "cosmic_backup_monitoring": {"textfile_dir": str(textfile),
                                         "webhook_url": receiver.url,
                                         "paths": [str(tmp_path)]},
            "ansible_python_interpreter": sys.executable,
            "known_password": PASSWORD,
            "playbook_audit_log": str(playbook_log),
            "results_file": str(results_file),
        }
        extra = tmp_path / "vars.json"
        extra.write_text(json.dumps(variables))
        run = subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
             "-e", f"@{extra}", str(REPO / "tests" / "playbooks" / "backup_monitoring.yml")],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
            env=ansible_environment(tmp_path, ANSIBLE_CALLBACKS_ENABLED="cosmic.backup.audit_log",
                                    COSMIC_BACKUP_PLAYBOOK_AUDIT_LOG=str(playbook_log),
                                    COSMIC_BACKUP_ACTOR="alice"))
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]

    results = json.loads(results_file.read_text())
    assert results["stale"]["kinds"]["database"]["newest"] == stale_id
    assert results["verified"]["verifications"][0]["backup_id"] == fresh_id
    deleted = {item["kind"] for item in results["pruned"]["delete"]}
    assert deleted == {"files", "config"}
    actions = [event["action"] for event in results["trail"]["audit_trail"]]
    assert {"write", "verification", "verification record",
            "playbook task: cosmic.backup.backup_verify"} <= set(actions)
    kept = {item["id"]: item["reasons"] for item in results["pruned"]["keep"]}
    assert "newest verified" in kept[fresh_id]
    assert {item.id for item in local_vault.list()} == set(kept)

    # The stale database raised exactly one alert, naming it and the next step.
    assert [post["json"]["kind"] for post in receiver.posts] == ["database"]
    assert "./scripts/backup.sh database" in receiver.posts[0]["json"]["next_step"]

    # Metrics: the catalog, the verify run and the prune runs, in textfile format.
    names = sorted(os.listdir(textfile))
    assert "cosmic_backup_catalog.prom" in names
    assert "cosmic_backup_verify_files.prom" in names
    assert {"cosmic_backup_prune_files.prom", "cosmic_backup_prune_config.prom"} <= set(names)
    catalog = (textfile / "cosmic_backup_catalog.prom").read_text()
    assert 'cosmic_backup_backup_stale{kind="database"} 1' in catalog
    assert f'cosmic_backup_filesystem_free_bytes{{path="{tmp_path}"}}' in catalog

    # The callback: who, which playbook and hosts, each task with its backup ids, the end.
    events = [json.loads(line) for line in playbook_log.read_text().splitlines()]
    start, *tasks, end = events
    assert start["event"] == "run_start" and start["actor"] == "alice"
    assert start["playbook"].endswith("backup_monitoring.yml") and start["hosts"] == ["localhost"]
    assert {event["module"] for event in tasks} == {
        "cosmic.backup.backup_info", "cosmic.backup.backup_verify", "cosmic.backup.backup_prune"}
    verify_event = next(e for e in tasks if e["module"] == "cosmic.backup.backup_verify")
    assert fresh_id in verify_event["backup_ids"]
    assert tasks[0]["result"] == "failed" and "stale backups" in tasks[0]["msg"]
    assert tasks[-1]["censored"] is True and "backup_ids" not in tasks[-1]
    assert end["event"] == "run_end" and end["hosts"]["localhost"]["failures"] == 0
    assert len({event["run_id"] for event in events}) == 1

    # The known password surfaces nowhere: outputs, logs, metrics, records, alerts.
    assert PASSWORD not in run.stdout + run.stderr
    assert PASSWORD not in json.dumps(receiver.posts)
    searched = 0
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != extra:
            searched += 1
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert searched > 20
