"""Configuration snapshots: syntax checked before storing and after restoring, secrets
never in a message."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.engine import errors
from tests.integration.filetrees import T0, write

from ansible_collections.cosmic.backup.plugins.module_utils import (  # isort: skip
    config_files,
    files,
    verification,
)

SECRET = "hunter2-s3cr3t"
BROKEN = {
    "app.yaml": f"db:\n  password: {SECRET}\n  - broken: [\n",
    "app.json": f'{{"password": "{SECRET}",, }}',
    "app.toml": f'password = "{SECRET}"\n[[broken\n',
    "app.ini": f"password = {SECRET}\n[section]\n",
    ".env": f"PASSWORD={SECRET}\nthis line is {SECRET} not an assignment\n",
}
GOOD = {
    "app.yaml": f"db:\n  password: {SECRET}\n",
    "app.json": f'{{"password": "{SECRET}"}}',
    "app.toml": f'password = "{SECRET}"\n',
    "app.ini": f"[db]\npassword = {SECRET}\n",
    ".env": f'PASSWORD={SECRET}\nexport NAME="two\nlines"\n# comment\n',
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_format_is_checked_and_the_message_keeps_the_secret(tmp_path, name):
    path = tmp_path / name
    path.write_text(BROKEN[name])
    fmt = config_files.detect_format(str(path))
    problem = config_files.check_syntax(str(path), fmt)
    assert problem and "line" in problem and SECRET not in problem
    path.write_text(GOOD[name])
    assert config_files.check_syntax(str(path), fmt) is None


def test_sshd_config_is_checked_by_sshd_when_installed(tmp_path):
    if not config_files.installed_checkers()["sshd"]:
        pytest.skip("sshd is not installed")
    path = tmp_path / "sshd_config"
    path.write_text(f"PermitRootLogin no\nNoSuchOption {SECRET}\n")
    problem = config_files.check_syntax(str(path), config_files.detect_format(str(path)))
    assert problem is not None and SECRET not in problem


@pytest.fixture
def etc(tmp_path):
    root = tmp_path / "etc" / "app"
    for name, text in GOOD.items():
        write(str(root / name), text.encode(), mode=0o600)
    return root


def test_backup_on_change_only_and_changes_named_without_content(local_vault, etc, tmp_path):
    state = str(tmp_path / "state")
    first = config_files.backup_config(local_vault, [str(etc / "*"), str(etc / ".env")],
                                       state_dir=state)
    assert first["changed"] and first["formats"][str(etc / ".env")] == "dotenv"
    again = config_files.backup_config(local_vault, [str(etc / "*"), str(etc / ".env")],
                                       state_dir=state)
    assert not again["changed"] and again["backup_id"] is None
    write(str(etc / "app.json"), b'{"password": "new"}', mtime_ns=T0 + 1, mode=0o600)
    third = config_files.backup_config(local_vault, [str(etc / "*"), str(etc / ".env")],
                                       state_dir=state)
    assert third["changed"] and third["changed_files"] == [str(etc / "app.json")]
    assert SECRET not in repr(third) and "new" not in repr(third["changed_files"])


def test_broken_configuration_is_not_stored_unless_asked(local_vault, etc, tmp_path):
    (etc / "app.yaml").write_text(BROKEN["app.yaml"])
    with pytest.raises(errors.ConfigError, match=r"app\.yaml: YAML syntax error at line") as raised:
        config_files.backup_config(local_vault, [str(etc)], state_dir=str(tmp_path / "s"))
    assert SECRET not in str(raised.value) and local_vault.list() == []
    kept = config_files.backup_config(local_vault, [str(etc)], state_dir=str(tmp_path / "s"),
                                      on_syntax_error="warn")
    assert kept["backup_id"] and "YAML syntax error" in kept["warnings"][0]


def test_restore_checks_syntax_before_replacing(local_vault, etc, tmp_path):
    state = str(tmp_path / "state")
    config_files.backup_config(local_vault, [str(etc)], state_dir=state)
    (etc / "app.toml").write_text('password = "changed by hand"\n')
    result = config_files.restore_config(local_vault, "latest", state_dir=state)
    assert (etc / "app.toml").read_text() == GOOD["app.toml"]
    assert result["formats"][str(etc / "app.toml")] == "toml" and result["previous"]
    # a snapshot whose files no longer parse (taken with warn) is refused at restore
    (etc / "app.json").write_text("{not json")
    config_files.backup_config(local_vault, [str(etc)], state_dir=state, on_syntax_error="warn")
    shutil.copy(etc / "app.ini", tmp_path / "before.ini")
    with pytest.raises(errors.ConfigError, match="nothing was replaced"):
        config_files.restore_config(local_vault, "latest", state_dir=state,
                                    safety_backup=False)
    assert not [name for name in os.listdir(etc.parent) if files.STAGING_MARK in name]


def test_verification_checks_checksums_and_syntax(local_vault, etc, tmp_path):
    config_files.backup_config(local_vault, [str(etc)], state_dir=str(tmp_path / "s"))
    result = verification.verify_backup(local_vault, local_vault.select("latest"), record=False)
    assert result.ok, result.summary()
    assert "configuration syntax" in [check.name for check in result.checks]
