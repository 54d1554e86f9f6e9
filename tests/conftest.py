"""Fixtures that start real services on loopback and stop them afterwards."""

from __future__ import annotations

import os

import pytest

from tests.services import MotoServer, apply_environment, restore_environment

# No test may reach real AWS: every SDK call defaults to a closed port until a
# test starts the local server and points the environment at it.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """moto's S3/KMS/IAM/STS server on 127.0.0.1, for the whole session."""
    log_dir = tmp_path_factory.mktemp("moto")
    with MotoServer(log_dir=log_dir) as server:
        previous = apply_environment(server.client_environment())
        try:
            yield server
        finally:
            restore_environment(previous)
