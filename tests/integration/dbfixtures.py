"""A small application database on real PostgreSQL 15, and ways to compare two."""

from __future__ import annotations

import json
import subprocess

from ansible_collections.cosmic.backup.plugins.module_utils.pg_tools import Connection
from ansible_collections.cosmic.backup.plugins.module_utils.postgres_cluster import (
    TemporaryCluster,
)

APP_SCHEMA = """
create role app_owner nologin;
create role app_reader login password 'reader-secret';
create role app_writer login in role app_reader;
create schema app authorization app_owner;
create table app.users (id bigserial primary key, name text not null, email text unique,
                        created timestamptz not null default now());
create table app.posts (id bigint generated always as identity primary key,
                        user_id bigint not null references app.users,
                        body text not null, meta jsonb not null default '{}');
create index posts_meta on app.posts using gin (meta);
create index posts_user on app.posts (user_id);
create table public."Odd Name|x" (k text primary key, v numeric(12, 2));
create view app.user_post_counts as
  select u.id, count(p.id) from app.users u left join app.posts p on p.user_id = u.id
  group by u.id;
create function app.post_count(bigint) returns bigint language sql stable
  as 'select count(*) from app.posts where user_id = $1';
insert into app.users (name, email, created)
  select 'user ' || i, 'u' || i || '@example.invalid',
         timestamptz '2025-01-01' + i * interval '1 minute' from generate_series(1, 3000) i;
insert into app.posts (user_id, body, meta)
  select 1 + i % 3000, repeat('text ' || i, 5), jsonb_build_object('likes', i % 13)
  from generate_series(1, 12000) i;
insert into public."Odd Name|x" select 'k' || i, i / 7.0 from generate_series(1, 500) i;
alter table app.users owner to app_owner;
alter table app.posts owner to app_owner;
grant usage on schema app to app_reader;
grant select on all tables in schema app to app_reader;
grant insert, update on app.posts to app_writer;
grant connect, temporary on database {database} to app_reader;
"""


def load_app(cluster: TemporaryCluster, database: str = "app") -> None:
    cluster.psql(f'create database "{database}"')
    cluster.psql(APP_SCHEMA.replace("{database}", f'"{database}"'), database)


def connection(cluster: TemporaryCluster, database: str = "app", **extra) -> Connection:
    extra.setdefault("user", "postgres")
    return Connection(host="127.0.0.1", port=cluster.port, database=database, **extra)


def dump_sql(cluster: TemporaryCluster, database: str, *extra: str) -> str:
    """pg_dump's plain SQL of a database: equal dumps mean equal schema and data."""
    result = subprocess.run(
        [f"{cluster.bindir}/pg_dump", "--no-sync", *extra, "-d", database],
        capture_output=True, env=cluster.environment(), check=True)
    # \restrict lines carry a random key per run (CVE-2025-8714): not content
    return "".join(line for line in result.stdout.decode().splitlines(keepends=True)
                   if not line.startswith(("\\restrict ", "\\unrestrict ")))


def fingerprint(cluster: TemporaryCluster, database: str = "app") -> str:
    """Row counts and an order-independent checksum of the application's tables."""
    return cluster.psql(
        "select string_agg(t || ':' || n, ',' order by t) from ("
        " select 'users' t, count(*) || md5(string_agg(u::text, '' order by id)) n "
        "   from app.users u union all"
        " select 'posts', count(*) || md5(string_agg(p::text, '' order by id)) "
        "   from app.posts p) s", database)


def frozen_tables(cluster: TemporaryCluster, database: str) -> dict[str, bool]:
    """Each table with rows: are all its pages all-frozen?"""
    cluster.psql("create extension if not exists pg_visibility", database)
    return json.loads(cluster.psql(
        "select json_object_agg(name, frozen) from (select c.oid::regclass::text as name, "
        "bool_and(v.all_frozen) as frozen from pg_class c cross join pg_visibility_map(c.oid) v "
        "where c.relkind = 'r' and c.relnamespace::regnamespace::text "
        "not in ('pg_catalog', 'information_schema') "
        "group by 1) t", database))


def databases(cluster: TemporaryCluster) -> set[str]:
    return set(cluster.psql("select datname from pg_database").split())


REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
CLI = str(REPO / "bin" / "cosmic-backup")


def postgres_owned_settings(base) -> tuple[dict, str]:
    """Settings whose key, repositories, spool and audit log the postgres user can use:
    archive_command runs as the server's user, as on a real host."""
    import os
    import pwd

    import yaml

    from tests.engine import keys

    base = str(base)
    os.makedirs(base, exist_ok=True)
    settings = {
        "repositories": [{"name": "primary", "url": f"{base}/primary"},
                         {"name": "secondary", "url": f"{base}/secondary"}],
        "keys": {"local_key_file": f"{base}/keys/master.key"},
        "audit_log": f"{base}/audit.jsonl",
        "wal": {"spool_dir": f"{base}/spool"},
    }
    keys.LocalKey.generate().save(settings["keys"]["local_key_file"])
    for repository in ("primary", "secondary"):  # root and postgres both write here
        for kind in ("wal", "database"):
            os.makedirs(f"{base}/{repository}/backups/{kind}", exist_ok=True)
    with open(settings["audit_log"], "a", encoding="utf-8"):
        pass
    config = f"{base}/config.yml"
    with open(config, "w", encoding="utf-8") as handle:
        yaml.safe_dump(settings, handle)
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for root, _dirs, files in os.walk(base):
            os.chown(root, owner.pw_uid, owner.pw_gid)
            for name in files:
                os.chown(os.path.join(root, name), owner.pw_uid, owner.pw_gid)
        path = base
        while path != "/":  # the server's user must reach the directory
            os.chmod(path, os.stat(path).st_mode | 0o011)
            path = os.path.dirname(path)
    return settings, config


def cli_as_postgres() -> str:
    """The CLI as the server's user can run it: this checkout's interpreter lives under
    /root, so the system Python 3.11 runs it with the checkout's site-packages."""
    import glob
    import os
    import sys

    if os.geteuid() != 0:
        return CLI
    site = glob.glob(str(REPO / ".venv" / "lib" / "python3*" / "site-packages"))
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    path = ":".join([str(REPO / "var" / "collections"), *site])
    return (f"env PYTHONPATH={path} /usr/bin/{version} "
            "-m ansible_collections.cosmic.backup.plugins.module_utils.cli_launch")


def archiving_settings(config: str, archive_timeout: str = "60") -> dict[str, str]:
    """What the postgresql_archiving role sets, for a TemporaryCluster."""
    return {"archive_mode": "on",
            "archive_command": f"'{cli_as_postgres()} --config {config} wal-push %p'",
            "archive_timeout": archive_timeout}
