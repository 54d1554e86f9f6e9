"""database_backup and database_restore, run for real by ``ansible`` against localhost."""

from __future__ import annotations

import json
import subprocess

import pytest
from ansible_collections.cosmic.backup.plugins.module_utils.postgres_cluster import (
    TemporaryCluster,
)

from tests.integration.ansible_modules import BIN, environment, module
from tests.integration.dbfixtures import databases, dump_sql, fingerprint, load_app

PASSWORD = "module-s3cret-pw"


@pytest.mark.parametrize("name", ["database_backup", "database_restore"])
def test_documentation_renders(name, tmp_path):
    result = subprocess.run([str(BIN / "ansible-doc"), "-t", "module", f"cosmic.backup.{name}"],
                            capture_output=True, text=True, env=environment(tmp_path),
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "EXAMPLES" in result.stdout and "ERROR" not in result.stderr
    assert "connection_string" in result.stdout and "repositories" in result.stdout


@pytest.fixture
def cluster():
    with TemporaryCluster() as server:
        load_app(server)
        server.psql(f"create role backup_login login superuser password '{PASSWORD}'")
        server.run(["/bin/sh", "-c", "sed -i '1i host all backup_login 127.0.0.1/32 "
                                     f"scram-sha-256' {server.data_dir}/pg_hba.conf"])
        server.psql("select pg_reload_conf()")
        yield server


def test_backup_check_mode_backup_verify_and_restore(cluster, local_settings, local_vault,
                                                     tmp_path):
    login = {"login_host": "127.0.0.1", "port": cluster.port, "login_user": "backup_login",
             "login_password": PASSWORD, "database": "app"}
    rc, dry, _ = module(tmp_path, local_settings, "database_backup", check=True, **login)
    assert rc == 0 and dry["changed"] and dry["backup_id"] is None
    assert dry["would_back_up"]["tables"] == 3 and local_vault.list("database") == []

    rc, backup, output = module(tmp_path, local_settings, "database_backup", verify=True,
                                **login)
    assert rc == 0, output
    assert backup["rows"] == 15500 and backup["verification"]["ok"]
    assert PASSWORD not in output and PASSWORD not in json.dumps(backup)
    assert any("pg_dump" in command for command in backup["executed_commands"])

    original = dump_sql(cluster, "app")
    cluster.psql("truncate app.posts", "app")
    rc, plan, _ = module(tmp_path, local_settings, "database_restore", check=True, **login)
    assert rc == 0 and plan["plan"]["exists"] and plan["plan"]["backup_id"] == backup["backup_id"]
    assert cluster.psql("select count(*) from app.posts", "app") == "0"

    rc, restored, output = module(tmp_path, local_settings, "database_restore", **login)
    assert rc == 0, output
    assert restored["previous"].startswith("app_pre_restore_")
    assert all(check["ok"] for check in restored["checks"])
    assert dump_sql(cluster, "app") == original
    assert cluster.psql("select count(*) from app.posts", restored["previous"]) == "0"
    assert PASSWORD not in output


def test_clear_failures_leave_the_database_untouched(cluster, local_settings, tmp_path):
    login = {"login_host": "127.0.0.1", "port": cluster.port, "login_user": "backup_login",
             "database": "app"}
    rc, failed, _ = module(tmp_path, local_settings, "database_backup",
                           login_password="wrong", **login)
    assert rc != 0 and "password authentication failed" in failed["msg"]
    before, names = fingerprint(cluster), databases(cluster)
    rc, failed, _ = module(tmp_path, local_settings, "database_restore",
                           login_password=PASSWORD, **login)
    assert rc != 0 and "no database backup yet" in failed["msg"]
    rc, failed, _ = module(tmp_path, local_settings, "database_restore",
                           login_password=PASSWORD, target_time="2026-04-06 14:30", **login)
    assert rc != 0 and "has no time zone" in failed["msg"]
    rc, failed, _ = module(tmp_path, local_settings, "database_restore",
                           login_password=PASSWORD, target_time="2026-04-06T14:30:00+00:00",
                           **login)
    assert rc != 0 and "needs data_directory" in failed["msg"]
    rc, failed, _ = module(tmp_path, local_settings, "database_restore",
                           login_password=PASSWORD, target_time="yesterday",
                           data_directory=cluster.data_dir, **login)
    assert rc != 0 and "not an ISO 8601 time" in failed["msg"]
    assert fingerprint(cluster) == before and databases(cluster) == names


def test_schema_backup_by_connection_string(cluster, local_settings, tmp_path):
    dsn = (f"postgresql://backup_login:{PASSWORD}@127.0.0.1:{cluster.port}/app"
           "?sslmode=disable")
    rc, backup, output = module(tmp_path, local_settings, "database_backup", type="schema",
                                connection_string=dsn)
    assert rc == 0, output
    assert backup["type"] == "schema" and backup["rows"] == 0 and backup["tables"] == 3
    assert PASSWORD not in json.dumps(backup["executed_commands"])
    rc, restored, output = module(tmp_path, local_settings, "database_restore",
                                  connection_string=dsn, database="app_dev")
    assert rc == 0, output
    assert restored["database"] == "app_dev" and restored["previous"] is None
    assert cluster.psql("select count(*) from app.users", "app_dev") == "0"
