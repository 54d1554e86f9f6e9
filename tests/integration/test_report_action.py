"""cosmic.backup.report, the action that writes the playbooks' reports on the
controller, run for real by ``ansible``."""

from __future__ import annotations

import os
import stat
import subprocess

from tests.integration.ansible_modules import BIN, environment, run

REPORT = "# DR plan\n\nRestore the database (`ansible/steps/restore_database.yml`)\n"


def test_writes_the_report_whole_and_creates_its_directory(tmp_path):
    dest = tmp_path / "reports" / "nested" / "dr-plan.md"
    rc, result, output = run(tmp_path, "report", {"dest": str(dest), "content": REPORT})
    assert rc == 0 and result["changed"] is True, output
    assert dest.read_text() == REPORT
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert [p.name for p in dest.parent.iterdir()] == ["dr-plan.md"]  # no temporary left

    rc, result, output = run(tmp_path, "report", {"dest": str(dest), "content": REPORT})
    assert rc == 0 and result["changed"] is False, output


def test_mode_as_octal_text_or_as_yaml_int(tmp_path):
    for mode, expected in (("0600", 0o600), (0o640, 0o640)):  # unquoted 0640 in YAML: 416
        dest = tmp_path / f"report-{expected:o}"
        rc, _, output = run(tmp_path, "report",
                            {"dest": str(dest), "content": "x", "mode": mode})
        assert rc == 0, output
        assert stat.S_IMODE(dest.stat().st_mode) == expected


def test_check_mode_writes_nothing(tmp_path):
    dest = tmp_path / "summary.json"
    rc, result, output = run(tmp_path, "report", {"dest": str(dest), "content": "{}"},
                             check=True)
    assert rc == 0 and result["changed"] is True, output
    assert not dest.exists()


def test_bad_input_is_refused_and_the_old_report_kept(tmp_path):
    dest = tmp_path / "summary.json"
    dest.write_text("the previous run's record\n")
    rc, result, output = run(tmp_path, "report",
                             {"dest": str(dest), "content": "new", "mode": "rw-r--r--"})
    assert rc != 0 and "is not an octal mode" in result["msg"], output
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    rc, result, output = run(tmp_path, "report",
                             {"dest": str(blocked / "summary.json"), "content": "new"})
    assert rc != 0 and "cannot write the report" in result["msg"], output
    assert dest.read_text() == "the previous run's record\n"
    left = set(os.listdir(tmp_path)) - {"ansible-home", "ansible-tmp"}
    assert left == {"a-file", "summary.json"}  # no temporary file beside the report


def test_ansible_doc_renders(tmp_path):
    result = subprocess.run([str(BIN / "ansible-doc"), "-t", "module", "cosmic.backup.report"],
                            capture_output=True, text=True, env=environment(tmp_path),
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "on the controller" in result.stdout
