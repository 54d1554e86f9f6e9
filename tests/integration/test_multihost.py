"""More than one host (issue 5): the playbooks over real SSH.

Network namespaces on 198.51.100.0/24 play the hosts, each with its own sshd: the
database on db1, the application on app1. Backups go over the bridge to moto's S3 and
KMS server on 198.51.100.1 (two buckets, two KMS keys, as production has them). Then
db1 is destroyed (its server stopped, its data deleted, its namespace gone) and
disaster_recovery.yml provisions db2 and recovers onto it; db2 must hold exactly what
db1 held, and app1 exactly the uploads it had. Select with ``-k multihost``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
import yaml
from ansible_collections.cosmic.backup.plugins.module_utils.postgres_cluster import (
    TemporaryCluster,
)

from tests.integration import dbfixtures, filetrees
from tests.integration.netns import BRIDGE_ADDRESS, Host, Network

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python")
BIN = REPO / ".venv" / "bin"
HOSTS = {"db1": "198.51.100.11", "app1": "198.51.100.12", "db2": "198.51.100.13"}
DATABASE = "cosmic"
HEALTH_PORT = 8080

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd"),
                                reason="needs root (namespaces) and openssh-server")

# How a database host gets its server: the same on db1 (by the test) and on db2 (by the
# playbook's provision step, over SSH). Prints what provision_database.yml reads.
PROVISION = """\
import json, sys
from ansible_collections.cosmic.backup.plugins.module_utils.postgres_cluster import (
    TemporaryCluster)
base, address = sys.argv[1:]
cluster = TemporaryCluster(base, port=5432, settings={"listen_addresses": repr(address)})
cluster.init()
cluster.run(["/bin/sh", "-c", f"cat >> {cluster.data_dir}/pg_hba.conf"],
            input=b"host all all 198.51.100.0/24 trust\\n")
cluster.start()
print(json.dumps({"host": address, "port": cluster.port, "base_dir": base}))
"""


class HostCluster(TemporaryCluster):
    """The PostgreSQL of one host, seen from the test: through its unix socket (the
    filesystem is shared; the TCP address is only reachable inside the namespaces)."""

    def __init__(self, base_dir: Path):
        super().__init__(str(base_dir), port=5432)

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "PGHOST": self.socket_dir}

    def running(self) -> bool:
        return os.path.exists(os.path.join(self.data_dir, "postmaster.pid"))


def table_fingerprints(cluster: HostCluster) -> dict[str, str]:
    """Row count and checksum of every row of every application table, per table."""
    tables = cluster.psql(
        "select string_agg(format('%I.%I', table_schema, table_name), e'\\n' "
        "order by table_schema, table_name) from information_schema.tables "
        "where table_type = 'BASE TABLE' "
        "and table_schema not in ('pg_catalog', 'information_schema')", DATABASE).splitlines()
    assert len(tables) >= 3
    return {table: cluster.psql(
        f"select count(*) || ' ' || md5(coalesce(string_agg(t::text, ',' order by t::text), ''))"
        f" from {table} t", DATABASE) for table in tables}


def grants(cluster: HostCluster) -> str:
    return cluster.psql("select string_agg(grantee || ':' || table_name || ':' || privilege_type,"
                        " ',' order by grantee, table_name, privilege_type) "
                        "from information_schema.role_table_grants "
                        "where grantee in ('app_reader', 'app_writer')", DATABASE)


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer on {url} within {timeout:.0f} s")


def stop(process: subprocess.Popen | None) -> None:
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Fleet:
    """Everything the playbooks act on: hosts, their data, storage and inventories."""

    def __init__(self, root: Path):
        self.root = root
        # The hosts' trees are outside pytest's base directory: pytest sessions that other
        # engineers start meanwhile make that 0700 again, and PostgreSQL runs as postgres.
        self.trees = Path(tempfile.mkdtemp(prefix="cosmic-multihost-"))
        os.chmod(self.trees, 0o711)
        self.logs = root / "logs"
        self.reports = root / "reports"
        self.network: Network | None = None
        self.moto: subprocess.Popen | None = None
        self.moto_url = ""
        self.health: subprocess.Popen | None = None
        self.clusters: dict[str, HostCluster] = {}

    def host(self, name: str) -> Host:
        return self.network.hosts[name]

    @property
    def uploads(self) -> Path:
        return self.host("app1").root / "uploads"

    # -- ansible -----------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        return {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"),
                "ANSIBLE_COLLECTIONS_PATH": str(REPO / "var" / "collections"),
                "ANSIBLE_HOME": str(self.root / "ansible-home"),
                "ANSIBLE_LOCAL_TEMP": str(self.root / "ansible-tmp"),
                "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0",
                "ANSIBLE_DEPRECATION_WARNINGS": "0",
                "COSMIC_BACKUP_PLAYBOOK_AUDIT_LOG": str(self.logs / "playbook-audit.jsonl")}

    def playbook(self, inventory: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
        result = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), name,
                                 *extra], cwd=REPO / "ansible", env=self.environment(),
                                capture_output=True, text=True, check=False, timeout=600)
        log = self.logs / f"{name}-{'-'.join(extra).replace('=', '_')}.log"
        log.write_text(result.stdout + result.stderr)
        return result

    def adhoc(self, inventory: Path, pattern: str, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "ansible"), "-i", str(inventory), pattern, "-o",
                               *argv], cwd=REPO / "ansible", env=self.environment(),
                              capture_output=True, text=True, check=False, timeout=300)

    def inventory(self, name: str, database_host: str) -> Path:
        """The inventory of a fleet whose database runs on ``database_host``."""
        app = self.host("app1").root
        ssh = {
            "ansible_connection": "ssh",
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.network.client_key),
            "ansible_ssh_common_args": " ".join(self.network.ssh_options()[:-2]),
            "ansible_python_interpreter": PYTHON,
            "ansible_pipelining": True,  # one SSH round trip per task, as fleets run it
        }
        database = self.host(database_host)
        document = {"all": {
            "vars": {
                "cosmic_reports_dir": str(self.reports),
                "cosmic_backup_repositories": [
                    {"name": "primary", "url": "s3://cosmic-primary/cosmic",
                     "region": "eu-west-1", "endpoint_url": self.moto_url},
                    {"name": "secondary", "url": "s3://cosmic-secondary/cosmic",
                     "region": "eu-central-1", "endpoint_url": self.moto_url}],
                "cosmic_backup_keys": {"kms_key_arns": self.kms_keys,
                                       "kms_endpoint_url": self.moto_url},
                # a logical restore (restore.yml, disaster_recovery.yml): no WAL archive here
                "cosmic_database_recovery": "logical",
                "cosmic_dr_database_recovery": "logical",
                "cosmic_uploads_path": str(app / "uploads"),
                "cosmic_config_paths": [str(app / "config" / "app.yml"),
                                        str(app / "config" / "app.env")],
                "cosmic_code_repository": str(app / "code"),
                "cosmic_code_deploy_paths": [str(app / "code" / "deploy")],
                "cosmic_env_file": str(app / "config" / "app.env"),
                "cosmic_releases_dir": str(app / "releases"),
                "cosmic_app_health_url": f"http://{HOSTS['app1']}:{HEALTH_PORT}/health.json",
                "cosmic_service_stop": ["/bin/true"],
                "cosmic_service_start": ["/bin/true"],
                "cosmic_dr_provision": [PYTHON, "-c", PROVISION,
                                        str(self.host("db2").root / "postgresql"),
                                        HOSTS["db2"]],
                # the recovered release must be a working clone before traffic moves to it
                "cosmic_dr_app_start": ["/bin/sh", "-c", 'git -C "$0" rev-parse --verify HEAD'],
                "cosmic_dr_app_health_url":
                    f"http://{HOSTS['app1']}:{HEALTH_PORT}/health.json",
                "cosmic_traffic_switch": "symlink",
                "cosmic_switch_link": str(app / "current"),
                "cosmic_dr_contacts": [{"role": "Incident commander", "name": "Test",
                                        "phone": "-", "email": "test@example.invalid"}],
                "cosmic_dr_roles": [{"role": "Recovery operator", "duties": "runs the test"}],
                "cosmic_dr_communication": [],
            },
            "children": {
                "database": {"vars": ssh, "hosts": {database_host: {
                    "ansible_host": database.address,
                    "ansible_remote_tmp": str(database.root / "ansible-tmp"),
                    # the modules connect from the database host to its own address
                    "cosmic_database": {"host": database.address, "port": 5432,
                                        "user": "postgres", "name": DATABASE},
                    "cosmic_backup_audit_log": str(database.root / "audit.jsonl"),
                    "cosmic_backup_state_dir": str(database.root / "state")}}},
                "application": {"vars": ssh, "hosts": {"app1": {
                    "ansible_host": HOSTS["app1"],
                    "ansible_remote_tmp": str(app / "ansible-tmp"),
                    "cosmic_backup_audit_log": str(app / "audit.jsonl"),
                    "cosmic_backup_state_dir": str(app / "state")}}},
            },
        }}
        path = self.root / f"{name}.yml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    # -- life cycle --------------------------------------------------------------

    def start(self) -> Fleet:
        self.logs.mkdir(parents=True)
        host_environment = {  # what an instance role gives a real host
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "eu-west-1", "AWS_EC2_METADATA_DISABLED": "true",
            # anything without its own endpoint fails on a closed port, never reaches AWS
            "AWS_ENDPOINT_URL": f"http://{BRIDGE_ADDRESS}:9"}
        self.network = Network(self.trees, HOSTS, host_environment).start()
        self._start_storage()
        self._start_database("db1")
        self.clusters["db2"] = HostCluster(self.host("db2").root / "postgresql")  # by the DR
        self._start_application()
        return self

    def _start_storage(self) -> None:
        port = free_port(BRIDGE_ADDRESS)
        self.moto_url = f"http://{BRIDGE_ADDRESS}:{port}"
        with open(self.logs / "moto.log", "wb") as log:
            self.moto = subprocess.Popen([str(BIN / "moto_server"), "-H", BRIDGE_ADDRESS,
                                          "-p", str(port)], stdout=log,
                                         stderr=subprocess.STDOUT)
        wait_for_http(f"{self.moto_url}/moto-api/", self.moto, "moto_server")
        credentials = {"endpoint_url": self.moto_url, "aws_access_key_id": "testing",
                       "aws_secret_access_key": "testing"}
        for bucket, region in (("cosmic-primary", "eu-west-1"),
                               ("cosmic-secondary", "eu-central-1")):
            boto3.client("s3", region_name=region, **credentials).create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region},
                ObjectLockEnabledForBucket=True)
        self.kms_keys = [boto3.client("kms", region_name=region, **credentials).create_key(
            Description=f"cosmic-backup {region}")["KeyMetadata"]["Arn"]
            for region in ("eu-west-1", "eu-central-1")]

    def _start_database(self, name: str) -> None:
        host = self.host(name)
        base = host.root / "postgresql"
        self.clusters[name] = HostCluster(base)
        host.run([PYTHON, "-c", PROVISION, str(base), host.address], timeout=120)
        dbfixtures.load_app(self.clusters[name], DATABASE)

    def _start_application(self) -> None:
        app = self.host("app1").root
        filetrees.make_tree(self.uploads, files=40, large=False)
        (app / "config").mkdir()
        (app / "config" / "app.yml").write_text("database:\n  host: db.internal\n"
                                                "uploads: /srv/uploads\n")
        (app / "config" / "app.env").write_text("SECRET_KEY=not-a-real-secret\nDEBUG=0\n")
        code = app / "code"
        (code / "deploy").mkdir(parents=True)
        (code / "app.py").write_text("print('cosmic')\n")
        (code / "deploy" / "service.yml").write_text("replicas: 2\n")
        git = ["git", "-C", str(code), "-c", "user.name=test", "-c", "user.email=t@example.invalid"]
        for argv in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "release"],
                     ["tag", "v1.0"]):
            subprocess.run([*git, *argv], check=True, capture_output=True)
        www = app / "www"
        www.mkdir()
        (www / "health.json").write_text(json.dumps({"status": "ok"}))
        with open(self.logs / "health.log", "wb") as log:
            self.health = subprocess.Popen(self.host("app1").netns(
                [sys.executable, "-m", "http.server", str(HEALTH_PORT), "--bind",
                 HOSTS["app1"], "--directory", str(www)]), stdout=log, stderr=subprocess.STDOUT)
        # the health endpoint lives in app1's namespace: ask from there
        deadline = time.monotonic() + 30
        probe = [sys.executable, "-c", "import sys, urllib.request; urllib.request.urlopen("
                 f"'http://{HOSTS['app1']}:{HEALTH_PORT}/health.json', timeout=1)"]
        while self.host("app1").run(probe, check=False).returncode != 0:
            if time.monotonic() > deadline or self.health.poll() is not None:
                raise RuntimeError(f"the health endpoint did not start: see {self.logs}")
            time.sleep(0.1)

    def destroy_database_host(self, name: str) -> None:
        """The disaster: the server dies, its data is gone, and so is the host."""
        cluster = self.clusters[name]
        cluster.stop("immediate")
        shutil.rmtree(cluster.data_dir)
        self.network.stop_host(name)

    def close(self) -> None:
        for cluster in self.clusters.values():
            if cluster.running():
                cluster.stop("immediate")
        stop(self.health)
        stop(self.moto)
        if self.network:
            self.network.close()
            for host in self.network.hosts.values():
                if host.sshd_log.exists():
                    shutil.copy(host.sshd_log, self.logs / f"sshd-{host.name}.log")
            for host in self.network.hosts.values():  # the logs are kept, under self.root
                if (host.root / "postgresql" / "server.log").exists():
                    shutil.copy(host.root / "postgresql" / "server.log",
                                self.logs / f"postgresql-{host.name}.log")
        shutil.rmtree(self.trees, ignore_errors=True)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    fleet = Fleet(tmp_path_factory.mktemp("multihost"))
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.close()


def test_multihost_ansible_reaches_every_host_over_ssh(fleet):
    inventory = fleet.inventory("inventory", "db1")
    result = fleet.adhoc(inventory, "all", "-m", "ansible.builtin.command",
                         "-a", "ip -4 -o addr show dev eth0")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("db1", "app1"):
        [line] = [line for line in result.stdout.splitlines() if line.startswith(name + " ")]
        assert f"inet {HOSTS[name]}/24" in line  # the command ran in that host's namespace
        log = fleet.host(name).sshd_log.read_text()
        assert re.search(r"Accepted publickey for root from 198\.51\.100\.1 ", log)


def test_multihost_files_backup_and_restore_across_hosts(fleet):
    inventory = fleet.inventory("inventory", "db1")
    uploads_before = filetrees.describe(fleet.uploads)
    backup = fleet.playbook(inventory, "backup.yml", "-e", "kind=files")
    assert backup.returncode == 0, backup.stdout[-4000:]
    assert "BACKUP files: OK" in backup.stdout
    [step] = json.loads((fleet.reports / "backup-last.json").read_text())["steps"]
    assert step["host"] == "app1" and step["backup_id"]
    # damage the uploads, then restore them from S3 over the bridge
    shutil.rmtree(fleet.uploads / "d1")
    (fleet.uploads / "odd" / "with space.txt").write_bytes(b"changed\n")
    restore = fleet.playbook(inventory, "restore.yml", "-e", "kind=files", "-e", "backup=latest")
    assert restore.returncode == 0, restore.stdout[-4000:]
    assert filetrees.describe(fleet.uploads) == uploads_before
    assert_requests_from(fleet, "app1", "PUT", "GET")


def test_multihost_database_disaster_recovery_onto_db2(fleet):
    db1 = fleet.clusters["db1"]
    before, grants_before = table_fingerprints(db1), grants(db1)
    uploads_before = filetrees.describe(fleet.uploads)
    inventory = fleet.inventory("inventory", "db1")
    for kind in ("database", "files", "config", "code"):
        backup = fleet.playbook(inventory, "backup.yml", "-e", f"kind={kind}")
        assert backup.returncode == 0, backup.stdout[-4000:]
        assert f"BACKUP {kind}: OK" in backup.stdout
    assert_requests_from(fleet, "db1", "PUT")

    fleet.destroy_database_host("db1")
    shutil.rmtree(fleet.uploads)  # the uploads go with it: they must come back too
    assert subprocess.run(["ip", "netns", "exec", "app1", "bash", "-c",
                           f"exec 3<>/dev/tcp/{HOSTS['db1']}/22"], capture_output=True,
                          timeout=30, check=False).returncode != 0

    inventory = fleet.inventory("inventory-dr", "db2")
    recovery = fleet.playbook(inventory, "disaster_recovery.yml", "-e", "provision=true")
    assert recovery.returncode == 0, recovery.stdout[-6000:]
    assert "DISASTER RECOVERY from latest: OK" in recovery.stdout
    steps = json.loads((fleet.reports / "disaster-recovery-last.json").read_text())["steps"]
    where = {step["step"]: step["host"] for step in steps}
    assert where["provision a database server"] == "db2"
    assert where["restore the database"] == "db2"
    assert where["restore the uploads"] == "app1"

    db2 = fleet.clusters["db2"]
    assert table_fingerprints(db2) == before  # row by row, every table
    assert grants(db2) == grants_before  # the roles came back with their privileges
    assert filetrees.describe(fleet.uploads) == uploads_before  # byte for byte
    assert os.readlink(fleet.host("app1").root / "current").startswith(
        str(fleet.host("app1").root / "releases"))
    # db2 was reached over SSH, on its own address, and fetched the backup over the bridge
    assert re.search(r"Accepted publickey for root from 198\.51\.100\.1 ",
                     fleet.host("db2").sshd_log.read_text())
    seen = fleet.adhoc(inventory, "database", "-m", "ansible.builtin.command",
                       "-a", "ip -4 -o addr show dev eth0")
    assert seen.returncode == 0 and f"inet {HOSTS['db2']}/24" in seen.stdout, seen.stdout
    assert_requests_from(fleet, "db2", "GET")


def assert_requests_from(fleet, name: str, *methods: str) -> None:
    """moto's access log shows the host's own address: the data crossed the network."""
    log = (fleet.logs / "moto.log").read_text()
    for method in methods:
        assert re.search(rf"^{re.escape(HOSTS[name])} .*\"{method} /", log, re.M), \
            f"no {method} from {name} ({HOSTS[name]}) in {fleet.logs / 'moto.log'}"
