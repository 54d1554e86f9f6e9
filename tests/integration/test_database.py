"""Logical backups and restores on real PostgreSQL 15 clusters and real repositories."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest
from ansible_collections.cosmic.backup.plugins.module_utils import database
from ansible_collections.cosmic.backup.plugins.module_utils.errors import (
    BackupError,
    ExternalCommandError,
    IntegrityError,
    SelectorError,
)
from ansible_collections.cosmic.backup.plugins.module_utils.postgres_cluster import (
    TemporaryCluster,
)

from tests.engine import settings
from tests.integration.dbfixtures import (
    connection,
    databases,
    dump_sql,
    fingerprint,
    frozen_tables,
    load_app,
)


@pytest.fixture(scope="module")
def source():
    """The production database: one cluster for the module, never modified by a test."""
    with TemporaryCluster() as cluster:
        load_app(cluster)
        yield cluster


@pytest.fixture
def fresh():
    with TemporaryCluster() as cluster:
        yield cluster


def test_full_round_trip_equals_the_original(source, local_vault, fresh):
    result = database.backup_database(local_vault, connection(source))
    meta = local_vault.manifest(local_vault.select(result.backup_id))["meta"]
    assert meta["tables"] == {"app.posts": 12000, "app.users": 3000,
                              'public."Odd Name|x"': 500}
    assert meta["server_version_num"] >= 150000 and meta["database_size"] > 0
    assert meta["globals"] is True and meta["type"] == "full"
    assert "reader-secret" not in " ".join(result.commands)

    restored = database.restore_database(local_vault, connection(fresh))
    assert restored.backup_id == result.backup_id and restored.previous is None
    assert all(check.ok for check in restored.checks) and len(restored.checks) == 3
    assert dump_sql(fresh, "app") == dump_sql(source, "app")
    # roles, memberships and grants came back on a cluster that never had them
    assert fresh.psql("select has_table_privilege('app_reader', 'app.users', 'select'), "
                      "has_table_privilege('app_writer', 'app.posts', 'insert'), "
                      "pg_has_role('app_writer', 'app_reader', 'member'), "
                      "has_database_privilege('app_reader', 'app', 'temporary')",
                      "app") == "t|t|t|t"
    assert fresh.psql("select rolpassword like 'SCRAM%' from pg_authid "
                      "where rolname = 'app_reader'") == "t"


def test_restore_swaps_and_keeps_the_previous_database(source, local_vault, fresh):
    database.backup_database(local_vault, connection(source))
    load_app(fresh)
    fresh.psql("delete from app.posts where id > 100; insert into app.users (name) "
               "values ('written after the backup')", "app")
    damaged = fingerprint(fresh)
    result = database.restore_database(local_vault, connection(fresh))
    assert result.previous.startswith("app_pre_restore_")
    assert databases(fresh) >= {"app", result.previous}
    assert fingerprint(fresh) == fingerprint(source)
    assert fingerprint(fresh, result.previous) == damaged  # the operator can still look
    assert not [name for name in databases(fresh) if "_restoring_" in name]
    events = [e for e in local_vault.audit.events() if e["action"] == "restore"]
    assert events[-1]["result"] == "ok" and events[-1]["previous"] == result.previous


def test_schema_only_restores_into_an_empty_database(source, local_vault, fresh):
    result = database.backup_database(local_vault, connection(source), type="schema")
    assert result.rows == 0 and result.tables == 3
    restored = database.restore_database(local_vault, connection(fresh, "app_dev"))
    assert {check.detail for check in restored.checks} == {"present and empty"}
    assert fresh.psql("select count(*) from app.users", "app_dev") == "0"
    assert dump_sql(fresh, "app_dev", "--schema-only").replace("app_dev", "app") == \
        dump_sql(source, "app", "--schema-only")


def test_parallel_directory_format_and_parallel_restore(source, local_vault, fresh, tmp_path):
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    result = database.backup_database(local_vault, connection(source), format="directory",
                                      jobs=2, work_dir=str(tmp_path))
    objects = {o["name"] for o in local_vault.manifest(local_vault.select(result.backup_id))
               ["objects"]}
    assert "database.dir/toc.dat" in objects and "globals.sql" in objects
    database.restore_database(local_vault, connection(fresh), jobs=2, work_dir=str(tmp_path))
    assert dump_sql(fresh, "app") == dump_sql(source, "app")
    assert list(tmp_path.iterdir()) == []  # no spool left behind


def test_parallel_restore_of_a_streamed_custom_dump(source, local_vault, fresh):
    database.backup_database(local_vault, connection(source))
    restored = database.restore_database(local_vault, connection(fresh), jobs=2)
    assert dump_sql(fresh, "app") == dump_sql(source, "app")
    assert "COPY FREEZE for 3 of 3 tables" in " ".join(restored.commands)
    assert set(frozen_tables(fresh, "app").values()) == {True}


@pytest.fixture
def small_scratch(tmp_path):
    """A 256 KiB filesystem: too small to write the app's dump out."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(scratch)],
                   check=True)
    yield scratch
    subprocess.run(["umount", str(scratch)], check=True)


def test_parallel_restore_without_room_to_write_out_streams_with_one_job(
        source, local_vault, fresh, small_scratch):
    backup = database.backup_database(local_vault, connection(source))
    assert backup.size > 2 * 256 * 1024
    restored = database.restore_database(local_vault, connection(fresh), jobs=2,
                                         work_dir=str(small_scratch))
    assert dump_sql(fresh, "app") == dump_sql(source, "app")
    assert [w for w in restored.warnings if "restored with one job" in w and
            str(small_scratch) in w]
    assert any(command.endswith(f"< {database.DUMP_OBJECT}") for command in restored.commands)


def test_directory_dump_without_room_to_write_out_is_a_clear_error(
        source, local_vault, fresh, small_scratch):
    database.backup_database(local_vault, connection(source), format="directory", jobs=2)
    load_app(fresh)
    before, names = fingerprint(fresh), databases(fresh)
    with pytest.raises(BackupError, match="set work_dir to a larger filesystem"):
        database.restore_database(local_vault, connection(fresh), jobs=2,
                                  work_dir=str(small_scratch))
    assert fingerprint(fresh) == before and databases(fresh) == names


def test_latest_skips_schema_backups_of_another_type(source, local_vault):
    full = database.backup_database(local_vault, connection(source))
    database.backup_database(local_vault, connection(source), type="schema")
    ref, manifest = database.select_backup(local_vault, "latest", ["full"])
    assert ref.id == full.backup_id and manifest["meta"]["type"] == "full"
    with pytest.raises(SelectorError, match="is a full backup, not schema"):
        database.select_backup(local_vault, full.backup_id, ["schema"])


def test_verification_in_a_throwaway_instance(source, local_vault):
    database.backup_database(local_vault, connection(source))
    report = database.verify_database_backup(local_vault)
    assert report.ok, [c for c in report.checks if not c.ok]
    names = {check.name for check in report.checks}
    assert {"restore", "table app.users", "index app.posts_user", "index app.users_pkey",
            'table public."Odd Name|x"'} <= names


# -- bad input and faults: a clear error, and nothing changed -------------------------


def test_wrong_password_is_a_clear_error(source, local_vault):
    source.psql("alter role app_reader password 'reader-secret'")
    source.run(["/bin/sh", "-c", f"sed -i '1i host all app_reader 127.0.0.1/32 scram-sha-256' "
                                 f"{source.data_dir}/pg_hba.conf"])
    source.psql("select pg_reload_conf()")
    try:
        bad = connection(source, user="app_reader", password="not-the-password")
        with pytest.raises(ExternalCommandError, match="password authentication failed") as e:
            database.backup_database(local_vault, bad)
        assert "not-the-password" not in str(e.value)
        assert local_vault.list("database") == []
        good = connection(source, user="app_reader", password="reader-secret")
        # a login that may not read pg_authid still gets its dump (roles without passwords)
        source.psql("grant select on all tables in schema public to app_reader; "
                    "grant select on all sequences in schema app to app_reader", "app")
        result = database.backup_database(local_vault, good)
        assert any("without passwords" in warning for warning in result.warnings)
    finally:
        source.run(["/bin/sh", "-c", f"sed -i '1d' {source.data_dir}/pg_hba.conf"])
        source.psql("select pg_reload_conf()")


def test_unknown_database_is_a_clear_error(source, local_vault):
    with pytest.raises(ExternalCommandError, match='database "nope" does not exist'):
        database.backup_database(local_vault, connection(source, "nope"))
    assert local_vault.list("database") == []


@pytest.mark.parametrize("jobs", [1, 2])  # streamed into pg_restore; written out first
def test_corrupted_dump_leaves_the_current_database_untouched(source, local_vault, fresh,
                                                              local_settings, jobs):
    result = database.backup_database(local_vault, connection(source))
    load_app(fresh)
    fresh.psql("insert into app.users (name) values ('current')", "app")
    before, names = fingerprint(fresh), databases(fresh)
    for repository in local_settings["repositories"]:
        path = (f"{repository['url']}/backups/database/{result.backup_id}"
                f"/data/{database.DUMP_OBJECT}")
        with open(path, "r+b") as handle:
            middle = os.fstat(handle.fileno()).st_size // 2
            handle.seek(middle)
            byte = handle.read(1)
            handle.seek(middle)
            handle.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(IntegrityError):
        database.restore_database(local_vault, connection(fresh), jobs=jobs)
    assert fingerprint(fresh) == before and databases(fresh) == names
    assert local_vault.audit.events()[-1]["result"] == "failed"


def test_connected_sessions_block_the_swap_unless_told(source, local_vault, fresh):
    database.backup_database(local_vault, connection(source))
    load_app(fresh)
    before, names = fingerprint(fresh), databases(fresh)
    session = subprocess.Popen([f"{fresh.bindir}/psql", "-X", "-d", "app", "-c",
                                "select pg_sleep(60)"], env=fresh.environment())
    try:
        deadline = time.monotonic() + 10
        while fresh.psql("select count(*) from pg_stat_activity where datname = 'app' "
                         "and query like '%pg_sleep%'") != "1":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(BackupError, match="stop the application first"):
            database.restore_database(local_vault, connection(fresh))
        assert fingerprint(fresh) == before and databases(fresh) == names
        result = database.restore_database(local_vault, connection(fresh),
                                           terminate_connections=True)
        assert fingerprint(fresh) == fingerprint(source)
        assert result.previous in databases(fresh)
    finally:
        session.kill()
        session.wait()


def test_an_unusable_repository_stops_a_waiting_pg_dump(source, local_settings, tmp_path):
    """pg_dump starts before the repositories are opened; when they fail it is
    stopped, not waited for (here it waits on a lock another session holds)."""
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    local_settings["repositories"][0]["url"] = str(blocked / "primary")
    vault = settings.build_vault(local_settings)
    locker = subprocess.Popen([f"{source.bindir}/psql", "-X", "-d", "app"],
                              stdin=subprocess.PIPE, env=source.environment())
    try:
        locker.stdin.write(b"begin; lock table app.posts in access exclusive mode;\n")
        locker.stdin.flush()
        deadline = time.monotonic() + 10
        while source.psql("select count(*) from pg_locks where mode = 'AccessExclusiveLock' "
                          "and relation = 'app.posts'::regclass", "app") != "1":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(BackupError, match="not usable"):
            database.backup_database(vault, connection(source))
        assert time.monotonic() - started < 10
    finally:
        locker.kill()
        locker.wait()
    assert vault.list("database") == []


def test_server_stopped_mid_dump_stores_nothing(local_vault):
    with TemporaryCluster() as cluster:
        load_app(cluster)
        # A session holding a lock makes pg_dump wait mid-run, deterministically.
        locker = subprocess.Popen(
            [f"{cluster.bindir}/psql", "-X", "-d", "app"], stdin=subprocess.PIPE,
            env=cluster.environment())
        locker.stdin.write(b"begin; lock table app.posts in access exclusive mode;\n"
                           b"select pg_sleep(60);\n")
        locker.stdin.flush()
        failure: list[BaseException] = []

        def run():
            try:
                database.backup_database(local_vault, connection(cluster))
            except BaseException as error:  # noqa: BLE001 - inspected below
                failure.append(error)

        worker = threading.Thread(target=run)
        time.sleep(0.5)
        worker.start()
        deadline = time.monotonic() + 20
        while cluster.psql("select count(*) from pg_locks where not granted") == "0":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cluster.stop("immediate")
        worker.join(60)
        locker.kill()
        locker.wait()
    assert failure and isinstance(failure[0], BackupError), failure
    assert "nothing was stored" in str(failure[0]) or "failed" in str(failure[0])
    assert local_vault.list("database") == []


def test_s3_primary_round_trip(source, moto_server, tmp_path, fresh):
    import boto3

    boto3.client("s3").create_bucket(
        Bucket="db-backups", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    key = boto3.client("kms").create_key()["KeyMetadata"]["Arn"]
    vault = settings.build_vault({
        "repositories": [{"name": "primary", "url": "s3://db-backups/cosmic"},
                         {"name": "secondary", "url": str(tmp_path / "secondary")}],
        "keys": {"kms_key_arns": [key]},
    })
    result = database.backup_database(vault, connection(source))
    assert set(vault.list("database")[0].copies) == {"primary", "secondary"}
    database.restore_database(vault, connection(fresh))
    assert dump_sql(fresh, "app") == dump_sql(source, "app")
    assert result.stored_size < result.size


def test_backup_verify_runs_the_database_check(source, local_vault):
    from ansible_collections.cosmic.backup.plugins.module_utils import verification

    result = database.backup_database(local_vault, connection(source))
    outcome = verification.verify_backup(local_vault, local_vault.select(result.backup_id),
                                         record=False)
    assert outcome.ok, outcome.summary()
    names = {check.name for check in outcome.checks}
    assert {"restore", "table app.posts", "index app.posts_user"} <= names


def test_host_cli_backs_up_and_restores(source, local_settings, fresh, tmp_path):
    import yaml

    config = tmp_path / "cli.yml"
    config.write_text(yaml.safe_dump(local_settings))
    cli = str(database.__file__).rsplit("/plugins/", 1)[0] + "/bin/cosmic-backup"
    backup = subprocess.run([cli, "--config", str(config), "database-backup", "--host",
                             "127.0.0.1", "--port", str(source.port), "--user", "postgres",
                             "--database", "app", "--json"], capture_output=True, text=True)
    assert backup.returncode == 0, backup.stderr
    assert json.loads(backup.stdout)["rows"] == 15500
    restore = subprocess.run([cli, "--config", str(config), "database-restore", "--dsn",
                              f"host=127.0.0.1 port={fresh.port} user=postgres dbname=app"],
                             capture_output=True, text=True)
    assert restore.returncode == 0, restore.stderr
    assert dump_sql(fresh, "app") == dump_sql(source, "app")


def test_host_cli_with_a_missing_settings_file_stops_its_pg_dump(source, tmp_path):
    """The CLI starts pg_dump before it reads the settings: a bad file still ends
    in a clear error, with pg_dump stopped and nothing stored."""
    cli = str(database.__file__).rsplit("/plugins/", 1)[0] + "/bin/cosmic-backup"
    missing = tmp_path / "missing.yml"
    backup = subprocess.run([cli, "--config", str(missing), "database-backup", "--host",
                             "127.0.0.1", "--port", str(source.port), "--user", "postgres",
                             "--database", "app"], capture_output=True, text=True, timeout=60)
    assert backup.returncode == 2
    assert f"settings file {missing} does not exist" in backup.stderr
    deadline = time.monotonic() + 10
    while source.psql("select count(*) from pg_stat_activity "
                      "where application_name in ('pg_dump', 'cosmic-backup')") != "0":
        assert time.monotonic() < deadline, "pg_dump or the snapshot session is still connected"
        time.sleep(0.05)


def test_database_settings_come_back(local_vault, fresh):
    """ALTER DATABASE ... SET is not in a pg_dump without --create: the restore reapplies it."""
    settings_sql = ("select array_to_string(setconfig, ' | ') from pg_db_role_setting "
                    "where setrole = 0 and setdatabase = "
                    "(select oid from pg_database where datname = 'tuned')")
    with TemporaryCluster() as cluster:
        cluster.psql("create database tuned")
        for statement in ("set work_mem = '7MB'", "set statement_timeout = '5min'",
                          "set search_path = \"$user\", public, 'odd, \"name\"'"):
            cluster.psql(f"alter database tuned {statement}")
        cluster.psql("create table t as select generate_series(1, 10) n", "tuned")
        original = cluster.psql(settings_sql)
        assert original.count("|") == 2 and '"odd, ""name"""' in original
        database.backup_database(local_vault, connection(cluster, "tuned"))
    restored = database.restore_database(local_vault, connection(fresh, "tuned"))
    assert all(check.ok for check in restored.checks)
    assert fresh.psql(settings_sql) == original
    assert fresh.psql("show search_path", "tuned") == '"$user", public, "odd, ""name"""'
