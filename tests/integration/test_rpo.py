"""The postgresql_archiving role on a real cluster, and the guide's database RPO proven
under a pgbench write load: with the role's defaults (archive_timeout 60 s), every
transaction committed more than 60 seconds before a disaster is recovered."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from ansible_collections.cosmic.backup.plugins.module_utils import pitr
from ansible_collections.cosmic.backup.plugins.module_utils.pg_tools import Session
from ansible_collections.cosmic.backup.plugins.module_utils.postgres_cluster import (
    TemporaryCluster,
)

from tests.engine import settings as engine_settings
from tests.integration.dbfixtures import connection, postgres_owned_settings

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RPO = timedelta(seconds=60)
LOAD_SECONDS = 70


def apply_role(tmp_path: Path, cluster: TemporaryCluster, settings: dict, base: Path) -> None:
    site = glob.glob(str(REPO / ".venv" / "lib" / "python3*" / "site-packages"))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    variables = {
        "postgresql_archiving_conf_dir": f"{cluster.data_dir}/conf.d",
        "postgresql_archiving_restart_command":
            f"runuser -u postgres -- {cluster.bindir}/pg_ctl -D {cluster.data_dir} -w restart",
        "postgresql_archiving_reload_command":
            f"runuser -u postgres -- {cluster.bindir}/pg_ctl -D {cluster.data_dir} reload",
        "postgresql_archiving_cli": str(base / "bin" / "cosmic-backup"),
        "postgresql_archiving_lib_dir": str(base / "lib"),
        "postgresql_archiving_python": f"/usr/bin/python{version}",
        "postgresql_archiving_pythonpath": site,
        "postgresql_archiving_config": str(base / "etc" / "config.yml"),
        "postgresql_archiving_spool_dir": settings["wal"]["spool_dir"],
        "postgresql_archiving_audit_log": settings["audit_log"],
        "cosmic_backup_repositories": settings["repositories"],
        "cosmic_backup_keys": settings["keys"],
        "ansible_become_method": "su",
        # the server's user runs modules too: the system Python, not this checkout's
        "ansible_python_interpreter": f"/usr/bin/python{version}",
    }
    playbook = tmp_path / "archiving.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": True, "vars": variables,
        "roles": ["cosmic.backup.postgresql_archiving"]}]))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO / "var" / "collections"),
           "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
    for attempt in ("apply", "again"):
        result = subprocess.run([str(BIN / "ansible-playbook"), "-c", "local", "-i",
                                 "localhost,", str(playbook)], capture_output=True, text=True,
                                env=env, timeout=300, check=False)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        if attempt == "again":  # idempotent: nothing changes, no restart
            assert "changed=0" in result.stdout, result.stdout[-2000:]


class Writer(threading.Thread):
    """Commits one marked row after another and remembers what the server acknowledged."""

    def __init__(self, cluster: TemporaryCluster):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.acknowledged: list[tuple[int, datetime]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        session = Session(connection(self.cluster, "bench"), self.cluster.bindir)
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                at = session.value(f"insert into marks (n) values ({n}) returning at")
                self.acknowledged.append((n, datetime.fromisoformat(at)))
                time.sleep(0.05)
        except Exception:  # noqa: BLE001 - the disaster ends the session
            pass
        finally:
            session.close()


def test_role_configures_archiving_and_rpo_holds_under_pgbench(tmp_path):
    base = tmp_path / "host"
    settings, _config = postgres_owned_settings(base / "lab")
    vault = engine_settings.build_vault(settings)
    cluster = TemporaryCluster()
    try:
        cluster.init()
        cluster.run(["/bin/sh", "-c", f"mkdir {cluster.data_dir}/conf.d && "
                                      f"echo \"include_dir = 'conf.d'\" >> "
                                      f"{cluster.data_dir}/postgresql.conf"])
        cluster.start()
        apply_role(tmp_path, cluster, settings, base)
        assert cluster.psql("select current_setting('archive_mode'), "
                            "current_setting('archive_timeout')") == "on|1min"
        assert "wal-push %p" in cluster.psql("show archive_command")

        cluster.psql("create database bench")
        cluster.run(["pgbench", "-i", "-s", "2", "-q", "bench"])
        cluster.psql("create table marks (n int primary key, at timestamptz not null "
                     "default clock_timestamp())", "bench")
        pitr.base_backup(vault, connection(cluster, "postgres"))

        load = subprocess.Popen([f"{cluster.bindir}/pgbench", "-c", "2", "-j", "2", "-T",
                                 str(LOAD_SECONDS + 30), "-n", "bench"],
                                env=cluster.environment(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        writer = Writer(cluster)
        writer.start()
        time.sleep(LOAD_SECONDS)
        # The disaster: the server dies mid-load and its data directory is lost.
        pid = int(open(f"{cluster.data_dir}/postmaster.pid").readline())  # noqa: SIM115
        os.kill(pid, signal.SIGKILL)
        disaster = datetime.now(timezone.utc)
        writer.stop.set()
        writer.join(30)
        load.kill()
        load.wait()
        # Its children follow it, and init reaps it (here in about a second):
        # until then its zombie's pid, in the socket's lock file, stops the
        # restored server from starting ("another postmaster").
        for _ in range(300):
            if not os.path.exists(f"/proc/{pid}") and subprocess.run(
                    ["pgrep", "-f", cluster.data_dir], capture_output=True).returncode != 0:
                break
            time.sleep(0.1)

        restored = pitr.restore_point_in_time(vault, cluster.data_dir)
        assert restored.previous  # the lost directory is kept aside, as found
        cluster.write_settings({"archive_mode": "off"})
        cluster.start()
        cluster.wait_until_writable()
        recovered = {int(n) for n in cluster.psql("select n from marks", "bench").split()}
        old_enough = [n for n, at in writer.acknowledged if at < disaster - RPO]
        assert len(old_enough) > 50, "the load did not run long enough to prove anything"
        lost = sorted(set(old_enough) - recovered)
        assert not lost, f"{len(lost)} transactions older than {RPO} were lost: {lost[:10]}"
        newest = max(at for n, at in writer.acknowledged if n in recovered)
        print(f"RPO measured: {(disaster - newest).total_seconds():.1f} s "
              f"({len(recovered)} of {len(writer.acknowledged)} marks, "
              f"{restored.wal_files} WAL files replayed)")
    finally:
        cluster.destroy()
