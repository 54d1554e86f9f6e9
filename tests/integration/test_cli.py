"""The host CLI as an operator runs it: exit codes, one-line errors, kills."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLI = str(REPO / "bin" / "cosmic-backup")


@pytest.fixture
def config(local_settings, tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(local_settings))
    return path


def run(config, *args, input=None, check_exit=None):
    result = subprocess.run([CLI, "--config", str(config), *args], input=input,
                            capture_output=True, timeout=300)
    if check_exit is not None:
        assert result.returncode == check_exit, result.stderr.decode()
    return result


def one_line_error(result) -> str:
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {lines}"
    assert lines[0].startswith("cosmic-backup: error: ")
    return lines[0]


def test_help_and_version():
    result = subprocess.run([CLI, "--help"], capture_output=True, text=True, check=True)
    assert "Exit codes: 0 ok, 1 warning, 2 error." in result.stdout
    for command in ("backup-stream", "restore-stream", "verify", "list", "cleanup", "key"):
        assert command in result.stdout
    version = subprocess.run([CLI, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("cosmic-backup ")


# What a start of the CLI must not load before its command runs: each command
# imports the engine modules it uses. A start costs what it imports
# (archive_command starts the CLI for every WAL segment), and backup-stream
# starts zstd before it loads the vault's own modules.
ENGINE_MODULES = ("database", "pitr", "files", "verification", "info", "pruning", "wal",
                  "pg_tools", "repository", "keys", "sealing", "message_format", "storage",
                  "monitoring")


def test_a_start_loads_only_the_engine_its_command_needs():
    package = "ansible_collections.cosmic.backup.plugins.module_utils"
    probe = (f"import sys; from {package} import cli; cli.parser().parse_args(['list']); "
             f"print(' '.join(name for name in {ENGINE_MODULES!r} "
             f"if '{package}.' + name in sys.modules))")
    result = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", probe],
                            env={**os.environ, "PYTHONPATH": str(REPO / "var" / "collections")},
                            capture_output=True, text=True, check=True)
    assert result.stdout.split() == []


def test_stream_round_trip_and_listing(config, random_data, tmp_path):
    result = run(config, "backup-stream", "database", "--name", "dump", "--json",
                 input=random_data, check_exit=0)
    backup_id = json.loads(result.stdout)["backup_id"]
    listing = json.loads(run(config, "list", "--json", check_exit=0).stdout)
    assert [row["id"] for row in listing] == [backup_id]
    restored = run(config, "restore-stream", "latest", "--kind", "database", "--name", "dump",
                   check_exit=0).stdout
    assert restored == random_data
    out = tmp_path / "restored.bin"
    run(config, "restore-stream", backup_id, "--name", "dump", "--output", str(out), check_exit=0)
    assert out.read_bytes() == random_data
    assert run(config, "verify", "latest", check_exit=0).stdout.count(b"ok ") == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["restore-stream", "yesterday", "--name", "dump"], "unknown selector 'yesterday'"),
        (["restore-stream", "2020-01-01", "--name", "dump"], "no backup was taken on 2020-01-01"),
        (["restore-stream", "latest", "--name", "nope"], "has no object 'nope'"),
        (["backup-stream", "photos", "--name", "x"], "unknown backup kind 'photos'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(config, args, message):
    run(config, "backup-stream", "database", "--name", "dump", input=b"data", check_exit=0)
    before = sorted(p for p in Path(config).parent.rglob("*") if p.is_file() and
                    "audit" not in p.name)
    result = run(config, *args, input=b"", check_exit=2)
    assert message in one_line_error(result)
    after = sorted(p for p in Path(config).parent.rglob("*") if p.is_file() and
                   "audit" not in p.name)
    assert before == after


def test_missing_settings_file(tmp_path):
    result = run(tmp_path / "absent.yml", "list", check_exit=2)
    assert "does not exist: pass --config" in one_line_error(result)


def test_wrong_key_is_exit_2_and_one_line(config, local_settings):
    run(config, "backup-stream", "files", "--name", "data", input=b"secret rows", check_exit=0)
    os.unlink(local_settings["keys"]["local_key_file"])
    run(config, "key", "init", check_exit=0)  # a new, different key
    result = run(config, "restore-stream", "latest", "--name", "data", check_exit=2)
    assert "none of this host's keys" in one_line_error(result)
    assert result.stdout == b""


def test_unreachable_primary_is_exit_2(local_settings, tmp_path):
    local_settings["repositories"][0] = {
        "name": "primary", "url": "s3://cosmic-absent/x", "endpoint_url": "http://127.0.0.1:9"}
    config = tmp_path / "unreachable.yml"
    config.write_text(yaml.safe_dump(local_settings))
    result = run(config, "backup-stream", "files", "--name", "data", input=b"x", check_exit=2)
    assert "is not reachable" in one_line_error(result)
    assert not Path(local_settings["repositories"][1]["url"]).exists()


def test_secondary_failure_is_exit_1(local_settings, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    local_settings["repositories"][1]["url"] = str(blocker / "repo")
    config = tmp_path / "degraded.yml"
    config.write_text(yaml.safe_dump(local_settings))
    result = run(config, "backup-stream", "files", "--name", "data", input=b"x", check_exit=1)
    assert b"warning: the secondary copy" in result.stderr
    assert run(config, "restore-stream", "latest", "--name", "data", check_exit=0).stdout == b"x"


def test_damaged_copy_fails_verify_naming_it_and_restore_falls_back(config, local_settings):
    run(config, "backup-stream", "files", "--name", "data", input=os.urandom(3 << 20),
        check_exit=0)
    victim = next(Path(local_settings["repositories"][0]["url"]).rglob("data/data"))
    damaged = bytearray(victim.read_bytes())
    damaged[len(damaged) // 2] ^= 0x80
    victim.write_bytes(bytes(damaged))
    result = run(config, "verify", "latest", check_exit=2)
    assert "data in primary is damaged" in result.stderr.decode()
    restored = run(config, "restore-stream", "latest", "--name", "data", check_exit=1)
    assert b"fell back from primary" in restored.stderr
    assert len(restored.stdout) == 3 << 20


def test_killed_backup_leaves_nothing_selectable(config, local_settings):
    """SIGKILL in the middle of a large backup: no backup appears, the next run
    works, and cleanup removes the leftovers."""
    process = subprocess.Popen([CLI, "--config", str(config), "backup-stream", "database",
                                "--name", "dump"], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    block = os.urandom(1 << 20)
    primary = Path(local_settings["repositories"][0]["url"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        process.stdin.write(block)
        stored = sum(p.stat().st_size for p in primary.rglob("*") if p.is_file())
        if stored > 20 << 20:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert any(".partial-" in p.name for p in primary.rglob("*"))
    assert json.loads(run(config, "list", "--json", check_exit=0).stdout) == []
    assert "there is no database backup yet" in one_line_error(
        run(config, "restore-stream", "latest", "--kind", "database", "--name", "dump",
            check_exit=2))

    data = os.urandom(1 << 20)
    run(config, "backup-stream", "database", "--name", "dump", input=data, check_exit=0)
    assert run(config, "restore-stream", "latest", "--kind", "database", "--name", "dump",
               check_exit=0).stdout == data
    assert b"0 leftover" in run(config, "cleanup", check_exit=0).stdout  # too young
    run(config, "cleanup", "--older-than", "0", check_exit=0)
    assert not any(".partial-" in p.name for p in primary.rglob("*"))
    backup_folders = list((primary / "backups" / "database").iterdir())
    assert [(folder / "manifest").exists() for folder in backup_folders] == [True]
    assert len(json.loads(run(config, "list", "--json", check_exit=0).stdout)) == 1


def test_key_export_and_import(config, local_settings, random_data):
    run(config, "backup-stream", "files", "--name", "data", input=random_data, check_exit=0)
    exported = run(config, "key", "export", check_exit=0).stdout
    key_file = Path(local_settings["keys"]["local_key_file"])
    key_file.unlink()
    assert "key import" in one_line_error(
        run(config, "restore-stream", "latest", "--name", "data", check_exit=2))
    bad = exported.replace(exported.splitlines()[-1][:4], b"AAAA")
    assert "does not check out" in one_line_error(run(config, "key", "import", input=bad,
                                                      check_exit=2))
    assert not key_file.exists()
    run(config, "key", "import", input=exported, check_exit=0)
    assert run(config, "restore-stream", "latest", "--name", "data",
               check_exit=0).stdout == random_data


def test_no_secret_reaches_any_output_or_log(config, local_settings, tmp_path):
    """The key, its recovery code and the plaintext never appear in logs or output."""
    import base64

    from tests.engine import keys

    key = keys.LocalKey.load(local_settings["keys"]["local_key_file"])
    plaintext = b"password=Tr0ub4dor&3-very-secret " * 100
    outputs = [
        run(config, "backup-stream", "config", "--name", "env", "--meta", "host=app1",
            input=plaintext, check_exit=0),
        run(config, "list", check_exit=0),
        run(config, "verify", "latest", check_exit=0),
        run(config, "show", "latest", check_exit=0),
    ]
    secrets_ = [key.key, key.key.hex().encode(), base64.b64encode(key.key),
                key.recovery_code().encode(), b"Tr0ub4dor"]
    texts = [o.stdout + o.stderr for o in outputs]
    texts.append(Path(local_settings["audit_log"]).read_bytes())
    for repository in local_settings["repositories"]:
        texts += [p.read_bytes() for p in Path(repository["url"]).rglob("*") if p.is_file()]
    for text in texts:
        for secret in secrets_:
            assert secret not in text


def test_audit_trail_records_who_what_where(config, local_settings):
    env = dict(os.environ, COSMIC_BACKUP_ACTOR="alice@example.invalid")
    subprocess.run([CLI, "--config", str(config), "backup-stream", "files", "--name", "d"],
                   input=b"x", env=env, check=True, capture_output=True)
    subprocess.run([CLI, "--config", str(config), "restore-stream", "latest", "--name", "d"],
                   env=env, check=True, capture_output=True)
    subprocess.run([CLI, "--config", str(config), "verify", "latest"], env=env, check=True,
                   capture_output=True)
    events = [json.loads(line) for line in
              Path(local_settings["audit_log"]).read_text().splitlines()]
    actions = {(e["action"], e["repository"]) for e in events}
    assert {("write", "primary"), ("write", "secondary"), ("read", "primary"),
            ("verify", "primary"), ("verify", "secondary")} <= actions
    for event in events:
        assert event["actor"] == "alice@example.invalid"
        assert {"time", "host", "backup_id", "result"} <= event.keys()
    assert len({e["backup_id"] for e in events}) == 1
