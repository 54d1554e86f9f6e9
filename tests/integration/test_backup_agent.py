"""The backup_agent role through its Molecule scenario (molecule/backup_agent: converge
into a temporary root, idempotence, verify), then the rendered units run for real:
every ExecStart is a command line the CLI accepts, and the uploads, configuration and
verification jobs, started exactly as systemd would start them, store and check backups."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine import cli

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
JOBS = ("database", "base", "wal", "files", "config", "verify", "restore-test", "freshness",
        "prune")


def exec_start(unit: Path) -> list[list[str]]:
    """The command lines of a service's ExecStart= lines, as systemd splits them."""
    commands = []
    for line in unit.read_text().splitlines():
        if line.startswith("ExecStart="):
            words = shlex.split(line.removeprefix("ExecStart="))
            # systemd's specifiers and variables: %% and $$ stand for % and $
            commands.append([word.replace("%%", "%").replace("$$", "$") for word in words])
    return commands


def environment(unit: Path) -> dict[str, str]:
    """Environment= lines: specifiers expanded (%% is %), variables not."""
    pairs = (shlex.split(line.removeprefix("Environment="))[0].replace("%%", "%").split("=", 1)
             for line in unit.read_text().splitlines() if line.startswith("Environment="))
    return dict(pairs)


@pytest.fixture(scope="module")
def agent_root(tmp_path_factory):
    """The scenario's temporary root, kept after `molecule test` for the checks below."""
    root = tmp_path_factory.mktemp("agent") / "root"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "COSMIC_AGENT_ROOT": str(root), "COSMIC_AGENT_KEEP": "1", "ANSIBLE_NOCOLOR": "1",
           "NO_COLOR": "1", "ANSIBLE_HOME": str(root.parent / "ansible-home")}
    result = subprocess.run([str(BIN / "molecule"), "test", "-s", "backup_agent"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    return root


def run_unit(root: Path, job: str) -> list[subprocess.CompletedProcess]:
    """Run a service's ExecStart lines in order, with its Environment=, as systemd does."""
    unit = root / "etc" / "systemd" / "system" / f"cosmic-backup-{job}.service"
    env = {**os.environ, **environment(unit)}
    results = []
    for argv in exec_start(unit):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                                check=False)
        assert result.returncode == 0, f"{argv}: {result.stderr}"
        results.append(result)
    return results


def test_every_exec_start_is_a_command_the_cli_accepts(agent_root):
    units = agent_root / "etc" / "systemd" / "system"
    launcher = str(agent_root / "usr" / "local" / "bin" / "cosmic-backup")
    for job in JOBS:
        commands = exec_start(units / f"cosmic-backup-{job}.service")
        assert commands, f"{job}: no ExecStart"
        for argv in commands:
            assert argv[0] == launcher
            args = cli.parser().parse_args(argv[1:])  # exits (SystemExit) on a bad line
            assert args.handler is not None, argv
    assert re.search(r"(?m)^ExecStart=.* wal-drain$",
                     (units / "cosmic-backup-wal.service").read_text())
    # quoting: what systemd passes is exactly what the inventory said
    [files] = exec_start(units / "cosmic-backup-files.service")
    assert files[-4:] == ["--exclude=*.tmp", "--exclude=cache-100%", "--exclude=$RECYCLE.BIN",
                          str(agent_root / "srv" / "cosmic" / "uploads")]


def test_installed_launcher_runs(agent_root):
    launcher = agent_root / "usr" / "local" / "bin" / "cosmic-backup"
    result = subprocess.run([str(launcher), "--version"], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == f"cosmic-backup {cli.VERSION}"


def test_units_back_up_and_verify_for_real(agent_root):
    config = str(agent_root / "etc" / "cosmic-backup" / "config.yml")
    launcher = str(agent_root / "usr" / "local" / "bin" / "cosmic-backup")

    def listing(kind: str) -> list[dict]:
        out = subprocess.run([launcher, "--config", config, "list", "--kind", kind, "--json"],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)

    [backup] = run_unit(agent_root, "files")
    assert ": 2 files," in backup.stdout, backup.stdout  # partial.tmp is excluded
    [uploads] = listing("files")
    assert set(uploads["copies"]) == {"primary", "secondary"}
    manifest = json.loads(subprocess.run([launcher, "--config", config, "show", uploads["id"]],
                                         capture_output=True, text=True, check=True).stdout)
    assert manifest["meta"]["label"] == "uploads"
    assert manifest["meta"]["paths"] == [str(agent_root / "srv" / "cosmic" / "uploads")]

    run_unit(agent_root, "config")
    run_unit(agent_root, "config")  # unchanged: the path unit may fire often, nothing stored
    assert len(listing("config")) == 1

    [verified] = run_unit(agent_root, "verify")
    assert verified.stdout.count("ok ") >= 4, verified.stdout  # 2 backups x 2 copies


def apply_role(tmp_path: Path, variables: dict) -> subprocess.CompletedProcess:
    playbook = tmp_path / "agent.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False,
                                     "vars": variables,
                                     "roles": ["cosmic.backup.backup_agent"]}]))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO / "var" / "collections"),
           "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
    return subprocess.run([str(BIN / "ansible-playbook"), "-c", "local", "-i", "localhost,",
                           "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


def test_bad_input_fails_before_anything_changes(tmp_path):
    result = apply_role(tmp_path, {"backup_agent_restore_test_kinds": ["database", "logs"],
                                   "backup_agent_systemd_dir": str(tmp_path / "units")})
    assert result.returncode == 2, result.stdout[-2000:]
    assert "backup_agent_restore_test_kinds" in result.stdout
    assert "logs" in result.stdout
    assert not (tmp_path / "units").exists()


def test_a_calendar_systemd_cannot_parse_fails_before_any_unit_is_written(tmp_path):
    result = apply_role(tmp_path, {
        "backup_agent_verify_on_calendar": "every sunday",
        "backup_agent_install_packages": False, "backup_agent_install_cli": False,
        "backup_agent_write_config": False,
        "backup_agent_state_dir": str(tmp_path / "state"),
        "backup_agent_wal_spool_dir": str(tmp_path / "spool"),
        "backup_agent_database_user": "root", "backup_agent_wal_user": "root",
        "backup_agent_systemd_dir": str(tmp_path / "units")})
    assert result.returncode == 2, result.stdout[-2000:]
    assert "every sunday" in result.stdout and "backup_agent_verify_on_calendar" in result.stdout
    assert not (tmp_path / "units").exists()
