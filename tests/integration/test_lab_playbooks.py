"""The playbooks for real: ansible-playbook against the lab inventory, on a lab
at scale 0.01 in a temporary directory (its own PostgreSQL, app, balancer)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration import filetrees
from tests.integration.lab import LAB, REPO, playbook, private_lab


@pytest.fixture(scope="module")
def lab():
    with private_lab("cosmic-lab-") as (root, env):
        up = subprocess.run([*LAB, "up", "--scale", "0.01"], env=env, capture_output=True,
                            text=True, check=False)
        assert up.returncode == 0, up.stderr
        yield root, env


def test_lab_is_healthy_and_writes_its_env(lab):
    root, env = lab
    status = json.loads(subprocess.run([*LAB, "status"], env=env, capture_output=True,
                                       text=True, check=True).stdout)
    assert status["healthy"] and status["health"]["checks"]["database"]["users"] == 200
    text = (root / "lab" / "lab.env").read_text()
    for name in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "LAB_UPLOADS", "LAB_CONFIG",
                 "LAB_CODE", "LAB_APP_URL", "COSMIC_BACKUP_PRIMARY", "COSMIC_BACKUP_SECONDARY"):
        assert f"export {name}=" in text


def test_backup_then_restore_database_with_summary(lab):
    root, env = lab
    backup = playbook(env, "backup.yml", "-e", "kind=all")
    assert backup.returncode == 0, backup.stdout[-3000:]
    assert "BACKUP all: OK" in backup.stdout
    record = json.loads((root / "reports" / "backup-last.json").read_text())
    assert [s["step"] for s in record["steps"]] == [
        "database backup", "uploads backup", "configuration backup", "code backup"]
    assert all(s["backup_id"] for s in record["steps"])
    restore = playbook(env, "restore.yml", "-e", "kind=database", "-e", "backup=latest")
    assert restore.returncode == 0, restore.stdout[-3000:]
    steps = json.loads((root / "reports" / "restore-last.json").read_text())["steps"]
    # the lab takes a dump and a base backup; "latest" names the dump, and it is the one
    # restored, not the safety backup taken after it
    dump, base = record["steps"][0]["backup_id"].split(", ")
    assert "-database-" in dump and "-database-" in base and dump < base
    assert steps[0]["backup_id"] == dump == steps[3]["backup_id"]
    assert steps[2]["step"] == "safety backup of the current database"
    assert steps[2]["backup_id"] not in ("", steps[3]["backup_id"])


def test_a_failed_step_is_named_in_the_summary_with_what_to_do(lab):
    _, env = lab
    verify = playbook(env, "verify.yml", "-e", "backup=2001-01-01")
    assert verify.returncode == 2
    assert "VERIFY 2001-01-01: FAILED" in verify.stdout
    assert "no database backup was taken on 2001-01-01" in verify.stdout
    assert "NEXT: read the FAILED step above" in verify.stdout


def test_drill_recovers_everything_and_reports_rto_rpo(lab):
    root, env = lab
    drill = playbook(env, "dr_drill.yml", "-e", "drill_scale=0.01",
                     "-e", "drill_write_seconds=3")
    assert drill.returncode == 0, drill.stdout[-5000:]
    reports = root / "reports"
    [markdown] = reports.glob("drill-*.md")
    text = markdown.read_text()
    assert ": PASS" in text and "| restored data equals what was there" in text
    assert "DIFFERENT" not in text and "| RPO at most 60 seconds | pass |" in text
    assert text.index("| provision |") < text.index("| restore database |") \
        < text.index("| switch traffic |")
    steps = json.loads((reports / "disaster-recovery-last.json").read_text())["steps"]
    html = markdown.with_suffix(".html").read_text()
    assert "<svg" in html and html.count("<rect") == len(steps) == 9
    # the uploads came back beside the code, the configuration and the database:
    # one step started the job, the other counts from then until it ended
    started, restored, database = (next(s for s in steps if s["step"] == name) for name in (
        "start restoring the uploads", "restore the uploads", "restore the database"))
    assert restored["started"] == started["started"] < database["started"]
    assert restored["ended"] > database["started"] and restored["result"] == "ok"
    # the lab's switch saw the public endpoint answer through the balancer itself
    switched = next(s for s in steps if s["step"] == "switch traffic")
    assert switched["detail"].startswith("lab_balancer: upstream 127.0.0.1:")
    plan = (reports / "dr-plan.md").read_text()
    assert "Emergency contacts" in plan and "On-call SRE lead" in plan
    # the procedures are the playbook's own steps
    assert "Restore the database (`ansible/steps/restore_database.yml`)" in plan
    assert "Communication plan" in plan and "Role assignments" in plan


def test_a_failed_recovery_still_reports_the_uploads_restore_it_started(lab):
    root, env = lab
    uploads = filetrees.describe(root / "uploads")
    # Only the application host: its steps run in a known order (with the
    # database host too, the free strategy lets either fail first).
    recovery = playbook(env, "disaster_recovery.yml", "-e", "backup=2001-01-01",
                        "--limit", "lab-app,localhost")
    assert recovery.returncode == 2
    assert "DISASTER RECOVERY from 2001-01-01: FAILED" in recovery.stdout
    steps = json.loads((root / "reports" / "disaster-recovery-last.json").read_text())["steps"]
    result = {step["step"]: step for step in steps}
    assert result["start restoring the uploads"]["result"] == "ok"  # the job started
    assert result["restore the code"]["result"] == "FAILED"
    assert "restore the configuration" not in result  # skipped after the failure
    # the job was still waited for, and its own error reported
    assert result["restore the uploads"]["result"] == "FAILED"
    assert "no files backup was taken on 2001-01-01" in result["restore the uploads"]["detail"]
    assert filetrees.describe(root / "uploads") == uploads  # nothing was touched


@pytest.mark.parametrize("argv", [["backup.sh", "nope"], ["restore.sh", "database"],
                                  ["verify-backup.sh", "a", "b"], ["backup.sh", "-x"]])
def test_scripts_refuse_bad_arguments_with_usage(argv):
    result = subprocess.run([str(REPO / "scripts" / argv[0]), *argv[1:]], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 1 and "usage:" in result.stderr


def test_scripts_run_the_playbooks_with_exit_codes(lab):
    _, env = lab
    ok = subprocess.run([str(REPO / "scripts" / "backup.sh"), "config", "-e", "force=true"],
                        env=env, capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "BACKUP config: OK" in ok.stdout
    failed = subprocess.run([str(REPO / "scripts" / "verify-backup.sh"), "2001-01-01"],
                            env=env, capture_output=True, text=True, check=False)
    assert failed.returncode == 2 and "a step failed" in failed.stderr
