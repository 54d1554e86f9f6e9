"""PostgreSQL client tools: connections, declared command lines, a SQL session.

A ``Connection`` is what an operator gives (host/port/user/database, or a
libpq connection string such as Neon's ``postgresql://...?sslmode=require``).
Every tool gets it as one ``--dbname`` connection string without the
password; the password travels in ``PGPASSWORD``, so it never shows in a
process list, a log or a module's RETURN.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .commands import (
    CommandSpec,
    StderrFile,
    as_flag,
    as_map,
    as_option,
    as_positional,
    as_repeated,
)
from .errors import ConfigError, ExternalCommandError
from .postgres_cluster import postgres_bindir

# -- connections ------------------------------------------------------------

_KEYWORD = re.compile(r"\s*([A-Za-z_]+)\s*=\s*")


def parse_conninfo(text: str) -> dict[str, str]:
    """A libpq connection string (``key=value ...`` or a postgresql:// URI) as a dict."""
    text = text.strip()
    if text.startswith(("postgresql://", "postgres://")):
        return _parse_uri(text)
    result, position = {}, 0
    while position < len(text):
        match = _KEYWORD.match(text, position)
        if not match:
            raise ConfigError(f"connection string is malformed near {text[position:][:20]!r}: "
                              "use key=value pairs or a postgresql:// URI")
        key, position = match.group(1), match.end()
        if position < len(text) and text[position] == "'":
            value, position = [], position + 1
            while position < len(text) and text[position] != "'":
                if text[position] == "\\" and position + 1 < len(text):
                    position += 1
                value.append(text[position])
                position += 1
            if position >= len(text):
                raise ConfigError("connection string has an unterminated quoted value")
            position += 1
            result[key] = "".join(value)
        else:
            end = position
            while end < len(text) and not text[end].isspace():
                end += 1
            result[key] = text[position:end]
            position = end
        while position < len(text) and text[position].isspace():
            position += 1
    return result


def _parse_uri(text: str) -> dict[str, str]:
    parts = urlsplit(text)
    result: dict[str, str] = {}
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, _colon, password = userinfo.partition(":")
        if user:
            result["user"] = unquote(user)
        if password:
            result["password"] = unquote(password)
    hosts, ports = [], []
    for item in filter(None, netloc.split(",")):
        if item.startswith("["):  # IPv6 literal
            host, _bracket, rest = item[1:].partition("]")
            port = rest.lstrip(":")
        else:
            host, _colon, port = item.partition(":")
        hosts.append(unquote(host))
        ports.append(port)
    if any(hosts):
        result["host"] = ",".join(hosts)
    if any(ports):
        result["port"] = ",".join(ports)
    if parts.path.strip("/"):
        result["dbname"] = unquote(parts.path.lstrip("/"))
    result.update(parse_qsl(parts.query))
    return result


def format_conninfo(values: dict[str, str]) -> str:
    """``key='value' ...`` with libpq's quoting."""

    def quote(value: str) -> str:
        if value and not re.search(r"[\s'\\]", value):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{key}={quote(str(value))}" for key, value in values.items())


@dataclass(frozen=True)
class Connection:
    """Where a database is, and how to log in (the password is kept out of argv)."""

    host: str | None = None
    port: int | None = None
    user: str | None = None
    database: str | None = None
    password: str | None = field(default=None, repr=False)
    dsn: str | None = field(default=None, repr=False)  # a libpq connection string or URI
    sslmode: str | None = None

    def parameters(self) -> dict[str, str]:
        """Every libpq parameter, the explicit options over the connection string's."""
        values = parse_conninfo(self.dsn) if self.dsn else {}
        explicit = {"host": self.host, "port": self.port, "user": self.user,
                    "dbname": self.database, "password": self.password,
                    "sslmode": self.sslmode}
        values.update({key: str(value) for key, value in explicit.items() if value})
        return values

    @property
    def dbname(self) -> str:
        return self.parameters().get("dbname") or os.environ.get("PGDATABASE") or "postgres"

    def conninfo(self, database: str | None = None) -> str:
        """The connection string for tools: no password in it."""
        values = {k: v for k, v in self.parameters().items() if k != "password"}
        if database is not None:
            values["dbname"] = database
        values.setdefault("application_name", "cosmic-backup")
        return format_conninfo(values)

    def for_database(self, database: str) -> Connection:
        params = self.parameters()
        params["dbname"] = database
        password = params.pop("password", None)
        return Connection(dsn=format_conninfo(params), password=password)

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The tools' environment: the caller's, with PGPASSWORD when there is one."""
        env = dict(os.environ if base is None else base)
        password = self.parameters().get("password")
        if password:
            env["PGPASSWORD"] = password
        env.setdefault("PGCONNECT_TIMEOUT", "15")
        return env

    def describe(self) -> dict[str, str]:
        """Where, for manifests and messages: never the password."""
        values = self.parameters()
        return {key: values[key] for key in ("host", "port", "user", "dbname", "sslmode")
                if values.get(key)}

    def where(self) -> str:
        values = self.describe()
        host = values.get("host", "local socket")
        return f"database {values.get('dbname', self.dbname)!r} on {host}" + (
            f":{values['port']}" if values.get("port") else "")


def connection_from_params(params: dict[str, Any]) -> Connection:
    """A Connection from module-style parameters (login_host, port, ...)."""
    return Connection(
        host=params.get("login_host"), port=params.get("port"),
        user=params.get("login_user"), database=params.get("database"),
        password=params.get("login_password"), dsn=params.get("connection_string"),
        sslmode=params.get("sslmode"),
    )


# -- declared command lines -------------------------------------------------

PG_DUMP = CommandSpec("pg_dump", [
    ("format", as_map({"custom": ["--format=custom"], "directory": ["--format=directory"],
                       "plain": ["--format=plain"]})),
    ("compress", as_option("--compress")),
    ("jobs", as_option("--jobs")),
    ("schema_only", as_flag("--schema-only")),
    ("snapshot", as_option("--snapshot")),
    ("no_sync", as_flag("--no-sync")),
    ("file", as_option("--file")),
    ("exclude_table_data", as_repeated("--exclude-table-data")),
    ("dbname", as_option("--dbname")),
])

PG_DUMPALL = CommandSpec("pg_dumpall", [
    ("globals_only", as_flag("--globals-only")),
    ("no_role_passwords", as_flag("--no-role-passwords")),
    ("dbname", as_option("--dbname")),
])

PG_RESTORE = CommandSpec("pg_restore", [
    ("dbname", as_option("--dbname")),
    ("jobs", as_option("--jobs")),
    ("exit_on_error", as_flag("--exit-on-error")),
    ("no_owner", as_flag("--no-owner")),
    ("no_privileges", as_flag("--no-privileges")),
    ("single_transaction", as_flag("--single-transaction")),
    ("list", as_flag("--list")),
    ("archive", as_positional()),
])

PG_BASEBACKUP = CommandSpec("pg_basebackup", [
    ("dbname", as_option("--dbname")),
    ("pgdata", as_option("--pgdata")),
    ("format", as_map({"tar": ["--format=tar"], "plain": ["--format=plain"]})),
    ("wal_method", as_option("--wal-method")),
    ("checkpoint", as_map({"fast": ["--checkpoint=fast"], "spread": ["--checkpoint=spread"]})),
    ("label", as_option("--label")),
    ("verbose", as_flag("--verbose")),
    ("no_manifest", as_flag("--no-manifest")),
])

PSQL = CommandSpec("psql", [
    ("dbname", as_option("--dbname")),
    ("stop_on_error", as_map({True: ["--set=ON_ERROR_STOP=1"], False: []})),
    ("quiet", as_map({True: ["--no-psqlrc", "--no-align", "--tuples-only", "--quiet"],
                      False: ["--no-psqlrc"]})),
    ("file", as_option("--file")),
], fixed=())


def client_bindir() -> str:
    """The newest installed PostgreSQL tools (pg_dump must be as new as the server)."""
    return postgres_bindir()


def tool_version(bindir: str, tool: str = "pg_dump") -> str:
    result = subprocess.run([os.path.join(bindir, tool), "--version"], capture_output=True,
                            check=False)
    return result.stdout.decode().strip()


# -- a SQL session ------------------------------------------------------------


class Session:
    """One psql process holding one connection (and so one transaction).

    The engine needs a connection that stays open while pg_dump runs: the
    exported snapshot lives as long as the transaction that exported it, and
    the row counts are taken in that same snapshot. psql is the client that
    every database host already has, so no driver is needed.
    """

    def __init__(self, connection: Connection, bindir: str | None = None,
                 database: str | None = None):
        self.connection = connection
        bindir = bindir or client_bindir()
        argv = PSQL.argv(bindir, dbname=connection.conninfo(database), stop_on_error=True,
                         quiet=True)
        self._stderr = StderrFile()
        self._where = connection.where() if database is None else (
            connection.for_database(database).where())
        self._process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._stderr, env=connection.environment())
        self._count = 0
        self._pending: list[str] = []

    def send(self, sql: str) -> str:
        """Queue SQL whose output (if any) ``receive`` collects; returns its marker."""
        self._count += 1
        marker = f"__cosmic_backup_{self._count}__"
        try:
            self._process.stdin.write(f"{sql.rstrip().rstrip(';')}\n;\n\\echo {marker}\n"
                                      .encode())
            self._process.stdin.flush()
        except BrokenPipeError:
            self._fail()
        self._pending.append(marker)
        return marker

    def receive(self) -> list[str]:
        """The output lines of the oldest query sent and not yet received."""
        marker = self._pending.pop(0)
        lines = []
        while True:
            line = self._process.stdout.readline()
            if not line:
                self._fail()
            text = line.decode().rstrip("\n")
            if text == marker:
                return lines
            lines.append(text)

    def query(self, sql: str) -> list[str]:
        self.send(sql)
        return self.receive()

    def value(self, sql: str) -> str:
        lines = self.query(sql)
        return lines[0] if lines else ""

    def json(self, sql: str) -> Any:
        """The value of a query that returns one JSON document."""
        return json.loads(self.value(sql) or "null")

    def _fail(self):
        self._process.wait()
        message = self._stderr.text() or f"psql exited with {self._process.returncode}"
        raise ExternalCommandError(f"query on {self._where} failed: {message}")

    def close(self, *, abort: bool = False) -> None:
        """End the session; ``abort``: at once, whatever it still runs (the server
        rolls the transaction back), instead of letting psql finish."""
        if self._process.poll() is None:
            if abort:
                self._process.kill()
            with contextlib.suppress(BrokenPipeError):
                self._process.stdin.close()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._stderr.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, error_type, *exc) -> None:
        self.close(abort=error_type is not None)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def postgres_argument_spec() -> dict[str, Any]:
    """Connection options of the database modules (doc fragment ``cosmic.backup.postgres``)."""
    return {
        "login_host": {"type": "str", "aliases": ["host"]},
        "port": {"type": "int", "aliases": ["login_port"]},
        "login_user": {"type": "str", "aliases": ["user"]},
        "login_password": {"type": "str", "no_log": True},
        "database": {"type": "str", "aliases": ["db"]},
        "connection_string": {"type": "str", "no_log": True, "aliases": ["dsn"]},
        "sslmode": {"type": "str", "choices": ["disable", "allow", "prefer", "require",
                                               "verify-ca", "verify-full"]},
    }
