"""Declared command lines and connections: an input in, the exact argv out."""

from __future__ import annotations

import pytest
from ansible_collections.cosmic.backup.plugins.module_utils import commands, database, pg_tools
from ansible_collections.cosmic.backup.plugins.module_utils.errors import ConfigError


@pytest.mark.parametrize(("values", "expected"), [
    ({"format": "custom", "compress": 0, "snapshot": "00000003-0000000E-1", "dbname": "x"},
     ["pg_dump", "--format=custom", "--compress=0", "--snapshot=00000003-0000000E-1",
      "--dbname=x"]),
    ({"format": "directory", "jobs": 4, "file": "/tmp/d", "schema_only": True, "dbname": "x"},
     ["pg_dump", "--format=directory", "--jobs=4", "--schema-only", "--file=/tmp/d",
      "--dbname=x"]),
    ({"schema_only": False, "jobs": None, "dbname": "x"}, ["pg_dump", "--dbname=x"]),
    ({"exclude_table_data": ["a.log", "b.tmp"], "dbname": "x"},
     ["pg_dump", "--exclude-table-data=a.log", "--exclude-table-data=b.tmp", "--dbname=x"]),
])
def test_pg_dump_command_lines(values, expected):
    assert pg_tools.PG_DUMP.argv(**values) == expected


def test_options_come_out_in_declared_order_and_with_the_bindir():
    argv = pg_tools.PG_RESTORE.argv("/usr/lib/postgresql/15/bin", archive="/tmp/a.dump",
                                    jobs=2, dbname="dbname=app", exit_on_error=True)
    assert argv == ["/usr/lib/postgresql/15/bin/pg_restore", "--dbname=dbname=app", "--jobs=2",
                    "--exit-on-error", "/tmp/a.dump"]
    assert pg_tools.PG_BASEBACKUP.argv(pgdata="-", format="tar", wal_method="none",
                                       checkpoint="fast", verbose=True) == [
        "pg_basebackup", "--pgdata=-", "--format=tar", "--wal-method=none", "--checkpoint=fast",
        "--verbose"]


def test_unknown_options_and_values_are_refused():
    with pytest.raises(ConfigError, match="pg_dump has no option colour"):
        pg_tools.PG_DUMP.argv(colour="red")
    with pytest.raises(ConfigError, match="use one of custom, directory, plain"):
        pg_tools.PG_DUMP.argv(format="tar")


def test_display_quotes_like_a_shell():
    assert commands.display(["pg_dump", "--dbname=host=a port=5432"]) == \
        "pg_dump '--dbname=host=a port=5432'"


@pytest.mark.parametrize(("text", "expected"), [
    ("host=db1 port=5432 dbname=app", {"host": "db1", "port": "5432", "dbname": "app"}),
    ("host = db1  user='a b' port=''", {"host": "db1", "user": "a b", "port": ""}),
    (r"password='it\'s \\ ok' sslmode=require",
     {"password": "it's \\ ok", "sslmode": "require"}),
    ("postgresql://neon:s3cr%40t@ep-cool-1.eu-central-1.aws.neon.tech/neondb?sslmode=require",
     {"user": "neon", "password": "s3cr@t", "host": "ep-cool-1.eu-central-1.aws.neon.tech",
      "dbname": "neondb", "sslmode": "require"}),
    ("postgres://u@h1:5432,h2:5433/app", {"user": "u", "host": "h1,h2", "port": "5432,5433",
                                          "dbname": "app"}),
])
def test_connection_strings_parse(text, expected):
    assert pg_tools.parse_conninfo(text) == expected


def test_malformed_connection_strings_are_refused():
    with pytest.raises(ConfigError, match="unterminated"):
        pg_tools.parse_conninfo("host='db1")
    with pytest.raises(ConfigError, match="malformed"):
        pg_tools.parse_conninfo("just-a-word")


def test_the_password_never_reaches_argv():
    connection = pg_tools.Connection(
        dsn="postgresql://neon:hunter2@ep-x.neon.tech/neondb?sslmode=require")
    conninfo = connection.conninfo()
    assert "hunter2" not in conninfo
    assert pg_tools.parse_conninfo(conninfo) == {
        "user": "neon", "host": "ep-x.neon.tech", "dbname": "neondb", "sslmode": "require",
        "application_name": "cosmic-backup"}
    assert connection.environment({})["PGPASSWORD"] == "hunter2"
    assert "hunter2" not in repr(connection) and "hunter2" not in str(connection.describe())
    other = connection.for_database("postgres")
    assert other.dbname == "postgres" and other.environment({})["PGPASSWORD"] == "hunter2"


def test_explicit_options_override_the_connection_string():
    connection = pg_tools.Connection(dsn="host=a port=1 dbname=x", port=5433, database="y",
                                     sslmode="verify-full")
    assert pg_tools.parse_conninfo(connection.conninfo(database="z")) == {
        "host": "a", "port": "5433", "dbname": "z", "sslmode": "verify-full",
        "application_name": "cosmic-backup"}
    assert pg_tools.format_conninfo({"password": "a b'c\\"}) == r"password='a b\'c\\'"


GLOBALS = '''SET default_transaction_read_only = off;
CREATE ROLE app_reader;
ALTER ROLE app_reader WITH NOSUPERUSER INHERIT LOGIN PASSWORD 'SCRAM-SHA-256$x';
CREATE ROLE "Odd ""Role""";
ALTER ROLE "Odd ""Role""" WITH LOGIN;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER;
GRANT app_reader TO "Odd ""Role""" GRANTED BY postgres;
'''


def test_globals_never_rewrite_roles_that_exist():
    kept = database.filter_globals(GLOBALS, {"postgres", 'Odd "Role"'})
    assert "CREATE ROLE app_reader;" in kept and "PASSWORD" in kept
    assert "postgres WITH SUPERUSER" not in kept and "Odd" in kept  # the GRANT stays
    assert 'CREATE ROLE "Odd' not in kept and 'ALTER ROLE "Odd' not in kept


def test_derived_names_fit_postgres_identifiers():
    name = database._derived_name("x" * 80, "_pre_restore_20260406020000")
    assert len(name.encode()) == 63 and name.endswith("_pre_restore_20260406020000")
    assert database._derived_name("app", "_restoring_1") == "app_restoring_1"


@pytest.mark.parametrize(("setting", "expected"), [
    ("work_mem=7MB", "set \"work_mem\" = '7MB'"),
    ("DateStyle=ISO, MDY", "set \"DateStyle\" = 'ISO, MDY'"),  # one value with a comma
    ('search_path="$user", public, app', "set \"search_path\" = '$user', 'public', 'app'"),
    ('search_path="a ""b"", c", public', "set \"search_path\" = 'a \"b\", c', 'public'"),
    ('search_path=""', "set \"search_path\" = ''"),
])
def test_database_settings_become_alter_database_set(setting, expected):
    assert database.database_setting_sql(setting) == expected


def test_tools_whose_output_is_read_get_a_large_stdio_buffer():
    # stdbuf hands the buffer size to the tool in its environment: a tool that
    # prints that variable shows it got through (pg_dump reads it the same way).
    with commands.tool_output(["sh", "-c", "echo $_STDBUF_O"], what="sh") as output:
        assert int(output.read()) == commands.STDOUT_BUFFER


def test_a_missing_tool_is_run_as_it_is_and_fails_as_before():
    argv = ["no-such-tool-here", "--version"]
    assert commands.with_large_stdout(argv) == argv
    with pytest.raises(FileNotFoundError), \
            commands.tool_output(argv, what="no-such-tool-here"):
        pass
