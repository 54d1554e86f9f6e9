"""The embedded lab for tests: a private lab directory, lab.py and the playbooks."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAB = [sys.executable, str(REPO / "tools" / "lab" / "lab.py")]


@contextlib.contextmanager
def private_lab(prefix: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """A directory for one lab and the environment that points lab.py and Ansible at it.

    Not under pytest's base temp: another pytest session on this machine makes
    /tmp/pytest-of-USER private again, and PostgreSQL (the postgres user) has
    to reach its data directory by its full path. The lab is purged afterwards.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o711)
    env = {**os.environ, "COSMIC_LAB_ROOT": str(root / "lab"),
           "COSMIC_REPORTS_DIR": str(root / "reports"),
           "ANSIBLE_HOME": str(root / "ansible-home"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "0"}
    try:
        yield root, env
    finally:
        lab_command(env, "down", "--purge")
        shutil.rmtree(root, ignore_errors=True)


def lab_command(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LAB, *argv], env=env, capture_output=True, text=True, check=False)


def playbook(env: dict[str, str], name: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), name, *extra],
                          cwd=REPO / "ansible", env=env, capture_output=True, text=True,
                          check=False, timeout=600)
