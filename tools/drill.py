"""The foundation DR drill: back up a real PostgreSQL database into the lab's
primary and secondary repositories, destroy the cluster, recover it onto a new
one from the backups alone, and prove that the data came back.

This is the first brick of the quarterly drill (the playbook-driven drill with
uploads, configuration, code and RTO/RPO reports builds on it).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml
from ansible_collections.cosmic.backup.plugins.module_utils.keys import LocalKey
from ansible_collections.cosmic.backup.plugins.module_utils.postgres_cluster import (
    TemporaryCluster,
)
from ansible_collections.cosmic.backup.plugins.module_utils.settings import build_vault

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "var" / "lab"
REPORTS = ROOT / "var" / "reports"
CLI = str(ROOT / "bin" / "cosmic-backup")

SCHEMA = """
create table users (id bigint primary key, name text not null, email text unique not null,
                    created timestamptz not null);
create table posts (id bigint primary key, user_id bigint not null references users,
                    body text not null, meta jsonb not null, created timestamptz not null);
create table comments (id bigint primary key, post_id bigint not null references posts,
                       user_id bigint not null references users, body text not null);
create table media (id bigint primary key, post_id bigint references posts,
                    path text not null, bytes bigint not null, sha256 text not null);
create index on posts (user_id);
create index on comments (post_id);
insert into users select i, 'user ' || i, 'user' || i || '@example.invalid',
    timestamptz '2025-01-01' + i * interval '1 minute' from generate_series(1, 20000) i;
insert into posts select i, 1 + i % 20000, repeat('post body ' || i || ' ', 8),
    jsonb_build_object('tags', jsonb_build_array('t' || i % 17, 't' || i % 5), 'likes', i % 97),
    timestamptz '2025-02-01' + i * interval '10 seconds' from generate_series(1, 100000) i;
insert into comments select i, 1 + i % 100000, 1 + i % 20000, 'comment ' || md5(i::text)
    from generate_series(1, 200000) i;
insert into media select i, 1 + i % 100000, 'uploads/' || i % 100 || '/' || i || '.jpg',
    1000 + i * 7 % 500000, md5(i::text) || md5((i + 1)::text) from generate_series(1, 30000) i;
create role app_reader login;
grant select on all tables in schema public to app_reader;
"""
TABLES = ("users", "posts", "comments", "media")


def lab_settings() -> Path:
    """The lab's settings: local primary and secondary repositories and a local key."""
    LAB.mkdir(parents=True, exist_ok=True)
    config = LAB / "config.yml"
    settings = {
        "repositories": [{"name": "primary", "url": str(LAB / "repositories" / "primary")},
                         {"name": "secondary", "url": str(LAB / "repositories" / "secondary")}],
        "keys": {"local_key_file": str(LAB / "keys" / "master.key")},
        "audit_log": str(LAB / "audit.jsonl"),
    }
    config.write_text(yaml.safe_dump(settings))
    key_file = Path(settings["keys"]["local_key_file"])
    if not key_file.exists():
        LocalKey.generate().save(str(key_file))
    return config


def fingerprint(cluster: TemporaryCluster) -> dict[str, str]:
    """Row count and an order-independent checksum of every table."""
    result = {}
    for table in TABLES:
        result[table] = cluster.psql(
            f"select count(*) || ' rows, md5 ' || md5(string_agg(md5(t::text), '' "
            f"order by md5(t::text))) from {table} t", "cosmic")
    result["roles"] = cluster.psql(
        "select string_agg(grantee || ':' || privilege_type, ',' order by grantee, "
        "privilege_type, table_name) from information_schema.role_table_grants "
        "where grantee = 'app_reader'", "cosmic")
    return result


class Phases:
    """Named, timed steps of the drill, for the report."""

    def __init__(self):
        self.rows: list[tuple[str, float, str]] = []

    @contextlib.contextmanager
    def step(self, name: str, detail: str = ""):
        print(f"==> {name}", flush=True)
        started = time.monotonic()
        yield
        self.rows.append((name, time.monotonic() - started, detail))


def pipe(producer: list[str], consumer: list[str], env: dict) -> None:
    """producer | consumer, failing if either side fails."""
    first = subprocess.Popen(producer, stdout=subprocess.PIPE, env=env)
    second = subprocess.run(consumer, stdin=first.stdout, env=env, capture_output=True)
    first.stdout.close()
    if first.wait() != 0 or second.returncode != 0:
        raise SystemExit(f"drill failed: {' '.join(producer)} | {' '.join(consumer)}: "
                         f"{second.stderr.decode().strip()}")


def main() -> int:
    config = lab_settings()
    vault = build_vault(yaml.safe_load(config.read_text()))
    phases = Phases()
    workdir = LAB / "drill"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)

    source = TemporaryCluster(str(workdir / "db1"))
    with phases.step("start the production database (PostgreSQL 15)", f"port {source.port}"):
        source.init().start()
    with phases.step("load the application's data", "users, posts, comments, media, a role"):
        source.psql("create database cosmic")
        source.psql(SCHEMA, "cosmic")
    before = fingerprint(source)

    with phases.step("back up the database into primary and secondary"):
        env = source.environment()
        with vault.new_backup("database", {"database": "cosmic"}) as backup:
            for name, argv in (("dump", ["pg_dump", "-Fc", "-Z0", "-d", "cosmic"]),
                               ("globals", ["pg_dumpall", "--globals-only"])):
                tool = subprocess.Popen([f"{source.bindir}/{argv[0]}", *argv[1:]],
                                        stdout=subprocess.PIPE, env=env)
                backup.add_stream(name, tool.stdout)
                if tool.wait() != 0:
                    raise SystemExit(f"drill failed: {argv[0]} exited with {tool.returncode}")
    backup_id = vault.select("latest", "database").id
    with phases.step("verify every stored copy", backup_id):
        report = vault.verify(vault.select(backup_id))
        if not report.ok:
            raise SystemExit(f"drill failed: {report.first_failure()}")

    disaster = datetime.now(timezone.utc)
    with phases.step("DISASTER: the database cluster is destroyed"):
        source.destroy()
        shutil.rmtree(source.base_dir, ignore_errors=True)

    target = TemporaryCluster(str(workdir / "db2"))
    with phases.step("provision a new database cluster", f"port {target.port}"):
        target.init().start()
    restore = [CLI, "--config", str(config), "restore-stream", backup_id, "--name"]
    with phases.step("restore roles and the database from the backup"):
        env = target.environment()
        pipe([*restore, "globals"], [f"{target.bindir}/psql", "-X", "-q", "-o", "/dev/null"],
             env)
        target.psql("create database cosmic")
        dump_file = workdir / "db2" / "cosmic.dump"
        subprocess.run([*restore, "dump", "--output", str(dump_file)], check=True)
        dump_file.chmod(0o644)
        target.run(["pg_restore", "-d", "cosmic", "-j", "2", str(dump_file)])
    with phases.step("compare every table with the original"):
        after = fingerprint(target)
    recovered = datetime.now(timezone.utc)
    target.destroy()

    same = before == after
    lines = [
        f"# DR drill (foundation) {disaster:%Y-%m-%d %H:%M} UTC",
        "",
        f"Backup used: `{backup_id}` (primary and secondary, both verified).",
        "",
        "| phase | seconds | detail |",
        "|---|---:|---|",
        *[f"| {name} | {seconds:.1f} | {detail} |" for name, seconds, detail in phases.rows],
        "",
        f"Recovery time, disaster to verified data: {(recovered - disaster).total_seconds():.1f} s",
        "",
        "| table | before | after | |",
        "|---|---|---|---|",
        *[f"| {table} | {before[table]} | {after[table]} | "
          f"{'equal' if before[table] == after[table] else 'DIFFERENT'} |" for table in before],
        "",
        f"Result: {'PASS: every table and grant came back equal' if same else 'FAIL'}",
        "",
        "Not yet in this drill: uploads, configuration, code, WAL replay and the RPO "
        "measurement (issues 3-5).",
    ]
    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / f"drill-{disaster:%Y%m%dT%H%M%SZ}.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nreport written to {path.relative_to(ROOT)}")
    return 0 if same else 2


if __name__ == "__main__":
    sys.exit(main())
