"""The postgresql_archiving role through its Molecule scenario (molecule/postgresql_archiving):
prepare starts a throwaway PostgreSQL 15 cluster on 127.0.0.1, converge and idempotence
apply the role to it, verify asks the running server for its settings and follows a
switched WAL segment into both repositories and back, destroy stops and removes it all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ansible_collections.cosmic.backup.plugins.module_utils.postgres_cluster import (
    TemporaryCluster,
    postmaster_pid,
)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STEPS = ("prepare", "converge", "idempotence", "verify", "destroy")


def processes_under(root: Path) -> list[str]:
    """Command lines that name the root: a server left running (postgres -D ROOT/...)."""
    result = subprocess.run(["pgrep", "-af", str(root)], capture_output=True, text=True,
                            check=False)
    return result.stdout.splitlines()


def stop_leftovers(root: Path) -> None:
    """What destroy did not stop, when the scenario died before it (a timeout)."""
    described = root / "host.json"
    if described.exists():
        host = json.loads(described.read_text())
        if postmaster_pid(host["data_dir"]) is not None:
            TemporaryCluster(os.path.dirname(host["data_dir"]), port=host["port"],
                             bindir=host["bindir"]).stop("immediate")
    shutil.rmtree(root, ignore_errors=True)


def test_scenario_archives_on_a_real_server_and_leaves_nothing_behind(tmp_path):
    root = tmp_path / "root"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "COSMIC_ARCHIVING_ROOT": str(root), "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1",
           "ANSIBLE_HOME": str(tmp_path / "ansible-home")}
    try:
        result = subprocess.run([str(BIN / "molecule"), "test", "-s", "postgresql_archiving"],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                                check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        for step in STEPS:  # each step ran: none was dropped from the test sequence
            assert f"postgresql_archiving > {step}: Executed: Successful" in output, output[-3000:]
        assert not root.exists(), "destroy left the temporary root"
        assert not processes_under(root), processes_under(root)
    finally:
        stop_leftovers(root)
