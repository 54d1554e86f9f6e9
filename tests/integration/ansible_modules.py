"""Running the collection's modules for real, with `ansible` against localhost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def environment(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO / "var" / "collections"),
            "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_DEPRECATION_WARNINGS": "0", "ANSIBLE_LOCALHOST_WARNING": "0"}


def module(tmp_path, settings, name, check=False, **args):
    """Run one vault module; returns (rc, result as JSON, all output)."""
    arguments = {"repositories": settings["repositories"], "keys": settings["keys"], **args}
    return run(tmp_path, name, arguments, check=check)


def run(tmp_path, name, arguments, check=False):
    """Run one module with these arguments; returns (rc, result as JSON, all output)."""
    command = [str(BIN / "ansible"), "localhost", "-o", "-m", f"cosmic.backup.{name}",
               "-a", json.dumps(arguments)] + (["--check"] if check else [])
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env=environment(tmp_path), check=False)
    output = result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("localhost"))
    return result.returncode, json.loads(line.split("=>", 1)[1]), output
