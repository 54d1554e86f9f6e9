"""Issue 5's drill row, without a lab: its commands and its reset's copy.
(test_bench.py runs the row for real, with every other row.)"""

from __future__ import annotations

import os

from bench import rows_drill
from bench.harness import Context

VALUES = {"work": "/bench/work/drill-recovery", "measure": "/usr/bin/time -f %M -o rss"}


def test_both_sides_work_on_the_same_lab_with_the_runners_values_only():
    ours = rows_drill.RECOVERY.format(**VALUES)
    anchor = rows_drill.RESTORES.format(**VALUES)

    assert "disaster_recovery.yml -e provision=true" in ours
    assert "COSMIC_LAB_ROOT=/bench/work/drill-recovery/lab " in ours
    assert ours.count("/usr/bin/time") == 1 and "/usr/bin/time" not in anchor
    # the anchor provisions, stops and starts the server with the playbook's own commands
    for step in ("--root /bench/work/drill-recovery/lab provision-db --name db2",
                 "lab db stop", "lab db start", "drill_restores.py",
                 "files restore latest --label uploads "
                 "--state-dir /bench/work/drill-recovery/lab/state"):
        assert step in anchor
    assert anchor.index("provision-db") < anchor.index("db stop") \
        < anchor.index("drill_restores.py") < anchor.index("db start")


def test_the_copy_links_the_repositories_and_leaves_run_alone(tmp_path):
    lab = tmp_path / "lab"
    for path in ("repositories/primary/object", "state/cache", "run/app1.pid", "lab.json"):
        (lab / path).parent.mkdir(parents=True, exist_ok=True)
        (lab / path).write_text(path)
    copy = tmp_path / "after-disaster"
    copy.mkdir()

    rows_drill._copy_entries(str(lab), str(copy))

    assert sorted(os.listdir(copy)) == ["lab.json", "repositories", "state"]
    linked = os.stat(copy / "repositories/primary/object")
    assert linked.st_ino == os.stat(lab / "repositories/primary/object").st_ino
    assert os.stat(copy / "state/cache").st_ino != os.stat(lab / "state/cache").st_ino


def test_reset_puts_back_what_the_disaster_left(tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "work"
    (home / "lab" / "run").mkdir(parents=True)
    (home / "after-disaster" / "repositories").mkdir(parents=True)
    (home / "after-disaster" / "lab.json").write_text("after the disaster")
    (home / "upstream").write_text("127.0.0.1:1\n")
    (home / "lab" / "run" / "upstream").write_text("127.0.0.1:2\n")
    (home / "lab" / "releases" / "20260101T000000").mkdir(parents=True)
    (home / "lab" / "lab.json").write_text("after a recovery")
    work.mkdir()
    os.symlink(home / "lab", work / "lab")
    commands = []
    monkeypatch.setattr(rows_drill, "_run", lambda context, template: commands.append(template))
    monkeypatch.setattr(os, "sync", lambda: None)

    rows_drill.back_to_the_disaster(Context("drill-recovery", 0.01, str(work), {}, {}), "ours")

    assert sorted(os.listdir(home / "lab")) == ["lab.json", "repositories", "run"]
    assert (home / "lab" / "lab.json").read_text() == "after the disaster"
    assert (home / "lab" / "run" / "upstream").read_text() == "127.0.0.1:1\n"
    assert [command.split()[-3:] for command in commands] == [["stop", "--name", "app2"]]
