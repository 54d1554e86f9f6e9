"""Textfile metrics: the exposition format node_exporter reads, written atomically."""

from __future__ import annotations

import os
import re
import stat

from ansible_collections.cosmic.backup.plugins.module_utils import metrics

LINE = re.compile(r'^(# (HELP|TYPE) cosmic_backup_\w+ .+'
                  r'|cosmic_backup_\w+(\{(\w+="([^"\\]|\\.)*",?)*\})? (-?[0-9.e+]+|NaN))$')


def test_render_groups_samples_and_escapes_labels():
    text = metrics.render([
        metrics.Sample("backups", 3, {"kind": "database", "repository": "primary"}),
        metrics.Sample("backups", 2, {"kind": "database", "repository": "secondary"}),
        metrics.Sample("filesystem_free_bytes", 1.5e12, {"path": '/odd "dir"\\x\n'}),
    ])
    lines = text.splitlines()
    assert lines[:4] == [
        "# HELP cosmic_backup_backups Complete backups in the repository.",
        "# TYPE cosmic_backup_backups gauge",
        'cosmic_backup_backups{kind="database",repository="primary"} 3',
        'cosmic_backup_backups{kind="database",repository="secondary"} 2',
    ]
    assert lines[-1] == (r'cosmic_backup_filesystem_free_bytes{path="/odd \"dir\"\\x\n"} '
                         "1500000000000")
    assert text.endswith("\n")
    assert all(LINE.match(line) for line in lines), text


def test_write_is_atomic_readable_by_others_and_leaves_no_temp(tmp_path):
    path = metrics.write_textfile(str(tmp_path), "cosmic_backup_x.prom",
                                  [metrics.Sample("last_run_success", 1, {"kind": "files"})])
    assert os.listdir(tmp_path) == ["cosmic_backup_x.prom"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert metrics.read_textfile(path)[0].labels == {"kind": "files"}


def test_a_failed_run_keeps_the_time_of_the_last_success(tmp_path):
    directory = str(tmp_path)
    metrics.record_run(directory, "backup", "database", ok=True, finished=1000.0, duration=12.5,
                       byte_count=4096)
    path = metrics.record_run(directory, "backup", "database", ok=False, finished=2000.0,
                              duration=3.0)
    values = {s.name: s.value for s in metrics.read_textfile(path)}
    assert values == {"last_run_timestamp_seconds": 2000.0, "last_run_success": 0.0,
                      "last_run_duration_seconds": 3.0, "last_success_timestamp_seconds": 1000.0}
    assert os.path.basename(path) == "cosmic_backup_backup_database.prom"
    first = metrics.record_run(directory, "verify", "files", ok=False, finished=5.0, duration=1)
    assert {s.name: s.value for s in metrics.read_textfile(first)}[
        "last_success_timestamp_seconds"] == 0.0


def test_unwritable_directory_says_what_to_fix(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    try:
        metrics.write_textfile(str(blocker / "dir"), "a.prom", [])
    except metrics.BackupError as error:
        assert "textfile directory" in str(error)
    else:
        raise AssertionError("expected a BackupError")
