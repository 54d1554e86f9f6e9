"""The embedded lab: a small but real Cosmic Community Connect on this machine.

``make lab`` runs ``lab.py up``: a PostgreSQL 15 cluster (``db1``) with the
application's schema and data, a user-uploads tree, configuration files, the
application's git repository, the application itself (``app1``) behind a load
balancer, a local primary and secondary repository and a local key. It writes
``lab.json`` (read by the lab inventory) and ``lab.env`` (for a shell).

``--storage s3`` (``make lab STORAGE=s3``) keeps the backups in S3 and the keys
in KMS instead: moto's server on 127.0.0.1, one of the lab's processes, with a
primary bucket in one region and an offsite one in another (versioning, Object
Lock) and a KMS key in each region, like the Pulumi stack (docs/pulumi.md).
moto keeps them in memory: when its process stops (``lab down``), they and the
backups in them are gone.

The data comes from the benchmark's generator (``bench/data.py``): the uploads
are the reference tree (linked, not copied, from its cache) and the database
holds pgbench's tables and ``bench_documents`` beside the application's own
tables (users, posts, comments, media). ``--scale 1`` (the default) is about
1 GB of database and 1.5 GB of uploads; tests use 0.01.

The other commands are the lab's side of the playbooks: stop and start the
application, provision a new database cluster, switch the balancer, inject
the drill's disaster, keep writing to the database, and measure what came
back. Every command prints one JSON document; errors go to stderr with what
to do next, and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ansible_collections.cosmic.backup.plugins.module_utils.keys import LocalKey  # noqa: E402
from ansible_collections.cosmic.backup.plugins.module_utils.postgres_cluster import (  # noqa: E402
    TemporaryCluster,
    free_port,
)

from bench import data as bench_data  # noqa: E402
from tests.services import client_environment, moto_command, wait_for_moto  # noqa: E402

LAB_HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = ROOT / "var" / "lab"
DATABASE = "cosmic"
# STORAGE=s3: the development stack's regions and default Object Lock (Pulumi.dev.yaml).
# GOVERNANCE keeps the lab's prune working: it places delete markers, locked
# versions stay until their retention ends.
S3_BUCKETS = {"primary": ("cosmic-lab-primary", "eu-west-1"),
              "secondary": ("cosmic-lab-secondary", "eu-west-2")}
S3_PREFIX = "cosmic"
S3_LOCK = {"Mode": "GOVERNANCE", "Days": 1}
APP_TABLES = ("users", "posts", "comments", "media")

SCHEMA = """
create table users (id bigint primary key, name text not null, email text unique not null,
                    created timestamptz not null);
create table posts (id bigint primary key, user_id bigint not null references users,
                    body text not null, meta jsonb not null, created timestamptz not null);
create table comments (id bigint primary key, post_id bigint not null references posts,
                       user_id bigint not null references users, body text not null);
create table media (id bigint primary key, post_id bigint references posts,
                    path text not null, bytes bigint not null);
create table heartbeats (id bigserial primary key,
                         committed_at timestamptz not null default clock_timestamp(),
                         source text not null);
create index on posts (user_id);
create index on comments (post_id);
insert into users select i, 'user ' || i, 'user' || i || '@example.invalid',
    timestamptz '2025-01-01' + i * interval '1 minute' from generate_series(1, {users}) i;
insert into posts select i, 1 + i % {users}, repeat('post body ' || i || ' ', 8),
    jsonb_build_object('tags', jsonb_build_array('t' || i % 17, 't' || i % 5), 'likes', i % 97),
    timestamptz '2025-02-01' + i * interval '10 seconds' from generate_series(1, {posts}) i;
insert into comments select i, 1 + i % {posts}, 1 + i % {users}, 'comment ' || md5(i::text)
    from generate_series(1, {comments}) i;
do $$ begin
  if not exists (select from pg_roles where rolname = 'app_reader') then
    create role app_reader login;
  end if;
end $$;
grant select on all tables in schema public to app_reader;
"""


class LabError(Exception):
    """Something the operator has to fix; the message says what."""


# -- where things are ---------------------------------------------------------------


def lab_root(value: str | None = None) -> Path:
    return Path(value or os.environ.get("COSMIC_LAB_ROOT") or DEFAULT_ROOT).resolve()


def load_state(root: Path) -> dict:
    try:
        return json.loads((root / "lab.json").read_text())
    except FileNotFoundError:
        raise LabError(f"no lab in {root}: start it with `make lab` "
                       f"(or tools/lab/lab.py --root {root} up)") from None


def save_state(root: Path, state: dict) -> None:
    temp = root / "lab.json.partial"
    temp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(temp, root / "lab.json")
    db = state["database"]
    vault = state["vault"]
    lines = {
        "PGHOST": db["host"], "PGPORT": db["port"], "PGUSER": db["user"],
        "PGDATABASE": db["name"], "LAB_UPLOADS": state["uploads"],
        "LAB_CONFIG": state["config_dir"], "LAB_CODE": state["code"],
        "LAB_APP_URL": state["app"]["url"],
        "COSMIC_BACKUP_PRIMARY": vault["repositories"][0]["url"],
        "COSMIC_BACKUP_SECONDARY": vault["repositories"][1]["url"],
        **({"COSMIC_BACKUP_KMS_KEY_ARNS": ",".join(vault["keys"]["kms_key_arns"])}
           if "kms_key_arns" in vault["keys"]
           else {"COSMIC_BACKUP_KEY_FILE": vault["keys"].get("local_key_file", "")}),
        "COSMIC_LAB_ROOT": str(root),
        **state.get("environment", {}),
    }
    (root / "lab.env").write_text("# written by tools/lab/lab.py up; source it in a shell\n"
                                  + "".join(f"export {k}='{v}'\n" for k, v in lines.items()))


def cluster(state: dict, which: str | None = None) -> TemporaryCluster:
    db = state["database"]
    return TemporaryCluster(which or db["base_dir"], port=int(db["port"]))


# -- processes the lab owns (pid files under run/) ---------------------------------


def _pid_file(root: Path, name: str) -> Path:
    return root / "run" / f"{name}.pid"


def running_pid(root: Path, name: str) -> int | None:
    try:
        pid = int(_pid_file(root, name).read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def spawn(root: Path, name: str, argv: list[str]) -> int:
    (root / "run").mkdir(parents=True, exist_ok=True)
    log = open(root / "run" / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    _pid_file(root, name).write_text(str(process.pid))
    return process.pid


def _child_alive(pid: int) -> bool:
    """Whether a process this one spawned still runs (an exited child is reaped)."""
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:  # not our child: any live process with that pid
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def stop_process(root: Path, name: str) -> bool:
    pid = running_pid(root, name)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _pid_file(root, name).unlink(missing_ok=True)
    return True


def http_get(url: str, timeout: float = 5) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"{}")
        except ValueError:
            return error.code, {}
    except (OSError, ValueError) as error:
        return 0, {"error": str(error)}


def wait_healthy(url: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    status, body = 0, {}
    while time.monotonic() < deadline:
        status, body = http_get(url)
        if status == 200:
            return body
        time.sleep(0.05)  # a recovery waits on this: a local GET costs next to nothing
    raise LabError(f"{url} is not healthy after {timeout:.0f} s (last answer {status}: "
                   f"{json.dumps(body)[:400]}); see the logs under run/ in the lab directory")


# -- S3 and KMS on moto's server (STORAGE=s3) --------------------------------------


def s3_vault(root: Path, port: int) -> tuple[dict, dict, dict]:
    """The vault, moto's place and the AWS environment of a lab with STORAGE=s3."""
    endpoint_url = f"http://127.0.0.1:{port}"
    vault = {"repositories": [{"name": role, "url": f"s3://{bucket}/{S3_PREFIX}",
                               "endpoint_url": endpoint_url, "region": region}
                              for role, (bucket, region) in S3_BUCKETS.items()],
             "keys": {"kms_key_arns": [], "kms_endpoint_url": endpoint_url},
             "audit_log": str(root / "audit.jsonl")}
    s3 = {"port": port, "endpoint_url": endpoint_url, "provisioned": False}
    return vault, s3, client_environment(endpoint_url, S3_BUCKETS["primary"][1])


def apply_lab_environment(state: dict) -> None:
    """The lab's AWS environment (moto's, STORAGE=s3) for this process and its children.

    The database servers the lab starts inherit it, so their archive_command
    finds credentials the way a host's would (an instance profile on AWS).
    """
    os.environ.update(state.get("environment", {}))


def start_s3(root: Path, state: dict) -> dict:
    """Start moto's server and create its buckets and keys once.

    A restarted moto has forgotten them, and the backups with them: say so
    rather than hand the playbooks an empty vault under the same names.
    """
    s3 = state["s3"]
    endpoint_url = s3["endpoint_url"]
    started = False
    if running_pid(root, "moto") is None:
        pid = spawn(root, "moto", moto_command(int(s3["port"])))
        try:
            wait_for_moto(endpoint_url, lambda: _child_alive(pid))
        except RuntimeError as error:
            stop_process(root, "moto")
            raise LabError(f"{error}; see {root}/run/moto.log (is port {s3['port']} taken? "
                           f"then `make lab-down PURGE=1` and `make lab STORAGE=s3`)") from None
        started = True
    import boto3  # only the S3 lab needs it
    from botocore.exceptions import ClientError

    def client(service: str, region: str):
        return boto3.client(service, endpoint_url=endpoint_url, region_name=region)

    vault = state["vault"]
    missing = []
    for bucket, region in S3_BUCKETS.values():
        try:
            client("s3", region).head_bucket(Bucket=bucket)
        except ClientError:
            missing.append(bucket)
    for arn in vault["keys"]["kms_key_arns"]:
        try:
            client("kms", arn.split(":")[3]).describe_key(KeyId=arn)
        except ClientError:
            missing.append(f"KMS key {arn.rsplit('/', 1)[-1]}")
    if s3["provisioned"] and missing:
        raise LabError(
            f"moto's server at {endpoint_url} no longer has {', '.join(missing)}: moto keeps "
            "its buckets and keys in memory, so they went when its process stopped (lab down, "
            "a reboot, a crash), and every backup of this lab went with them. Rebuild the "
            "lab: `make lab-down PURGE=1` then `make lab STORAGE=s3`")
    for bucket, region in S3_BUCKETS.values():
        if bucket in missing:
            bucket_client = client("s3", region)
            bucket_client.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region},
                ObjectLockEnabledForBucket=True)
            bucket_client.put_bucket_versioning(Bucket=bucket,
                                                VersioningConfiguration={"Status": "Enabled"})
            bucket_client.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": S3_LOCK}})
    if not vault["keys"]["kms_key_arns"]:
        vault["keys"]["kms_key_arns"] = [
            client("kms", region).create_key(
                Description=f"cosmic-backup lab, {role} region")["KeyMetadata"]["Arn"]
            for role, (_bucket, region) in S3_BUCKETS.items()]
    s3["provisioned"] = True
    return {"endpoint_url": endpoint_url, "started": started, "created": missing}


# -- building the lab ----------------------------------------------------------------


def _write_config(state: dict) -> list[str]:
    config = Path(state["config_dir"])
    config.mkdir(parents=True, exist_ok=True)
    db = state["database"]
    files = {
        "app.ini": (f"[app]\nsite_name = Cosmic Community Connect (lab)\n"
                    f"database_host = {db['host']}\ndatabase_port = {db['port']}\n"
                    f"database_user = {db['user']}\ndatabase_name = {db['name']}\n"
                    f"uploads = {state['uploads']}\n"
                    f"health_upload = {state['app']['health_upload']}\n"),
        "features.json": json.dumps({"comments": True, "media": True, "max_upload_mb": 50},
                                    indent=2) + "\n",
        "site.yml": "---\nlocale: en\nmoderation:\n  queue: default\n  auto_hide_reports: 3\n",
        "app.env": f"SESSION_SECRET={hashlib.sha256(os.urandom(32)).hexdigest()}\n"
                   "MAIL_FROM=noreply@example.invalid\n",
    }
    for name, text in files.items():
        (config / name).write_text(text)
    (config / "app.env").chmod(0o600)
    return [str(config / name) for name in sorted(files)]


def _git(repository: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "lab", "GIT_AUTHOR_EMAIL": "lab@example.invalid",
           "GIT_COMMITTER_NAME": "lab", "GIT_COMMITTER_EMAIL": "lab@example.invalid"}
    return subprocess.run(["git", "-C", str(repository), *args], check=True, env=env,
                          capture_output=True, text=True).stdout.strip()


def _write_code(state: dict) -> None:
    code = Path(state["code"])
    if (code / ".git").is_dir():
        return
    (code / "deploy").mkdir(parents=True, exist_ok=True)
    shutil.copy(LAB_HERE / "app.py", code / "app.py")
    (code / "deploy" / "cosmic-app.service").write_text(
        "[Unit]\nDescription=Cosmic Community Connect\n\n[Service]\n"
        "ExecStart=/usr/bin/python3 /srv/cosmic/app.py --config /etc/cosmic/app.ini "
        "--port 8080\nRestart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n")
    (code / "README.md").write_text("# Cosmic Community Connect (lab)\n")
    _git(code, "init", "-q", "-b", "main")
    _git(code, "add", ".")
    _git(code, "commit", "-q", "-m", "Cosmic Community Connect, lab release")
    _git(code, "tag", "v1.0.0")


def _load_database(db_cluster: TemporaryCluster, scale: float, uploads: Path) -> None:
    users = max(200, round(20000 * scale))
    posts, comments = users * 5, users * 10
    db_cluster.psql(f"create database {DATABASE}")
    db_cluster.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", DATABASE],
                   input=SCHEMA.format(users=users, posts=posts, comments=comments).encode(),
                   timeout=7200)
    rows = []
    for number, path in enumerate(sorted(p for p in uploads.rglob("*") if p.is_file()), 1):
        relative = path.relative_to(uploads).as_posix().replace("\t", " ")
        rows.append(f"{number}\t{1 + number % posts}\t{relative}\t{path.stat().st_size}\n")
    db_cluster.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", DATABASE, "-c",
                    "copy media from stdin"], input="".join(rows).encode())
    # the bulk of the data: the benchmark's pgbench tables and documents
    db_cluster.run(["pgbench", "-i", "-q", "-s", str(bench_data.pgbench_scale(scale)),
                    DATABASE], timeout=7200)
    words = ", ".join(f"'{word}'" for word in bench_data.WORDS[:2000])
    db_cluster.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", DATABASE],
                   input=bench_data.DOCUMENTS_SQL.format(
                       words=words, rows=bench_data.document_rows(scale)).encode(),
                   timeout=7200)
    db_cluster.psql("grant select on all tables in schema public to app_reader", DATABASE)
    db_cluster.psql("checkpoint")


def _link_tree(source: str, target: Path) -> None:
    """The uploads: hard links to the generator's cached tree (a copy if links fail)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    if subprocess.run(["cp", "-al", source, str(partial)], capture_output=True).returncode:
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run(["cp", "-a", source, str(partial)], check=True)
    os.replace(partial, target)


def start_app(root: Path, state: dict, name: str, code: str | None = None) -> dict:
    """Start an application instance (``app1``, ``app2``) from a code checkout."""
    port = state["app"]["ports"][name]
    known = state["app"]["instances"].get(name, {})
    if code and known.get("code") != str(code):
        stop_process(root, name)  # another release: restart the instance on it
    if running_pid(root, name) is None:
        app = Path(code or state["code"]) / "app.py"
        if not app.is_file():
            raise LabError(f"{app} does not exist: restore the application's code first")
        spawn(root, name, [sys.executable, str(app), "--config",
                           str(Path(state["config_dir"]) / "app.ini"), "--port", str(port)])
    state["app"]["instances"][name] = {"port": port, "code": str(code or state["code"])}
    return {"instance": name, "url": f"http://127.0.0.1:{port}/health"}


def start_balancer(root: Path, state: dict) -> None:
    upstream = Path(state["app"]["upstream_file"])
    instance = next((name for name, port in state["app"]["ports"].items()
                     if upstream.exists() and upstream.read_text().strip() == f"127.0.0.1:{port}"),
                    None)
    if instance is None or running_pid(root, instance) is None:
        # a drill's recovered instance that no longer runs: back to the lab's own
        upstream.write_text(f"127.0.0.1:{state['app']['ports']['app1']}\n")
    if running_pid(root, "balancer") is None:
        spawn(root, "balancer", [sys.executable, str(LAB_HERE / "balancer.py"),
                                 "--upstream-file", str(upstream),
                                 "--port", str(state["app"]["ports"]["balancer"])])


def _postgres_ids() -> tuple[int, int]:
    owner = pwd.getpwnam("postgres")
    return owner.pw_uid, owner.pw_gid


def _prepare_archiving(root: Path, state: dict, db_cluster: TemporaryCluster) -> None:
    """What the server's archive_command (run as postgres) needs on this host.

    The postgresql_archiving role (ansible/archiving.yml) configures the server;
    here the lab lets the postgres user read the key and write WAL into the
    local repositories, as an instance profile or a bucket policy would on AWS
    (with STORAGE=s3 the server inherits the lab's AWS environment instead).
    """
    uid, gid = _postgres_ids() if os.geteuid() == 0 else (os.getuid(), os.getgid())
    conf = Path(db_cluster.data_dir, "postgresql.conf")
    if "include_dir = 'conf.d'" not in conf.read_text():
        db_cluster.run(["/bin/sh", "-c", f"mkdir -p {db_cluster.data_dir}/conf.d && echo "
                                         f"\"include_dir = 'conf.d'\" >> {conf}"])
    if state.get("storage", "local") == "local":  # S3: the AWS environment is the grant
        key = Path(state["vault"]["keys"]["local_key_file"])
        for path, mode in ((key.parent, 0o750), (key, 0o640)):
            os.chown(path, 0 if os.geteuid() == 0 else uid, gid)
            os.chmod(path, mode)
        for repository in state["vault"]["repositories"]:
            wal = Path(repository["url"], "backups", "wal")
            wal.mkdir(parents=True, exist_ok=True)
            for path in (wal.parents[1], wal.parent, wal):
                os.chown(path, uid, gid)
    host = root / "host"
    for path in (host, host / "log"):
        path.mkdir(parents=True, exist_ok=True)
    os.chown(host / "log", uid, gid)


def start_database(db_cluster: TemporaryCluster) -> None:
    """Start the lab's server on its own port and socket, and wait until it takes writes.

    A data directory restored from another server's base backup carries that
    server's port and socket in postgresql.auto.conf: this host's settings win.
    """
    auto = Path(db_cluster.data_dir, "postgresql.auto.conf")
    own = {"port": str(db_cluster.port),
           "unix_socket_directories": f"'{db_cluster.socket_dir}'"}
    if not all(f"{name} = {value}\n" in auto.read_text() for name, value in own.items()):
        db_cluster.write_settings(own)
    os.makedirs(db_cluster.socket_dir, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(db_cluster.socket_dir, *_postgres_ids())
    db_cluster.start()
    db_cluster.wait_until_writable(3600)


def command_db(args) -> dict:
    """Stop, start, restart or reload the lab's current database server."""
    root = lab_root(args.root)
    state = load_state(root)
    db_cluster = cluster(state)
    if not Path(db_cluster.data_dir, "PG_VERSION").exists():
        raise LabError(f"no database cluster in {db_cluster.base_dir}: provision one first "
                       "(lab.py provision-db)")
    running = db_cluster.running()
    if args.action in ("stop", "restart") and running:
        db_cluster.stop()
    if args.action == "restart" or (args.action == "start" and not running):
        start_database(db_cluster)
    if args.action == "reload":
        if not running:
            raise LabError("the database server is not running: nothing to reload "
                           "(lab.py db start)")
        db_cluster.run(["pg_ctl", "-D", db_cluster.data_dir, "reload"])
    return {"database": state["database"]["host_name"], "base_dir": db_cluster.base_dir,
            "port": db_cluster.port, "action": args.action,
            "running": db_cluster.running()}


def command_up(args) -> dict:
    root = lab_root(args.root)
    root.mkdir(parents=True, exist_ok=True)
    if (root / "lab.json").exists():
        state = load_state(root)
        if float(state["scale"]) != args.scale:
            raise LabError(f"the lab in {root} was built at scale {state['scale']}, not "
                           f"{args.scale}: run `make lab-down PURGE=1` first to rebuild it")
        if state.get("storage", "local") != args.storage:
            raise LabError(f"the lab in {root} keeps its backups in {state.get('storage')} "
                           f"storage, not {args.storage}: run `make lab-down PURGE=1` first "
                           f"to rebuild it with STORAGE={args.storage}")
    else:
        tree = bench_data.prepare_tree(args.scale, log=lambda text: print(text, file=sys.stderr))
        files = sorted(p for p in Path(tree.path, "uploads").rglob("*") if p.is_file())
        ports = {name: free_port() for name in ("app1", "app2", "balancer")}
        state = {
            "root": str(root), "scale": args.scale, "storage": args.storage,
            "created": datetime.now(timezone.utc).isoformat(),
            "database": {"host": "127.0.0.1", "port": free_port(), "user": "postgres",
                         "name": DATABASE, "base_dir": str(root / "db1"), "host_name": "db1"},
            "uploads": str(root / "uploads"),
            "uploads_source": tree.path,
            "config_dir": str(root / "config"),
            "code": str(root / "code"),
            "app": {"ports": ports, "instances": {},
                    "url": f"http://127.0.0.1:{ports['balancer']}/health",
                    "upstream_file": str(root / "run" / "upstream"),
                    "health_upload": files[0].relative_to(tree.path).as_posix()},
            "vault": {"repositories": [
                {"name": "primary", "url": str(root / "repositories" / "primary")},
                {"name": "secondary", "url": str(root / "repositories" / "secondary")}],
                "keys": {"local_key_file": str(root / "keys" / "master.key")},
                "audit_log": str(root / "audit.jsonl")},
        }
        if args.storage == "s3":
            state["vault"], state["s3"], state["environment"] = s3_vault(root, free_port())
        state["config_files"] = _write_config(state)
        (root / "run").mkdir(exist_ok=True)
        save_state(root, state)
    apply_lab_environment(state)
    s3 = None
    if args.storage == "s3":
        s3 = start_s3(root, state)
        save_state(root, state)
    else:
        key_file = Path(state["vault"]["keys"]["local_key_file"])
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            LocalKey.generate().save(str(key_file))
    if not Path(state["uploads"]).is_dir():
        _link_tree(state["uploads_source"], Path(state["uploads"]))
    if not Path(state["config_dir"], "app.ini").exists():
        state["config_files"] = _write_config(state)
    _write_code(state)
    db_cluster = cluster(state)
    if not Path(db_cluster.data_dir, "PG_VERSION").exists():
        shutil.rmtree(db_cluster.base_dir, ignore_errors=True)
        print(f"lab: creating the database at scale {args.scale} in {db_cluster.base_dir}",
              file=sys.stderr)
        db_cluster.init().start()
        _load_database(db_cluster, args.scale, Path(state["uploads"]))
    elif not db_cluster.running():
        start_database(db_cluster)
    _prepare_archiving(root, state, db_cluster)
    start_app(root, state, "app1")
    start_balancer(root, state)
    save_state(root, state)
    wait_healthy(state["app"]["url"], 60)
    return {**status(root, state), **({"s3": s3} if s3 else {})}


def status(root: Path, state: dict) -> dict:
    code, body = http_get(state["app"]["url"])
    return {"root": str(root), "scale": state["scale"], "url": state["app"]["url"],
            "storage": state.get("storage", "local"),
            "repositories": [repository["url"] for repository in state["vault"]["repositories"]],
            "healthy": code == 200, "health": body,
            "database": {k: state["database"][k] for k in ("host", "port", "name", "base_dir")},
            "processes": {name: running_pid(root, name)
                          for name in ("app1", "app2", "balancer", "writer", "moto")},
            "env": str(root / "lab.env")}


def command_status(args) -> dict:
    root = lab_root(args.root)
    return status(root, load_state(root))


def command_down(args) -> dict:
    root = lab_root(args.root)
    if not (root / "lab.json").exists():
        return {"root": str(root), "stopped": [], "purged": False}
    state = load_state(root)
    stopped = [name for name in ("writer", "balancer", "app2", "app1")
               if stop_process(root, name)]
    for base in {state["database"]["base_dir"], str(root / "db1"), str(root / "db2")}:
        if Path(base, "data", "postmaster.pid").exists():
            cluster(state, base).stop()
            stopped.append(Path(base).name)
    # after the database: its last archive_command may still be writing WAL to S3
    if stop_process(root, "moto"):
        stopped.append("moto")
    if args.purge:
        for name in ("db1", "db2", "uploads", "config", "code", "releases", "run",
                     "repositories", "keys", "state", "safety"):
            shutil.rmtree(root / name, ignore_errors=True)
        for name in ("lab.json", "lab.env", "audit.jsonl"):
            (root / name).unlink(missing_ok=True)
    result = {"root": str(root), "stopped": stopped, "purged": bool(args.purge)}
    if "moto" in stopped and not args.purge:
        result["note"] = ("moto keeps its buckets and keys in memory: this lab's S3 backups "
                          "and KMS keys are gone; `make lab-down PURGE=1` and "
                          "`make lab STORAGE=s3` build it again")
    return result


# -- the playbooks' side -------------------------------------------------------------


def command_app(args) -> dict:
    root = lab_root(args.root)
    state = load_state(root)
    if args.action == "stop":
        result = {"instance": args.name, "stopped": stop_process(root, args.name)}
    else:
        result = start_app(root, state, args.name, args.code)
        wait_healthy(result["url"], args.timeout)
    save_state(root, state)
    return result


def command_switch(args) -> dict:
    """Point the balancer at an application instance (the lab's traffic switch)."""
    root = lab_root(args.root)
    state = load_state(root)
    port = state["app"]["ports"][args.name]
    upstream = Path(state["app"]["upstream_file"])
    previous = upstream.read_text().strip() if upstream.exists() else None
    temp = upstream.with_name("upstream.partial")
    temp.write_text(f"127.0.0.1:{port}\n")
    os.replace(temp, upstream)
    start_balancer(root, state)
    body = wait_healthy(state["app"]["url"], args.timeout)
    return {"upstream": f"127.0.0.1:{port}", "previous": previous, "health": body,
            "healthy_at": datetime.now(timezone.utc).isoformat()}


def command_provision_db(args) -> dict:
    """A new, empty PostgreSQL cluster where the database will be recovered."""
    root = lab_root(args.root)
    state = load_state(root)
    base = str(root / args.name)
    new = cluster(state, base)
    if new.running():
        raise LabError(f"a database cluster is already running in {base}: stop it or "
                       "choose another name")
    shutil.rmtree(base, ignore_errors=True)
    new.init().start()
    new.wait_until_writable(120)
    state["database"].update(base_dir=base, host_name=args.name)
    save_state(root, state)
    return {"host": args.name, "base_dir": base, "port": new.port}


def _database_fingerprint(db_cluster: TemporaryCluster) -> dict:
    tables = db_cluster.psql(
        "select string_agg(tablename, ',' order by tablename) from pg_tables "
        "where schemaname = 'public' and tablename <> 'heartbeats'", DATABASE).split(",")
    result = {}
    for table in tables:
        count, total = db_cluster.psql(
            f"select count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)"
            f"::bigint), 0) from {table} t", DATABASE).split("|")
        result[table] = {"rows": int(count), "sum": total}
    result["grants:app_reader"] = db_cluster.psql(
        "select count(*) from information_schema.role_table_grants "
        "where grantee = 'app_reader'", DATABASE)
    return result


def _heartbeats(db_cluster: TemporaryCluster) -> dict:
    count, last = db_cluster.psql(
        "select count(*), coalesce(to_char(max(committed_at) at time zone 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"'), '') from heartbeats", DATABASE).split("|")
    return {"rows": int(count), "last_commit": last or None}


def fingerprint(state: dict, *, database: bool = True) -> dict:
    config = {Path(path).name: hashlib.sha256(Path(path).read_bytes()).hexdigest()
              for path in state["config_files"] if Path(path).exists()}
    result = {
        "uploads": bench_data.digest_directory(state["uploads"])
        if Path(state["uploads"]).is_dir() else None,
        "config": config,
        "code": _git(Path(state["code"]), "rev-parse", "HEAD")
        if Path(state["code"], ".git").exists() else None,
    }
    if database:
        db_cluster = cluster(state)
        result["database"] = _database_fingerprint(db_cluster)
        result["heartbeats"] = _heartbeats(db_cluster)
    return result


def command_writer(args) -> dict:
    """Keep committing a heartbeat row every ``--interval`` seconds (in the background)."""
    root = lab_root(args.root)
    state = load_state(root)
    if args.action == "stop":
        return {"writer": "stopped" if stop_process(root, "writer") else "not running"}
    if args.action == "start":
        if running_pid(root, "writer") is None:
            spawn(root, "writer", [sys.executable, __file__, "--root", str(root), "writer",
                                   "run", "--interval", str(args.interval)])
        return {"writer": running_pid(root, "writer")}
    db_cluster = cluster(state)
    psql = subprocess.Popen(db_cluster._as_owner([f"{db_cluster.bindir}/psql", "-XAtq", "-d",
                                                  DATABASE]),
                            stdin=subprocess.PIPE, env=db_cluster.environment(), text=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while psql.poll() is None:
        try:
            psql.stdin.write("insert into heartbeats (source) values ('lab writer');\n")
            psql.stdin.flush()
        except (BrokenPipeError, OSError):
            break
        time.sleep(args.interval)
    return {"writer": "stopped", "returncode": psql.returncode}


def command_disaster(args) -> dict:
    """The drill's disaster: the database cluster, the uploads and the configuration go.

    What was there is recorded first (fingerprints, the heartbeat count), so
    that the drill can say what came back and what was lost.
    """
    root = lab_root(args.root)
    state = load_state(root)
    before = fingerprint(state)
    db_cluster = cluster(state)
    postmaster = bench_data._running_port(db_cluster.data_dir) and int(
        Path(db_cluster.data_dir, "postmaster.pid").read_text().split()[0])
    db_cluster.stop("immediate")
    if postmaster:  # the server, gone for certain: the new one takes over its port
        with contextlib.suppress(ProcessLookupError):
            os.kill(postmaster, signal.SIGKILL)
    at = datetime.now(timezone.utc)
    stop_process(root, "writer")
    shutil.rmtree(db_cluster.base_dir, ignore_errors=True)
    shutil.rmtree(state["uploads"], ignore_errors=True)
    shutil.rmtree(state["config_dir"], ignore_errors=True)
    record = {"disaster_at": at.isoformat(), "before": before,
              "destroyed": [db_cluster.base_dir, state["uploads"], state["config_dir"]]}
    (root / "disaster.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def command_measure(args) -> dict:
    """What came back after a recovery, compared with what the disaster destroyed."""
    root = lab_root(args.root)
    state = load_state(root)
    record = json.loads(Path(args.disaster or root / "disaster.json").read_text())
    before = record["before"]
    after = fingerprint(state)
    disaster_at = datetime.fromisoformat(record["disaster_at"])
    last = after["heartbeats"]["last_commit"]
    rpo = (disaster_at - datetime.fromisoformat(last)).total_seconds() if last else None
    comparisons = []
    for table, value in sorted(before["database"].items()):
        got = after["database"].get(table)
        comparisons.append({"what": f"table {table}" if ":" not in table else table,
                            "before": value, "after": got, "equal": value == got})
    for part in ("uploads", "config", "code"):
        comparisons.append({"what": part, "before": before[part], "after": after[part],
                            "equal": before[part] == after[part]})
    lost = before["heartbeats"]["rows"] - after["heartbeats"]["rows"]
    return {"disaster_at": record["disaster_at"], "rpo_seconds": rpo,
            "last_recovered_commit": last,
            "last_commit_before_disaster": before["heartbeats"]["last_commit"],
            "heartbeats_before": before["heartbeats"]["rows"],
            "heartbeats_after": after["heartbeats"]["rows"], "heartbeats_lost": lost,
            "comparisons": comparisons,
            "all_equal": all(item["equal"] for item in comparisons)}


def command_health(args) -> dict:
    state = load_state(lab_root(args.root))
    url = args.url or state["app"]["url"]
    body = wait_healthy(url, args.timeout)
    return {"url": url, "health": body, "healthy_at": datetime.now(timezone.utc).isoformat()}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="lab.py", description=__doc__.splitlines()[0])
    root.add_argument("--root", help="lab directory (default $COSMIC_LAB_ROOT or var/lab)")
    commands = root.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="build (once) and start the lab")
    up.add_argument("--scale", type=float, default=float(os.environ.get("SCALE") or 1.0))
    up.add_argument("--storage", choices=("local", "s3"),
                    default=os.environ.get("STORAGE") or "local")
    up.set_defaults(func=command_up)
    down = commands.add_parser("down", help="stop the lab (--purge: and delete it)")
    down.add_argument("--purge", action="store_true")
    down.set_defaults(func=command_down)
    commands.add_parser("status", help="what runs, and is it healthy").set_defaults(
        func=command_status)
    app = commands.add_parser("app", help="stop or start an application instance")
    app.add_argument("action", choices=("start", "stop"))
    app.add_argument("--name", default="app1", choices=("app1", "app2"))
    app.add_argument("--code", help="the checkout to run (default: the lab's repository)")
    app.add_argument("--timeout", type=float, default=60)
    app.set_defaults(func=command_app)
    switch = commands.add_parser("switch", help="point the balancer at an instance")
    switch.add_argument("--name", default="app2", choices=("app1", "app2"))
    switch.add_argument("--timeout", type=float, default=60)
    switch.set_defaults(func=command_switch)
    db = commands.add_parser("db", help="stop, start or restart the database server")
    db.add_argument("action", choices=("start", "stop", "restart", "reload"))
    db.set_defaults(func=command_db)
    provision = commands.add_parser("provision-db", help="a new, empty database cluster")
    provision.add_argument("--name", default="db2")
    provision.set_defaults(func=command_provision_db)
    writer = commands.add_parser("writer", help="keep writing heartbeats to the database")
    writer.add_argument("action", choices=("start", "stop", "run"))
    writer.add_argument("--interval", type=float, default=0.5)
    writer.set_defaults(func=command_writer)
    commands.add_parser("disaster", help="destroy the database, uploads and configuration"
                        ).set_defaults(func=command_disaster)
    measure = commands.add_parser("measure", help="compare what came back with the disaster")
    measure.add_argument("--disaster", help="the disaster record (default: disaster.json)")
    measure.set_defaults(func=command_measure)
    health = commands.add_parser("health", help="wait until the application is healthy")
    health.add_argument("--url")
    health.add_argument("--timeout", type=float, default=60)
    health.set_defaults(func=command_health)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if (lab_root(args.root) / "lab.json").exists():  # every server it starts inherits it
            apply_lab_environment(load_state(lab_root(args.root)))
        result = args.func(args)
    except LabError as error:
        print(f"lab: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
