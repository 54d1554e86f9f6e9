"""The break-glass procedure in docs/repository-format.md, run as written:
standard tools (the AWS Encryption SDK, its CLI, zstd) and no
code of this project."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from tests.engine import catalog, keys, settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "repository-format.md"


def block(marker: str) -> str:
    """The fenced code block of the doc whose first line is ``marker``."""
    for body in re.findall(r"```[a-z]*\n(.*?)```", DOC.read_text(), re.S):
        if body.startswith(marker):
            return body
    raise AssertionError(f"docs/repository-format.md has no block starting {marker!r}")


def run_block(script: str, folder: Path, env: dict) -> None:
    # Standard tools only: the venv's bin is on PATH for python3 with the SDK
    # and aws-encryption-cli, and PYTHONPATH is cleared so this project's
    # engine cannot be imported by accident.
    environment = {**os.environ, **env,
                   "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    environment.pop("PYTHONPATH", None)
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=folder, env=environment,
                   check=True, timeout=120)


@pytest.fixture
def data():
    return os.urandom(3 << 20) + b"CREATE TABLE posts (id bigint);\n" * 50_000


def backup_folder(vault, data) -> Path:
    with vault.new_backup("database") as writer:
        writer.add_stream("dump", io.BytesIO(data))
    root = Path(vault.primary.storage.root)
    return root / catalog.backup_prefix("database", writer.id)


@pytest.mark.parametrize("key_form", ["key file", "recovery code"])
def test_local_key_break_glass(local_settings, tmp_path, data, key_form):
    folder = backup_folder(settings.build_vault(local_settings), data)
    (folder / "open-sealed.py").write_text(block("# open-sealed.py"))
    key_file = local_settings["keys"]["local_key_file"]
    key = key_file if key_form == "key file" else keys.LocalKey.load(key_file).recovery_code()
    run_block(block("# break-glass: local key"), folder, {"KEY": key})
    assert (folder / "dump").read_bytes() == data
    assert f'"zstd_checksum": "{zstd_check(folder / "dump.zst")}"' \
        in (folder / "manifest.json").read_text()


def zstd_check(compressed: Path) -> str:
    listing = subprocess.run(["zstd", "-lv", str(compressed)], capture_output=True, text=True,
                             check=True).stdout
    return re.search(r"Check: XXH64 ([0-9a-f]{8})", listing).group(1)


def test_kms_break_glass(moto_server, tmp_path, data):
    arns = []
    for region in ("eu-west-1", "eu-central-1"):
        kms = boto3.client("kms", endpoint_url=moto_server.endpoint_url, region_name=region)
        arns.append(kms.create_key()["KeyMetadata"]["Arn"])
    vault = settings.build_vault({
        "repositories": [{"name": "primary", "url": str(tmp_path / "primary")}],
        "keys": {"kms_key_arns": arns, "kms_endpoint_url": moto_server.endpoint_url},
    })
    folder = backup_folder(vault, data)
    # Either region's key alone opens it: here the secondary region's.
    run_block(block("# break-glass: kms"), folder, {"KMS_KEY_ARN": arns[1]})
    assert (folder / "dump").read_bytes() == data
