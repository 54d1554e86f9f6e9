"""files_backup, files_restore, config_backup, config_restore and code_backup, run for
real by ``ansible`` against localhost."""

from __future__ import annotations

import subprocess

import pytest

from tests.integration.ansible_modules import BIN, environment, module
from tests.integration.filetrees import describe, make_tree, write

SECRET = "env-s3cret-value-91"
MODULES = ("files_backup", "files_restore", "config_backup", "config_restore", "code_backup",
           "code_restore")


@pytest.mark.parametrize("name", MODULES)
def test_documentation_renders(name, tmp_path):
    result = subprocess.run([str(BIN / "ansible-doc"), "-t", "module", f"cosmic.backup.{name}"],
                            capture_output=True, text=True, env=environment(tmp_path),
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "EXAMPLES" in result.stdout and "ERROR" not in result.stderr


def test_files_modules_back_up_and_restore_in_place(local_settings, tmp_path):
    source = tmp_path / "uploads"
    make_tree(source, files=20, large=False)
    state = str(tmp_path / "state")
    rc, dry, _ = module(tmp_path, local_settings, "files_backup", check=True,
                        paths=[str(source)], label="uploads", state_dir=state)
    assert rc == 0 and dry["backup_id"] is None and dry["read_files"] > 20
    rc, first, _ = module(tmp_path, local_settings, "files_backup", paths=[str(source)],
                          label="uploads", state_dir=state)
    assert rc == 0 and first["changed"] and first["backup_id"]
    before = describe(source)
    write(str(source / "d1" / "sub1" / "f001.bin"), b"damaged by a bad deploy")
    rc, plan, _ = module(tmp_path, local_settings, "files_restore", check=True,
                         label="uploads", state_dir=state)
    assert rc == 0 and plan["targets"] == [str(source)] and plan["previous"] == []
    assert describe(source) != before
    rc, restored, _ = module(tmp_path, local_settings, "files_restore", label="uploads",
                             state_dir=state)
    assert rc == 0 and restored["safety_backup"] and len(restored["previous"]) == 1
    assert describe(source) == before
    rc, failed, _ = module(tmp_path, local_settings, "files_restore", label="logs",
                           state_dir=state)
    assert rc != 0 and "no files snapshot labelled logs" in failed["msg"]


def test_config_and_code_modules_never_print_secrets(local_settings, tmp_path):
    etc = tmp_path / "etc"
    write(str(etc / "app.yml"), f"password: {SECRET}\n".encode())
    write(str(etc / "app.env"), f"TOKEN={SECRET}\n".encode())
    state = str(tmp_path / "state")
    rc, stored, out1 = module(tmp_path, local_settings, "config_backup",
                              paths=[str(etc / "*")], state_dir=state)
    assert rc == 0 and stored["changed"] and stored["formats"][str(etc / "app.env")] == "dotenv"
    rc, quiet, _ = module(tmp_path, local_settings, "config_backup", paths=[str(etc / "*")],
                          state_dir=state)
    assert rc == 0 and not quiet["changed"]
    (etc / "app.yml").write_text(f"password: {SECRET}\n  broken: [\n")
    rc, refused, out2 = module(tmp_path, local_settings, "config_backup",
                               paths=[str(etc / "*")], state_dir=state)
    assert rc != 0 and "YAML syntax error at line" in refused["msg"]
    rc, back, out3 = module(tmp_path, local_settings, "config_restore", state_dir=state)
    assert rc == 0 and back["formats"][str(etc / "app.yml")] == "yaml"
    assert (etc / "app.yml").read_text() == f"password: {SECRET}\n"
    repository = tmp_path / "git"
    repository.mkdir()
    subprocess.run(["git", "init", "-q", str(repository)], check=True)
    subprocess.run(["git", "-C", str(repository), "-c", "user.name=t", "-c",
                    "user.email=t@example.org", "commit", "-q", "--allow-empty", "-m", "x"],
                   check=True)
    rc, code, out4 = module(tmp_path, local_settings, "code_backup",
                            repository=str(repository), release="v9", env_file=str(etc / "app.env"),
                            environment={"API_KEY": SECRET}, state_dir=state)
    assert rc == 0 and code["environment"] == ["API_KEY", "TOKEN"] and code["release"] == "v9"
    restored = tmp_path / "restored-code"
    rc, back, out5 = module(tmp_path, local_settings, "code_restore", target=str(restored))
    assert rc == 0 and back["backup_id"] == code["backup_id"] and back["release"] == "v9"
    head = subprocess.run(["git", "-C", back["repository"], "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert head == code["commit"]
    assert back["environment"]["names"] == ["API_KEY", "TOKEN"]
    assert SECRET in (restored / "environment.env").read_text()
    assert oct((restored / "environment.env").stat().st_mode & 0o777) == "0o600"
    rc, refused, _ = module(tmp_path, local_settings, "code_restore", target=str(restored))
    assert rc != 0 and "is not empty" in refused["msg"]
    for output in (out1, out2, out3, out4, out5):
        assert SECRET not in output
