"""Real services for tests and the lab: moto's S3/KMS server on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def moto_command(port: int) -> list[str]:
    """moto's server (this Python's environment) on 127.0.0.1 only."""
    return [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)]


def wait_for_moto(endpoint_url: str, alive: Callable[[], bool], timeout: float = 30) -> None:
    """Wait until moto's server answers; ``alive`` says whether its process still runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"moto_server for {endpoint_url} exited before it answered")
        try:
            urllib.request.urlopen(f"{endpoint_url}/moto-api/", timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer on {endpoint_url} within {timeout:.0f} s")


def client_environment(endpoint_url: str, region: str = "eu-west-1") -> dict[str, str]:
    """Environment that points every AWS SDK call at moto's server, never at AWS.

    moto accepts any credentials; boto3 only needs some to sign with.
    """
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


class MotoServer:
    """moto's S3/KMS/IAM/STS server as a subprocess on 127.0.0.1."""

    def __init__(self, port: int | None = None, log_dir: Path | None = None):
        self.port = port or free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self._process: subprocess.Popen | None = None

    def start(self) -> MotoServer:
        log = open(self.log_dir / "moto.log", "wb") if self.log_dir else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(moto_command(self.port), stdout=log,
                                         stderr=subprocess.STDOUT)
        try:
            wait_for_moto(self.endpoint_url, lambda: self._process.poll() is None)
        except RuntimeError:
            self.stop()
            raise
        return self

    def reset(self) -> None:
        """Forget every bucket, key and role (moto's reset API)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def client_environment(self) -> dict[str, str]:
        """Environment that points every AWS SDK call at this server, never at AWS."""
        return client_environment(self.endpoint_url)

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def apply_environment(values: dict[str, str]) -> dict[str, str | None]:
    """Set environment variables; returns the previous values for restore_environment."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    return previous


def restore_environment(previous: dict[str, str | None]) -> None:
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
