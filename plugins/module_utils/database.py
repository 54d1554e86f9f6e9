"""Logical database backups, restores and their verification.

A full backup is ``pg_dump`` streamed (uncompressed, so zstd does the work on
its own cores) through compression and encryption into every repository, with
the cluster's globals (roles, memberships, tablespaces) beside it. The row
count of every table is taken in the very snapshot the dump reads: a psql
session exports its snapshot, ``pg_dump --snapshot`` imports it, and the same
session counts while the dump streams.

A restore never overwrites: it restores into a new database, checks every
table's row count against the manifest, and only then swaps the names in one
transaction. The database that was there stays as ``<name>_pre_restore_<time>``
until an operator drops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, BinaryIO

from .catalog import BackupRef
from .commands import display, feed, tool_output
from .errors import (
    BackupError,
    ConfigError,
    ExternalCommandError,
    IntegrityError,
    SelectorError,
)
from .monitoring import monitored
from .pg_custom_archive import ParallelRestoreArchive
from .pg_tools import (
    PG_DUMP,
    PG_DUMPALL,
    PG_RESTORE,
    PSQL,
    Connection,
    Session,
    client_bindir,
    quote_ident,
    quote_literal,
    tool_version,
)

KIND = "database"
LOGICAL_TYPES = ("full", "schema")
FORMATS = ("custom", "directory")
DUMP_OBJECT = "database.dump"
DIRECTORY_PREFIX = "database.dir/"
GLOBALS_OBJECT = "globals.sql"
MIB = 1 << 20
CHUNK = 4 * MIB
MAX_IDENTIFIER = 63

# Tables whose rows a dump carries: ordinary tables outside the system schemas
# and not owned by an extension (an extension recreates its own).
TABLES_SQL = """
select c.oid, format('%I.%I', n.nspname, c.relname) as name
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where c.relkind = 'r' and c.relpersistence <> 't'
   and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
   and n.nspname !~ '^pg_temp'
   and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass
                   and d.objid = c.oid and d.deptype = 'e')
"""
COUNTS_SQL = f"""
select coalesce(json_object_agg(t.name, (xpath('/row/c/text()', query_to_xml(
         'select count(*) as c from only ' || t.name, false, true, '')))[1]::text::bigint),
       '{{}}')
  from ({TABLES_SQL}) t
"""
TABLE_NAMES_SQL = f"select coalesce(json_agg(t.name order by t.name), '[]') from ({TABLES_SQL}) t"
DATABASE_SQL = """
select json_build_object(
  'server_version', current_setting('server_version'),
  'server_version_num', current_setting('server_version_num')::int,
  'database', current_database(),
  'database_size', pg_database_size(current_database()),
  'encoding', pg_encoding_to_char(d.encoding),
  'collate', d.datcollate, 'ctype', d.datctype,
  'owner', pg_get_userbyid(d.datdba),
  'grants', coalesce((select json_agg(json_build_object(
       'grantee', case when a.grantee = 0 then 'PUBLIC' else pg_get_userbyid(a.grantee) end,
       'privilege', a.privilege_type, 'grantable', a.is_grantable))
     from aclexplode(d.datacl) a where a.grantee <> d.datdba), '[]'),
  'settings', (select s.setconfig from pg_db_role_setting s
               where s.setdatabase = d.oid and s.setrole = 0),
  'snapshot_time', now(),
  'in_recovery', pg_is_in_recovery())
  from pg_database d where d.datname = current_database()
"""


@dataclass
class DatabaseBackupResult:
    backup_id: str
    type: str
    database: str
    size: int
    stored_size: int
    tables: int
    rows: int
    duration: float
    commands: list[str]
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class DatabaseRestoreResult:
    backup_id: str
    database: str
    previous: str | None  # where the database that was there now lives
    duration: float
    checks: list[Check]
    commands: list[str]
    warnings: list[str] = field(default_factory=list)


def _stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).strftime("%Y%m%d%H%M%S")


def _derived_name(database: str, suffix: str) -> str:
    """``<database><suffix>`` within PostgreSQL's 63-byte identifier limit."""
    room = MAX_IDENTIFIER - len(suffix.encode())
    name = database.encode()[:room].decode(errors="ignore")
    return name + suffix


# -- backup -----------------------------------------------------------------


def backup_database(vault, connection: Connection, *, type: str = "full",
                    format: str = "custom", jobs: int = 1, include_globals: bool = True,
                    work_dir: str | None = None, bindir: str | None = None,
                    label: str | None = None) -> DatabaseBackupResult:
    """Take a full or schema-only logical backup of one database into the vault.

    ``vault`` may also be a function that makes it, called once pg_dump has
    started: the CLI loads the repositories and their libraries meanwhile.
    """
    if type not in LOGICAL_TYPES:
        raise ConfigError(f"unknown logical backup type {type!r}: use full or schema")
    if format not in FORMATS:
        raise ConfigError(f"unknown dump format {format!r}: use custom or directory")
    if jobs > 1 and format != "directory":
        raise ConfigError("parallel dump jobs need format: directory (pg_dump writes the "
                          "custom format in one process)")
    bindir = bindir or client_bindir()
    started = time.monotonic()
    commands: list[str] = []
    warnings: list[str] = []
    with Session(connection, bindir) as session, contextlib.ExitStack() as dumping:
        session.query("begin isolation level repeatable read read only")
        snapshot = session.value("select pg_export_snapshot()")
        dump_args = {"schema_only": type == "schema", "snapshot": snapshot,
                     "dbname": connection.conninfo()}
        # A streamed dump starts first: pg_dump reads the catalogs while the
        # manifest's facts are gathered and the repositories are opened.
        stream = dumping.enter_context(_dump_stream(connection, bindir, dump_args, commands)) \
            if format == "custom" else None
        meta: dict[str, Any] = session.json(DATABASE_SQL)
        if type == "full":
            # Counted while the dump streams, on one core: parallel workers (and
            # JIT) would take the cores the dump needs, three to one.
            session.query("set local max_parallel_workers_per_gather = 0; set local jit = off")
            session.send(COUNTS_SQL)
        else:
            session.send(TABLE_NAMES_SQL)
        meta.update(type=type, format=format, jobs=jobs, label=label,
                    connection=connection.describe(), pg_dump=tool_version(bindir))
        vault = vault() if callable(vault) else vault
        with vault.new_backup(KIND, meta) as backup, ThreadPoolExecutor(1) as beside:
            # the globals are small: dumped and sealed beside the database
            stored_globals = beside.submit(_backup_globals, backup, connection, bindir,
                                           commands, warnings) if include_globals else None
            if stream is not None:
                backup.add_stream(DUMP_OBJECT, stream)
                dumping.close()  # pg_dump must have succeeded before the backup is finished
            else:
                _dump_directory(backup, connection, bindir, dump_args, jobs, work_dir,
                                commands)
            backup.meta["globals"] = stored_globals.result() if stored_globals else False
            counted = _received_json(session)
            if type == "full":
                backup.meta["tables"] = counted
            else:
                backup.meta["tables"] = dict.fromkeys(counted)
            backup.meta["rows"] = sum(v or 0 for v in backup.meta["tables"].values())
            session.query("commit")
            warnings += backup.warnings
        stored = sum(entry["stored_size"] for entry in backup.objects)
        size = sum(entry["size"] for entry in backup.objects)
    return DatabaseBackupResult(
        backup_id=backup.id, type=type, database=meta["database"], size=size,
        stored_size=stored, tables=len(backup.meta["tables"]), rows=backup.meta["rows"],
        duration=time.monotonic() - started, commands=commands, warnings=warnings,
        meta=backup.meta,
    )


def _received_json(session: Session) -> Any:
    lines = session.receive()
    return json.loads(lines[0]) if lines else None


@dataclass
class _GlobalsDump:
    result: subprocess.CompletedProcess
    without_passwords: bool = False


def _dump_globals(connection: Connection, bindir: str, commands: list[str]) -> _GlobalsDump:
    """Roles, memberships and tablespaces, so a restore onto a fresh cluster works.

    Managed services (Neon, RDS) do not let anyone read pg_authid: then the
    roles are dumped again without their passwords.
    """
    argv = PG_DUMPALL.argv(bindir, globals_only=True, dbname=connection.conninfo())
    commands.append(display(argv))
    result = subprocess.run(argv, capture_output=True, env=connection.environment(),
                            check=False)
    if result.returncode != 0 and b"permission denied" in result.stderr:
        argv = PG_DUMPALL.argv(bindir, globals_only=True, no_role_passwords=True,
                               dbname=connection.conninfo())
        commands.append(display(argv))
        retried = subprocess.run(argv, capture_output=True, env=connection.environment(),
                                 check=False)
        if retried.returncode == 0:
            return _GlobalsDump(retried, without_passwords=True)
    return _GlobalsDump(result)


def _backup_globals(backup, connection: Connection, bindir: str, commands: list[str],
                    warnings: list[str]) -> bool | str:
    """Dump and seal the globals; the manifest's ``globals`` value."""
    dump = _dump_globals(connection, bindir, commands)
    if dump.result.returncode != 0:
        warnings.append("the cluster's roles and tablespaces were not backed up: "
                        + dump.result.stderr.decode(errors="replace").strip()[-500:])
        return False
    backup.add_bytes(GLOBALS_OBJECT, dump.result.stdout)
    if dump.without_passwords:
        warnings.append("roles were dumped without passwords (this login may not read "
                        "pg_authid): set them again after a restore onto a new cluster")
        return "without passwords"
    return True


@contextlib.contextmanager
def _dump_stream(connection: Connection, bindir: str, dump_args: dict,
                 commands: list[str]) -> Iterator[BinaryIO]:
    """pg_dump's custom format, started now, as a stream to seal."""
    argv = PG_DUMP.argv(bindir, format="custom", compress=0, **dump_args)
    commands.append(display(argv))
    with tool_output(argv, env=connection.environment(),
                     what=f"pg_dump of {connection.where()}") as dump:
        yield dump


def _dump_directory(backup, connection: Connection, bindir: str, dump_args: dict, jobs: int,
                    work_dir: str | None, commands: list[str]) -> None:
    """pg_dump's directory format, in parallel; each file becomes one object."""
    spool = tempfile.mkdtemp(prefix="cosmic-dump-", dir=work_dir)
    try:
        target = os.path.join(spool, "dump")
        argv = PG_DUMP.argv(bindir, format="directory", compress=0, jobs=jobs, no_sync=True,
                            file=target, **dump_args)
        commands.append(display(argv))
        result = subprocess.run(argv, capture_output=True, env=connection.environment(),
                                check=False)
        if result.returncode != 0:
            raise ExternalCommandError(
                f"pg_dump of {connection.where()} failed (exit {result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()[-2000:]}; "
                "nothing was stored as a backup")
        for name in sorted(os.listdir(target)):
            with open(os.path.join(target, name), "rb", buffering=0) as handle:  # spliced
                backup.add_stream(DIRECTORY_PREFIX + name, handle)
    finally:
        shutil.rmtree(spool, ignore_errors=True)


# -- selecting a logical backup ---------------------------------------------


def select_backup(vault, selector: str, types: Iterable[str]) -> tuple[BackupRef, dict]:
    """The backup ``selector`` names among database backups of the given types.

    ``latest`` and dates skip backups of other types (a base backup is not a
    dump); an exact id of another type is an error that says so.
    """
    types = tuple(types)
    listings = [item.ref for item in vault.list(KIND)]
    chosen = vault.select(selector, KIND) if listings else None
    if chosen is None:
        raise SelectorError(f"there is no database backup yet: take one with "
                            f"database_backup type={types[0]}")
    if selector not in ("latest",) and not re.match(r"^\d{4}-\d{2}-\d{2}$", selector):
        manifest = vault.manifest(chosen)
        found = manifest["meta"].get("type")
        if found not in types:
            raise SelectorError(f"backup {chosen.id} is a {found} backup, not "
                                f"{' or '.join(types)}")
        return chosen, manifest
    candidates = [ref for ref in listings if ref <= chosen]
    if selector != "latest":
        candidates = [ref for ref in candidates if ref.created.date() == chosen.created.date()]
    for ref in reversed(candidates):
        manifest = vault.manifest(ref)
        if manifest["meta"].get("type") in types:
            return ref, manifest
    where = "yet" if selector == "latest" else f"on {selector} (UTC)"
    raise SelectorError(f"there is no {' or '.join(types)} database backup {where}")


# -- restore ----------------------------------------------------------------


@monitored("restore", "database")
def restore_database(vault, connection: Connection, *, selector: str = "latest",
                     database: str | None = None, jobs: int = 1,
                     restore_globals: bool = True, no_owner: bool = False,
                     terminate_connections: bool = False,
                     maintenance_database: str = "postgres", work_dir: str | None = None,
                     bindir: str | None = None, now: datetime | None = None,
                     ) -> DatabaseRestoreResult:
    """Restore a logical backup into a new database, verify it, then swap it in.

    ``database`` defaults to the connection's database. If anything fails
    before the swap, the new database is dropped and the current one was never
    touched.
    """
    bindir = bindir or client_bindir()
    started = time.monotonic()
    ref, manifest = select_backup(vault, selector, LOGICAL_TYPES)
    meta = manifest["meta"]
    target = database or connection.parameters().get("dbname") or meta["database"]
    stamp = _stamp(now)
    restoring = _derived_name(target, f"_restoring_{stamp}")
    previous = _derived_name(target, f"_pre_restore_{stamp}")
    commands: list[str] = []
    warnings: list[str] = []
    admin = connection.for_database(maintenance_database)
    into = connection.for_database(restoring)
    try:
        # The roles and the new database are made while the dump is written out;
        # leaving the block waits for them, so a failure drops what was made.
        with ThreadPoolExecutor(1) as beside:
            prepared = beside.submit(_prepare_database, vault, ref, manifest, admin, bindir,
                                     restoring, restore_globals)
            _restore_objects(vault, ref, manifest, into, bindir, jobs=jobs, no_owner=no_owner,
                             work_dir=work_dir, commands=commands, warnings=warnings,
                             database_made=lambda: _merged(prepared.result(), commands,
                                                           warnings))
            owner = prepared.result().owner
        checks = compare_tables(into, meta, bindir)
        failed = [check for check in checks if not check.ok]
        if failed:
            raise IntegrityError(
                f"the restored copy of {ref.id} does not match its manifest: "
                + "; ".join(f"{check.name}: {check.detail}" for check in failed[:5])
                + f"; {target!r} was left as it was")
        with Session(admin, bindir) as session:
            _apply_database_properties(session, restoring, meta, owner, warnings)
            moved = _swap(session, target, restoring, previous, terminate_connections)
    except BaseException as error:
        _drop_quietly(admin, bindir, restoring)
        vault.audit.record("restore", result="failed", backup_id=ref.id, database=target,
                           error=str(error) or type(error).__name__)
        raise
    vault.audit.record("restore", result="ok", backup_id=ref.id, database=target,
                       previous=moved, tables=len(checks))
    return DatabaseRestoreResult(
        backup_id=ref.id, database=target, previous=moved,
        duration=time.monotonic() - started, checks=checks, commands=commands,
        warnings=warnings,
    )


_ROLE_STATEMENT = re.compile(r'^(?:CREATE|ALTER) ROLE ("(?:[^"]|"")+"|[^\s;]+)')


def _unquote_ident(text: str) -> str:
    if text.startswith('"'):
        return text[1:-1].replace('""', '"')
    return text


def filter_globals(sql: str, existing_roles: set[str]) -> str:
    """The globals script without statements that would change roles that exist.

    A restore adds what is missing (roles, memberships, tablespaces); it never
    rewrites the attributes or passwords of a role the cluster already has.
    """
    kept = []
    for line in sql.splitlines():
        match = _ROLE_STATEMENT.match(line)
        if match and _unquote_ident(match.group(1)) in existing_roles:
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def apply_globals(vault, ref, manifest, admin: Connection, session: Session, bindir: str,
                  commands: list[str]) -> list[str]:
    """Create the backup's missing roles and memberships; each failure is a warning."""
    with vault.open_object(ref, GLOBALS_OBJECT, manifest) as plain:
        sql = plain.read().decode()
    existing = set(session.json("select json_agg(rolname) from pg_roles") or [])
    script = filter_globals(sql, existing)
    argv = PSQL.argv(bindir, dbname=admin.conninfo(), stop_on_error=False, quiet=True)
    commands.append(display(argv) + " < globals.sql")
    result = subprocess.run(argv, input=script.encode(), capture_output=True,
                            env=admin.environment(), check=False)
    return [f"globals: {line.split('ERROR:', 1)[1].strip()}"
            for line in result.stderr.decode(errors="replace").splitlines()
            if "ERROR:" in line]


@dataclass
class _PreparedDatabase:
    owner: str | None
    commands: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _prepare_database(vault, ref, manifest, admin: Connection, bindir: str, name: str,
                      restore_globals: bool) -> _PreparedDatabase:
    """The backup's missing roles, then the empty database ``name`` to restore into."""
    meta = manifest["meta"]
    prepared = _PreparedDatabase(owner=None)
    with Session(admin, bindir) as session:
        if restore_globals and meta.get("globals"):
            prepared.warnings += apply_globals(vault, ref, manifest, admin, session, bindir,
                                               prepared.commands)
        prepared.owner = _create_database(session, name, meta, prepared.warnings)
    return prepared


def _merged(prepared: _PreparedDatabase, commands: list[str], warnings: list[str]) -> None:
    """What preparing the database did goes first, as if it had run first."""
    commands[:0] = prepared.commands
    warnings[:0] = prepared.warnings


def _create_database(session: Session, name: str, meta: dict, warnings: list[str]) -> str | None:
    owner = meta.get("owner")
    if owner and session.value(f"select 1 from pg_roles where rolname = {quote_literal(owner)}"
                               ) != "1":
        warnings.append(f"role {owner!r} that owned the database does not exist here: "
                        "the restored database belongs to the restoring user")
        owner = None
    options = ["template template0"]
    if meta.get("encoding"):
        options.append(f"encoding {quote_literal(meta['encoding'])}")
    if meta.get("collate"):
        options.append(f"lc_collate {quote_literal(meta['collate'])}")
    if meta.get("ctype"):
        options.append(f"lc_ctype {quote_literal(meta['ctype'])}")
    session.query(f"create database {quote_ident(name)} " + " ".join(options))
    return owner


def _apply_database_properties(session: Session, name: str, meta: dict, owner: str | None,
                               warnings: list[str]) -> None:
    """Owner and grants of the database itself (pg_dump leaves them out without --create)."""
    if owner:
        session.query(f"alter database {quote_ident(name)} owner to {quote_ident(owner)}")
    roles = set(session.json("select json_agg(rolname) from pg_roles") or [])
    for grant in meta.get("grants") or []:
        grantee = grant["grantee"]
        if grantee != "PUBLIC" and grantee not in roles:
            warnings.append(f"database grant {grant['privilege']} to missing role {grantee!r} "
                            "was skipped")
            continue
        who = "public" if grantee == "PUBLIC" else quote_ident(grantee)
        option = " with grant option" if grant.get("grantable") else ""
        session.query(f"grant {grant['privilege']} on database {quote_ident(name)} "
                      f"to {who}{option}")
    for setting in meta.get("settings") or []:
        session.query(f"alter database {quote_ident(name)} {database_setting_sql(setting)}")


# Settings whose value is a list, stored in pg_db_role_setting as "a, b" with
# identifiers quoted; each element is one string literal in ALTER ... SET.
LIST_SETTINGS = frozenset(("search_path", "temp_tablespaces", "local_preload_libraries",
                           "session_preload_libraries"))


def database_setting_sql(setting: str) -> str:
    """``SET name = ...`` for one ``name=value`` entry of pg_db_role_setting.setconfig."""
    name, value = setting.split("=", 1)
    if name.lower() not in LIST_SETTINGS:
        return f"set {quote_ident(name)} = {quote_literal(value)}"
    elements, current, quoted, at = [], "", False, 0
    while at < len(value):
        char = value[at]
        if char == '"' and quoted and value[at + 1:at + 2] == '"':
            current += '"'  # a doubled quote inside a quoted element
            at += 1
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            elements.append(current.strip())
            current = ""
        else:
            current += char
        at += 1
    elements.append(current.strip())
    return f"set {quote_ident(name)} = " + ", ".join(quote_literal(e) for e in elements)


def _swap(session: Session, target: str, restoring: str, previous: str,
          terminate_connections: bool, attempts: int = 5) -> str | None:
    """Rename the current database away and the restored one into place, atomically."""
    exists = session.value(
        f"select 1 from pg_database where datname = {quote_literal(target)}") == "1"
    if not exists:
        session.query(f"alter database {quote_ident(restoring)} rename to {quote_ident(target)}")
        return None
    sessions_sql = (f"select count(*) from pg_stat_activity where datname = "
                    f"{quote_literal(target)} and pid <> pg_backend_pid()")
    for attempt in range(attempts):
        connected = int(session.value(sessions_sql) or 0)
        if connected and not terminate_connections:
            raise BackupError(
                f"{connected} session(s) are connected to {target!r}: stop the application "
                "first (the guide's step 2), or set terminate_connections; the restored "
                "copy was dropped and nothing changed")
        if connected:
            session.query(f"select pg_terminate_backend(pid) from pg_stat_activity "
                          f"where datname = {quote_literal(target)} "
                          f"and pid <> pg_backend_pid()")
        try:
            session.query(
                f"begin; alter database {quote_ident(target)} rename to {quote_ident(previous)}; "
                f"alter database {quote_ident(restoring)} rename to {quote_ident(target)}; "
                f"commit")
            return previous
        except ExternalCommandError as error:
            if "is being accessed by other users" not in str(error) or attempt == attempts - 1:
                raise
            # psql stopped on the error: the session is gone, open a new one
            session.__init__(session.connection)
            time.sleep(0.2 * (attempt + 1))
    return previous


def _drop_quietly(admin: Connection, bindir: str, name: str) -> None:
    """Remove a half-restored database (and the sessions a failed pg_restore left)."""
    argv = PSQL.argv(bindir, dbname=admin.conninfo(), stop_on_error=False, quiet=True)
    sql = (f"select pg_terminate_backend(pid) from pg_stat_activity "
           f"where datname = {quote_literal(name)};\n"
           f"drop database if exists {quote_ident(name)};\n")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(argv, input=sql.encode(), capture_output=True,
                       env=admin.environment(), check=False, timeout=120)


def _restore_objects(vault, ref, manifest, into: Connection, bindir: str, *, jobs: int,
                     no_owner: bool, work_dir: str | None, commands: list[str],
                     warnings: list[str], database_made=lambda: None) -> None:
    """pg_restore the dump into ``into``; ``database_made`` waits until it exists."""
    names = [entry["name"] for entry in manifest["objects"]]
    options = {"dbname": into.conninfo(), "exit_on_error": True, "no_owner": no_owner,
               "no_privileges": no_owner}
    no_room = _short_of_room(manifest, work_dir)
    if DUMP_OBJECT in names and jobs > 1 and no_room:
        warnings.append(f"{no_room}: restored with one job, streamed into pg_restore; "
                        "set work_dir to a larger filesystem for parallel jobs")
        jobs = 1
    if DUMP_OBJECT in names and jobs <= 1:
        database_made()
        argv = PG_RESTORE.argv(bindir, **options)
        commands.append(display(argv) + f" < {DUMP_OBJECT}")
        with vault.open_object(ref, DUMP_OBJECT, manifest) as plain:
            _feed(argv, plain, into)
        return
    if no_room:
        raise ConfigError(f"{no_room}: a directory-format dump is written out before "
                          "pg_restore reads it; set work_dir to a larger filesystem")
    spool = tempfile.mkdtemp(prefix="cosmic-restore-", dir=work_dir)
    try:
        if DUMP_OBJECT in names:
            archive = os.path.join(spool, DUMP_OBJECT)
            with vault.open_object(ref, DUMP_OBJECT, manifest) as plain, \
                    ParallelRestoreArchive(archive) as out:
                for chunk in iter(lambda: plain.read(CHUNK), b""):
                    out.write(chunk)
                commands.append(f"# {DUMP_OBJECT}: {out.finish()}")
        else:
            archive = os.path.join(spool, "dump")
            os.makedirs(archive)
            for name in names:
                if name.startswith(DIRECTORY_PREFIX):
                    _materialize(vault, ref, manifest, name,
                                 os.path.join(archive, name[len(DIRECTORY_PREFIX):]))
        database_made()
        argv = PG_RESTORE.argv(bindir, jobs=max(jobs, 1), archive=archive, **options)
        commands.append(display(argv))
        result = subprocess.run(argv, capture_output=True, env=into.environment(), check=False)
        if result.returncode != 0:
            stderr = result.stderr.decode(errors="replace").strip()
            hint = "; restore with one job to load without FREEZE" if "FREEZE" in stderr else ""
            raise ExternalCommandError(
                f"pg_restore into {into.where()} failed: {stderr[-2000:]}{hint}")
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def _short_of_room(manifest, work_dir: str | None) -> str | None:
    """Why the dump does not fit where a parallel restore writes it out (it needs
    its size and 5% to spare), or None when it fits."""
    scratch = work_dir or tempfile.gettempdir()
    free = shutil.disk_usage(scratch).free
    size = sum(entry["size"] for entry in manifest["objects"]
               if entry["name"] == DUMP_OBJECT or entry["name"].startswith(DIRECTORY_PREFIX))
    if size * 1.05 <= free:
        return None
    return f"{scratch} has {free / MIB:,.0f} MiB free, the dump is {size / MIB:,.0f} MiB"


def _materialize(vault, ref, manifest, name: str, path: str) -> None:
    """Write an object out to ``path``."""
    with vault.open_object(ref, name, manifest) as plain, open(path, "wb") as out:
        for chunk in iter(lambda: plain.read(CHUNK), b""):
            out.write(chunk)


def _feed(argv: list[str], plain: BinaryIO, into: Connection) -> None:
    feed(argv, plain, env=into.environment(), where=f"into {into.where()}")


# -- verification -------------------------------------------------------------


def compare_tables(connection: Connection, meta: dict, bindir: str | None = None) -> list[Check]:
    """One check per table of the manifest: present, and with the recorded row count."""
    with Session(connection, bindir) as session:
        # Parallel workers help (the cores are free after pg_restore); JIT does
        # not: compiling each table's count cost 0.1 s of 0.4 s on the bench data.
        session.query("set jit = off")
        found = session.json(COUNTS_SQL) or {}
    expected = meta.get("tables") or {}
    checks = []
    for table, rows in sorted(expected.items()):
        if table not in found:
            checks.append(Check(f"table {table}", False, "missing after the restore"))
        elif rows is None:
            ok = found[table] == 0
            checks.append(Check(f"table {table}", ok,
                                "present and empty" if ok else f"{found[table]} rows in a "
                                "schema-only restore"))
        else:
            ok = found[table] == rows
            checks.append(Check(f"table {table}", ok, f"{found[table]} rows" if ok else
                                f"{found[table]} rows, the backup counted {rows}"))
    for table in sorted(set(found) - set(expected)):
        checks.append(Check(f"table {table}", False, "not in the backup's manifest"))
    return checks


AMCHECK_SQL = """
create extension if not exists amcheck;
create function pg_temp.cosmic_check(index regclass) returns text language plpgsql as $$
begin
  perform bt_index_check(index, true);
  return 'ok';
exception when others then
  return sqlerrm;
end $$;
select coalesce(json_object_agg(c.oid::regclass::text, pg_temp.cosmic_check(c.oid)), '{}')
  from pg_index i join pg_class c on c.oid = i.indexrelid
  join pg_am a on a.oid = c.relam
 where a.amname = 'btree' and c.relpersistence <> 't' and i.indisvalid and i.indisready
   and c.oid >= 16384  -- the database's own indexes (and their TOAST), not the catalogs'
"""


def amcheck_indexes(connection: Connection, bindir: str | None = None) -> list[Check]:
    """bt_index_check with heapallindexed on every valid btree index."""
    with Session(connection, bindir) as session:
        results = session.json(AMCHECK_SQL)
    return [Check(f"index {index}", result == "ok", "" if result == "ok" else result)
            for index, result in sorted(results.items())]


@dataclass
class DatabaseVerifyReport:
    backup_id: str
    checks: list[Check]
    duration: float

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def verify_database_backup(vault, selector: str = "latest", *, jobs: int = 1,
                           amcheck: bool = True, work_dir: str | None = None,
                           ) -> DatabaseVerifyReport:
    """Restore a logical backup into a throwaway PostgreSQL and check it.

    Checks: the restore succeeds, every table has the row count the manifest
    recorded, and every btree index passes amcheck (heapallindexed).
    """

    started = time.monotonic()
    ref, manifest = select_backup(vault, selector, LOGICAL_TYPES)
    checks = check_logical_backup(vault, ref, manifest, jobs=jobs, amcheck=amcheck,
                                  work_dir=work_dir)
    report = DatabaseVerifyReport(ref.id, checks, time.monotonic() - started)
    failed = next((check for check in checks if not check.ok), None)
    vault.audit.record("verify_restore", backup_id=ref.id,
                       result="ok" if report.ok else "failed", checks=len(checks),
                       error=f"{failed.name}: {failed.detail}" if failed else None)
    return report


def check_logical_backup(vault, ref: BackupRef, manifest: dict, *, jobs: int = 1,
                         amcheck: bool = True, work_dir: str | None = None) -> list[Check]:
    """The checks of one logical backup, restored into a throwaway PostgreSQL."""
    from .postgres_cluster import TemporaryCluster

    meta = manifest["meta"]
    base = tempfile.mkdtemp(prefix="cosmic-verify-", dir=work_dir)
    cluster = TemporaryCluster()
    checks: list[Check] = []
    try:
        cluster.init().start()
        server = Connection(host="127.0.0.1", port=cluster.port, user=cluster.superuser)
        name = meta.get("database") or "restored"
        try:
            with Session(server.for_database("postgres"), cluster.bindir) as session:
                if meta.get("globals"):
                    problems = apply_globals(vault, ref, manifest, server.for_database(
                        "postgres"), session, cluster.bindir, [])
                    checks.append(Check("globals", True, "; ".join(problems)))
                _create_database(session, name, meta, [])
            into = server.for_database(name)
            warnings: list[str] = []
            _restore_objects(vault, ref, manifest, into, cluster.bindir, jobs=jobs,
                             no_owner=False, work_dir=base, commands=[], warnings=warnings)
            checks.append(Check("restore", True,
                                "; ".join([f"into a throwaway PostgreSQL {cluster.port}",
                                           *warnings])))
        except BackupError as error:
            checks.append(Check("restore", False, str(error)))
        else:
            checks += compare_tables(into, meta, cluster.bindir)
            if amcheck:
                checks += amcheck_indexes(into, cluster.bindir)
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)
    return checks


# -- check mode: what would happen ---------------------------------------------------


def describe_database(connection: Connection, bindir: str | None = None) -> dict[str, Any]:
    """What a backup of ``connection`` would read: server, size, tables (no change made)."""
    with Session(connection, bindir) as session:
        facts = session.json(DATABASE_SQL)
        facts["tables"] = len(session.json(TABLE_NAMES_SQL) or [])
    wanted = ("database", "server_version", "database_size", "tables", "in_recovery")
    return {key: facts[key] for key in wanted}


def plan_restore(vault, connection: Connection, *, selector: str = "latest",
                 database: str | None = None, maintenance_database: str = "postgres",
                 bindir: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """What restore_database would do, without doing it (for check mode)."""
    ref, manifest = select_backup(vault, selector, LOGICAL_TYPES)
    meta = manifest["meta"]
    target = database or connection.parameters().get("dbname") or meta["database"]
    with Session(connection.for_database(maintenance_database), bindir) as session:
        exists = session.value(
            f"select 1 from pg_database where datname = {quote_literal(target)}") == "1"
        connected = int(session.value(
            f"select count(*) from pg_stat_activity where datname = {quote_literal(target)}")
            or 0)
    stamp = _stamp(now)
    return {"backup_id": ref.id, "type": meta.get("type"), "database": target,
            "exists": exists, "sessions": connected,
            "previous": _derived_name(target, f"_pre_restore_{stamp}") if exists else None,
            "tables": len(meta.get("tables") or {}), "rows": meta.get("rows"),
            "taken_from": meta.get("database"), "server_version": meta.get("server_version")}


# -- the database kind's check for backup_verify (verification.py's convention) -------


def database_checks(vault, ref: BackupRef, manifest: dict) -> list:
    """Logical backups: restored and compared in a throwaway instance. Base backups:
    pg_verifybackup over the extracted files, and the WAL that makes them consistent."""
    from . import verification

    kind_type = manifest["meta"].get("type")
    if kind_type in LOGICAL_TYPES:
        checks = check_logical_backup(vault, ref, manifest)
    elif kind_type == "base":
        from .pitr import check_base_backup

        checks = check_base_backup(vault, ref, manifest)
    else:
        checks = [Check("database check", True, "not a dump or base backup made by "
                        "database_backup: stored-object authentication only")]
    return [verification.Check(check.name, check.ok, check.detail) for check in checks]


def _register() -> None:
    try:
        from . import verification
    except ImportError:  # the verification engine is not installed with this copy
        return
    verification.register(KIND, database_checks)


_register()
