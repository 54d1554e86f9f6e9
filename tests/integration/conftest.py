"""Vaults on real storage: local directories, and S3/KMS on moto's HTTP server."""

from __future__ import annotations

import os

import pytest
import yaml

from tests.engine import keys, settings


def write_settings(path, document) -> str:
    path.write_text(yaml.safe_dump(document))
    return str(path)


@pytest.fixture
def local_settings(tmp_path):
    """Settings for a primary and a secondary local repository and a local key."""
    key_file = tmp_path / "keys" / "master.key"
    keys.LocalKey.generate().save(str(key_file))
    return {
        "repositories": [
            {"name": "primary", "url": str(tmp_path / "primary")},
            {"name": "secondary", "url": str(tmp_path / "secondary")},
        ],
        "keys": {"local_key_file": str(key_file)},
        "audit_log": str(tmp_path / "audit.jsonl"),
    }


@pytest.fixture
def local_vault(local_settings):
    return settings.build_vault(local_settings)


@pytest.fixture
def random_data():
    """Incompressible and compressible parts, larger than several frames."""
    lines = b"".join(b'{"user": %d, "action": "upload", "bytes": %d}\n' % (i, i * 7)
                     for i in range(60_000))
    return os.urandom(5 << 20) + lines + os.urandom(777)
