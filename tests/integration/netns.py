"""Several hosts on this machine: network namespaces on 198.51.100.0/24, each with its
own sshd, reached over real SSH with throwaway keys.

The root namespace holds a bridge with 198.51.100.1/24; every host is a namespace with a
veth on that bridge, its own address and loopback, and no default route, so nothing it
sends can leave the machine. The namespaces share the filesystem (like hosts sharing
NFS), so each host gets its own directory tree under ``workdir/<name>``.

Everything created here is removed by ``close()`` (and by leaving the ``with`` block),
even when starting failed half way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

SUBNET_PREFIX = "198.51.100."  # TEST-NET-2; this machine's own network is 192.0.2.0/24
BRIDGE = "cosmic-br0"
BRIDGE_ADDRESS = SUBNET_PREFIX + "1"
SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = "/run/sshd"  # sshd refuses to start without it

# StrictModes would refuse authorized_keys under /tmp (world-writable with the sticky
# bit); the key files are the test's own, mode 0600, in a 0700 directory.
SSHD_CONFIG = """\
ListenAddress {address}:22
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
PrintMotd no
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""


def run(argv: Sequence[str], *, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """A command whose failure names itself and its stderr."""
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): "
                           f"{result.stderr.strip()[-1500:]}")
    return result


def _keygen(path: Path, comment: str) -> str:
    """A new ed25519 key pair without a passphrase; returns the public key line."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_suffix(".pub").read_text().strip()


class Host:
    """One namespace: its address, its directory tree and its sshd."""

    def __init__(self, name: str, address: str, root: Path):
        self.name = name
        self.address = address
        self.root = root
        self.ssh_dir = root / "sshd"
        self.sshd_log = self.ssh_dir / "sshd.log"
        self.veth = f"ve-{name}"[:15]
        self.sshd: subprocess.Popen | None = None

    def netns(self, argv: Sequence[str]) -> list[str]:
        """argv run inside this host's namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        return run(self.netns(argv), **kwargs)


class Network:
    """A bridge and one namespace with its own sshd per host; ``close()`` removes them."""

    def __init__(self, workdir: Path, hosts: dict[str, str],
                 environment: dict[str, str] | None = None):
        """``hosts`` maps names to addresses on 198.51.100.0/24; ``environment`` is set in
        every SSH session (sshd's SetEnv), as a host's own environment would be."""
        for address in hosts.values():
            if not address.startswith(SUBNET_PREFIX) or address == BRIDGE_ADDRESS:
                raise ValueError(f"{address}: test hosts live on {SUBNET_PREFIX}2-254 only")
        self.workdir = workdir
        self.hosts = {name: Host(name, address, workdir / name)
                      for name, address in hosts.items()}
        self.environment = environment or {}
        self.client_key = workdir / "client" / "id_ed25519"
        self.known_hosts = workdir / "client" / "known_hosts"
        self._bridge = False
        self._namespaces: list[str] = []
        self._privsep_created = False

    # -- life cycle ----------------------------------------------------------

    def start(self) -> Network:
        try:
            self._refuse_leftovers()
            self._create_bridge()
            self.client_key.parent.mkdir(parents=True, exist_ok=True)
            client_public = _keygen(self.client_key, "cosmic-multihost-client")
            if not os.path.isdir(PRIVSEP_DIR):
                os.makedirs(PRIVSEP_DIR, mode=0o755)
                self._privsep_created = True
            known = []
            for host in self.hosts.values():
                self._create_namespace(host)
                known.append(self._start_sshd(host, client_public))
            self.known_hosts.write_text("".join(known))
            for host in self.hosts.values():
                self._wait_for_sshd(host)
        except BaseException:
            self.close()
            raise
        return self

    def _refuse_leftovers(self) -> None:
        """Another run's namespaces or bridge would collide: say so instead of guessing."""
        existing = set(run(["ip", "netns", "list"]).stdout.split())
        clashes = sorted(existing & set(self.hosts))
        if clashes or run(["ip", "link", "show", BRIDGE], check=False).returncode == 0:
            raise RuntimeError(
                f"network namespaces {clashes} or bridge {BRIDGE} already exist: another "
                "multi-host test is running, or one was killed; remove them with "
                f"`ip netns delete NAME` and `ip link delete {BRIDGE}`")

    def _create_bridge(self) -> None:
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        self._bridge = True
        run(["ip", "addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE])
        run(["ip", "link", "set", BRIDGE, "up"])

    def _create_namespace(self, host: Host) -> None:
        run(["ip", "netns", "add", host.name])
        self._namespaces.append(host.name)
        # the peer is created inside the namespace: deleting the namespace deletes the pair
        run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0",
             "netns", host.name])
        run(["ip", "link", "set", host.veth, "master", BRIDGE, "up"])
        host.run(["ip", "link", "set", "lo", "up"])
        host.run(["ip", "addr", "add", f"{host.address}/24", "dev", "eth0"])
        host.run(["ip", "link", "set", "eth0", "up"])

    def _start_sshd(self, host: Host, client_public: str) -> str:
        """Starts sshd in the namespace; returns the host's known_hosts line."""
        host.ssh_dir.mkdir(parents=True, exist_ok=True)
        host_key = host.ssh_dir / "ssh_host_ed25519_key"
        host_public = _keygen(host_key, f"root@{host.name}")
        authorized = host.ssh_dir / "authorized_keys"
        authorized.write_text(client_public + "\n")
        authorized.chmod(0o600)
        config = host.ssh_dir / "sshd_config"
        text = SSHD_CONFIG.format(address=host.address, host_key=host_key,
                                  pid_file=host.ssh_dir / "sshd.pid",
                                  authorized_keys=authorized)
        if self.environment:
            text += "SetEnv " + " ".join(f"{name}={value}" for name, value
                                         in sorted(self.environment.items())) + "\n"
        config.write_text(text)
        run([SSHD, "-t", "-f", str(config)])
        with open(host.sshd_log, "wb") as log:
            # -D: stay in the foreground so that the fixture owns the process; -e: log there
            host.sshd = subprocess.Popen(host.netns([SSHD, "-D", "-e", "-f", str(config)]),
                                         stdout=log, stderr=subprocess.STDOUT)
        key_type, key = host_public.split()[:2]
        return f"{host.address} {key_type} {key}\n"

    def _wait_for_sshd(self, host: Host, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if host.sshd.poll() is not None:
                raise RuntimeError(f"sshd of {host.name} exited with {host.sshd.returncode}: "
                                   f"{host.sshd_log.read_text()[-1500:]}")
            with contextlib.suppress(OSError), socket.create_connection((host.address, 22),
                                                                        timeout=1) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"sshd of {host.name} did not answer on {host.address}:22 "
                           f"within {timeout:.0f} s; see {host.sshd_log}")

    def stop_host(self, name: str) -> None:
        """The host is gone: its sshd stops and its namespace (and veth) disappear."""
        host = self.hosts[name]
        self._stop_sshd(host)
        if name in self._namespaces:
            self._remove_namespace(host)

    def close(self) -> None:
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                self._stop_sshd(host)
        for name in list(self._namespaces):
            self._remove_namespace(self.hosts[name])
        if self._bridge:
            run(["ip", "link", "delete", BRIDGE], check=False)
            self._bridge = False
        if self._privsep_created:
            with contextlib.suppress(OSError):
                os.rmdir(PRIVSEP_DIR)
            self._privsep_created = False

    def _remove_namespace(self, host: Host) -> None:
        with contextlib.suppress(Exception):
            self._kill_namespace_processes(host.name)
        # The kernel may keep a deleted namespace alive for a while (seen here: a minute,
        # as its last sockets close), and the veth pair with it; deleting the pair first
        # frees its name for the next run now.
        run(["ip", "link", "delete", host.veth], check=False)
        run(["ip", "netns", "delete", host.name], check=False)
        self._namespaces.remove(host.name)

    @staticmethod
    def _stop_sshd(host: Host) -> None:
        if host.sshd and host.sshd.poll() is None:
            host.sshd.terminate()
            try:
                host.sshd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                host.sshd.kill()
                host.sshd.wait()

    @staticmethod
    def _kill_namespace_processes(name: str) -> None:
        """Whatever still runs in the namespace (a session's leftovers) is this test's."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), sig)
            if pids and sig == signal.SIGTERM:
                time.sleep(2)

    def __enter__(self) -> Network:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- clients ---------------------------------------------------------------

    def ssh_options(self) -> list[str]:
        """ssh options that trust exactly these hosts' keys and offer only the test key."""
        return ["-F", "/dev/null", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                "-i", str(self.client_key)]

    def ssh(self, name: str, command: str, *, check: bool = True) -> subprocess.CompletedProcess:
        """A command on a host, over SSH as root."""
        return run(["ssh", *self.ssh_options(), f"root@{self.hosts[name].address}", command],
                   check=check, timeout=60)
