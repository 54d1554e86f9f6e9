"""Code backups: a verified git bundle, deployment files and secret environment values."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.integration.filetrees import write

from ansible_collections.cosmic.backup.plugins.module_utils import (  # isort: skip
    code,
    verification,
)

SECRET = "pa55-w0rd-value"


def run(*args, cwd):
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def app(tmp_path):
    repo = tmp_path / "app"
    repo.mkdir()
    run("git", "init", "-q", "-b", "main", cwd=repo)
    for number in range(3):
        (repo / "app.py").write_text(f"print({number})\n")
        run("git", "add", ".", cwd=repo)
        run("git", "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm",
            f"change {number}", cwd=repo)
    run("git", "tag", "v1.2.0", cwd=repo)
    run("git", "branch", "feature", cwd=repo)
    deploy = tmp_path / "deploy"
    write(str(deploy / "docker-compose.yml"), b"services: {web: {image: app}}\n")
    env = tmp_path / "app.env"
    env.write_text(f'DATABASE_URL="postgres://app:{SECRET}@db/app"\nexport DEBUG=0\n')
    return repo, deploy, env


def test_code_backup_and_restore_give_a_working_clone_files_and_environment(
        local_vault, app, tmp_path):
    repo, deploy, env = app
    result = code.backup_code(local_vault, repository=str(repo), deploy_paths=[str(deploy)],
                              env_file=str(env), environment={"EXTRA": "x"},
                              state_dir=str(tmp_path / "state"))
    assert result["release"] == "v1.2.0" and result["environment"] == ["DATABASE_URL",
                                                                       "DEBUG", "EXTRA"]
    assert SECRET not in json.dumps(result)
    manifest = local_vault.manifest(local_vault.select(result["backup_id"]))
    assert SECRET not in json.dumps(manifest) and manifest["meta"]["refs"] == 3
    out = tmp_path / "restored"
    restored = code.restore_code(local_vault, "latest", target=str(out))
    clone = restored["repository"]
    assert run("git", "log", "-1", "--format=%H", cwd=clone).strip() == \
        run("git", "rev-parse", "HEAD", cwd=repo).strip()
    assert "feature" in run("git", "branch", "-a", cwd=clone)
    assert "v1.2.0" in run("git", "tag", cwd=clone)
    assert os.path.exists(os.path.join(restored["deploy"]["target"], str(deploy).lstrip("/"),
                                       "docker-compose.yml"))
    env_file = out / "environment.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert code.parse_dotenv(env_file.read_text())["DATABASE_URL"] == \
        f"postgres://app:{SECRET}@db/app"
    checks = verification.verify_backup(local_vault, local_vault.select("latest"), record=False)
    assert checks.ok and "git bundle verify" in [check.name for check in checks.checks]


def test_a_damaged_bundle_fails_git_bundle_verify(local_vault, app, tmp_path):
    repo, _deploy, _env = app
    result = code.backup_code(local_vault, repository=str(repo))
    ref = local_vault.select(result["backup_id"])
    with local_vault.new_backup("code", {"label": "app"}) as forged:
        forged.add_bytes(code.BUNDLE, b"# v2 git bundle\nnot a bundle at all\n")
    checks = code.verify_code(local_vault, local_vault.select(forged.id))
    assert not checks[0].ok and "bundle" in checks[0].detail
    assert code.verify_code(local_vault, ref)[0].ok


def test_not_a_repository_is_a_clear_error(local_vault, tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(Exception, match="rev-parse"):
        code.backup_code(local_vault, repository=str(tmp_path / "plain"))
