"""Throwaway PostgreSQL clusters: for restore tests, verification and the lab.

``initdb`` refuses to run as root, so when the engine runs as root the
PostgreSQL tools run as the ``postgres`` user, and the cluster's directory
belongs to it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence

from .errors import ConfigError, ExternalCommandError


def postgres_bindir(version: str | None = None) -> str:
    """The directory of PostgreSQL's server binaries (Debian keeps them per version)."""
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/{version or '*'}/bin"),
                        key=lambda path: int(path.split("/")[-2]))
    if not candidates:
        raise ConfigError(
            f"PostgreSQL {version or ''} server binaries not found under /usr/lib/postgresql: "
            "apt-get install postgresql-15"
        )
    return candidates[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postmaster_pid(data_directory: str) -> int | None:
    """The pid of a postmaster that runs on ``data_directory``, if one does."""
    try:
        with open(os.path.join(data_directory, "postmaster.pid"), encoding="utf-8") as handle:
            pid = int(handle.readline().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    # A killed postmaster stays a zombie where nothing reaps orphans (a container's
    # init), and its pid may since belong to another program: neither runs a server.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            name, state = re.match(r"\d+ \((.*)\) (\S)", handle.read()).groups()
    except (OSError, AttributeError):
        return pid
    return None if state in "ZX" or name not in ("postgres", "postmaster") else pid


class TemporaryCluster:
    """A PostgreSQL cluster in its own directory, on 127.0.0.1 and a free port."""

    def __init__(self, base_dir: str | None = None, *, port: int | None = None,
                 bindir: str | None = None, owner: str = "postgres",
                 settings: dict[str, str] | None = None, superuser: str = "postgres"):
        self.bindir = bindir or postgres_bindir()
        self.port = port or free_port()
        self.superuser = superuser
        self.owner = owner if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self._own_base = base_dir is None
        self.base_dir = base_dir or tempfile.mkdtemp(prefix="cosmic-pg-")
        self.data_dir = os.path.join(self.base_dir, "data")
        self.socket_dir = os.path.join(self.base_dir, "socket")
        self.settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "on",
            "max_wal_senders": "4",
            "wal_level": "replica",
            **(settings or {}),
        }

    # -- running tools as the cluster's owner ------------------------------

    def _as_owner(self, argv: Sequence[str]) -> list[str]:
        if os.geteuid() == 0 and self.owner != "root":
            return ["runuser", "-u", self.owner, "--", *argv]
        return list(argv)

    def run(self, argv: Sequence[str], *, input: bytes | None = None,
            check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run a PostgreSQL tool (relative names resolve in bindir) as the owner."""
        argv = list(argv)
        if "/" not in argv[0]:
            argv[0] = os.path.join(self.bindir, argv[0])
        result = subprocess.run(self._as_owner(argv), input=input, capture_output=True,
                                timeout=timeout, env=self.environment(), check=False)
        if check and result.returncode != 0:
            raise ExternalCommandError(
                f"{os.path.basename(argv[0])} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()[-2000:]}"
            )
        return result

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(PGHOST="127.0.0.1", PGPORT=str(self.port), PGUSER=self.superuser,
                   PGDATABASE="postgres")
        return env

    # -- life cycle ----------------------------------------------------------

    def init(self, extra_args: Sequence[str] = ()) -> TemporaryCluster:
        os.makedirs(self.socket_dir, exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam(self.owner)
            for path in (self.base_dir, self.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            os.chmod(self.base_dir, 0o700)
        self.run(["initdb", "-D", self.data_dir, "-U", self.superuser, "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8", "--data-checksums", *extra_args])
        self.write_settings(self.settings)
        return self

    def write_settings(self, settings: dict[str, str]) -> None:
        """Append settings to postgresql.auto.conf (the last value wins)."""
        lines = "".join(f"{name} = {value}\n" for name, value in settings.items())
        self.run(["/bin/sh", "-c", f"cat >> {self.data_dir}/postgresql.auto.conf"],
                 input=lines.encode())

    def start(self, timeout: float = 120) -> TemporaryCluster:
        self.run(["pg_ctl", "-D", self.data_dir, "-l", os.path.join(self.base_dir, "server.log"),
                  "-w", "-t", str(int(timeout)), "start"], timeout=timeout + 30)
        return self

    def wait_until_writable(self, timeout: float = 600) -> None:
        """``pg_ctl -w`` returns while a restored server still replays WAL: wait it out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.run(["psql", "-XAtc", "select pg_is_in_recovery()"], check=False)
            if result.returncode == 0 and result.stdout.strip() == b"f":
                return
            time.sleep(0.2)
        raise ExternalCommandError(f"the cluster on port {self.port} is still in recovery "
                                   f"after {timeout:.0f} s; see {self.base_dir}/server.log")

    def running(self) -> bool:
        """Whether a live postmaster serves this data directory (not a stale pid file)."""
        return postmaster_pid(self.data_dir) is not None

    def stop(self, mode: str = "fast") -> None:
        if os.path.exists(os.path.join(self.data_dir, "postmaster.pid")):
            self.run(["pg_ctl", "-D", self.data_dir, "-m", mode, "-w", "stop"], check=False)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        if self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> TemporaryCluster:
        return self.init().start()

    def __exit__(self, *exc) -> None:
        self.destroy()

    # -- queries -------------------------------------------------------------

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with ON_ERROR_STOP; returns unaligned, tuples-only output."""
        result = self.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", database],
                          input=sql.encode())
        return result.stdout.decode().strip()

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={self.superuser} dbname={database}"
