"""pgBackRest, the anchor of issue 3's physical rows: a stanza per row, its
repository in the row's directory, configured as the issue says (zst level 3,
2 processes, AES-256-CBC), and the PostgreSQL side of those rows (a clone of
the reference cluster, WAL segments made by pgbench, the restore and replay).

pgBackRest and the PostgreSQL server tools run as the ``postgres`` user
(``runuser``), as the server's archive_command and restore_command run them;
the commands the report prints say so.
"""

from __future__ import annotations

import functools
import glob
import os
import pwd
import shutil
import time

from bench.harness import BenchError, Context, fresh_directory, run_shell

STANZA = "bench"
# The repository is a benchmark's scratch space; the passphrase protects nothing.
CIPHER_PASS = "cosmic-bench-pgbackrest-passphrase"
SEGMENT_BYTES = 16 << 20


def pg_bindir() -> str:
    """PostgreSQL's server binaries (pg_ctl is not on PATH on Debian)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(
        path.split("/")[-2]) if path.split("/")[-2].isdigit() else 0)
    return found[-1] if found else "/usr/lib/postgresql/15/bin"


PG_BIN = pg_bindir()
AS_POSTGRES = "runuser -u postgres --"


def reported(function):
    """A set-up or reset step whose failure makes the row an error, not the run."""
    @functools.wraps(function)
    def step(context: Context, *args):
        try:
            return function(context, *args)
        except BenchError:
            raise
        except Exception as error:
            raise BenchError(f"{context.row}: {function.__name__}: {error}") from error
    return step


def directory(context: Context) -> str:
    """The row's pgBackRest directory: config, repository, logs and locks."""
    return os.path.join(context.work, "pgbackrest")


def command(work_template: str = "{work}") -> str:
    """``pgbackrest`` as the postgres user with the row's configuration (a template)."""
    return (f"{AS_POSTGRES} pgbackrest --config {work_template}/pgbackrest/pgbackrest.conf "
            f"--stanza={STANZA}")


def chown_postgres(*paths: str) -> None:
    owner = pwd.getpwnam("postgres")
    for path in paths:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def write_config(context: Context, cluster) -> str:
    """A stanza on ``cluster`` (a running TemporaryCluster) with its repository under the row."""
    base = fresh_directory(directory(context))
    for name in ("repo", "log", "lock", "spool"):
        os.makedirs(os.path.join(base, name))
        chown_postgres(os.path.join(base, name))
    chown_postgres(base)
    path = os.path.join(base, "pgbackrest.conf")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join([
            "[global]",
            f"repo1-path={base}/repo",
            "repo1-cipher-type=aes-256-cbc",
            f"repo1-cipher-pass={CIPHER_PASS}",
            "repo1-retention-full=9999",
            "compress-type=zst",
            "compress-level=3",
            "process-max=2",
            f"log-path={base}/log",
            f"lock-path={base}/lock",
            f"spool-path={base}/spool",
            "log-level-console=warn",
            "log-level-file=off",
            "",
            f"[{STANZA}]",
            f"pg1-path={cluster.data_dir}",
            f"pg1-port={cluster.port}",
            f"pg1-socket-path={cluster.socket_dir}",
            "pg1-user=postgres",
            "",
        ]))
    os.chmod(path, 0o644)
    return path


def stanza_create(context: Context, record: bool = True) -> None:
    """An empty repository for the stanza (what a fresh pgBackRest repository holds)."""
    repo = os.path.join(directory(context), "repo")
    shutil.rmtree(repo, ignore_errors=True)
    os.makedirs(repo)
    chown_postgres(repo)
    step = f"{command(context.work)} stanza-create"
    if record:
        context.shell(step)
    else:
        quiet(context, step)


def quiet(context: Context, command_line: str) -> str:
    """Run an untimed command that the report does not list (one of many alike)."""
    result = run_shell(command_line, context)
    if result.returncode != 0:
        raise BenchError(f"{context.row}: set-up command failed ({result.returncode}): "
                         f"{command_line}\n{result.output_tail}")
    return result.output_tail


# -- a clone of the reference cluster, with WAL archiving -----------------------------


def clone_cluster(context: Context, source, keep_database: str, archive_command: str):
    """A physical copy of ``source`` in the row's directory that archives its WAL.

    Only ``keep_database`` of the reference databases is kept (the cluster
    holds one per scale that was ever prepared). Returns a started
    TemporaryCluster; the caller stops it.
    """
    from ansible_collections.cosmic.backup.plugins.module_utils.postgres_cluster import (
        TemporaryCluster,
    )

    if "'" in archive_command:
        raise ValueError("archive_command must not contain single quotes")
    base = fresh_directory(os.path.join(context.work, "clone"))
    chown_postgres(base)
    os.chmod(base, 0o700)
    cluster = TemporaryCluster(base, settings={
        "archive_mode": "on", "archive_command": f"'{archive_command}'",
        "max_wal_size": "'1GB'",
    })
    context.shell(f"{AS_POSTGRES} {PG_BIN}/pg_basebackup -h 127.0.0.1 -p {source.port} "
                  f"-U postgres -D {cluster.data_dir} -X stream -c fast")
    os.makedirs(cluster.socket_dir)
    chown_postgres(cluster.socket_dir)
    cluster.write_settings(cluster.settings)
    cluster.start()
    try:
        others = cluster.psql("SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_%' "
                              f"AND datname <> '{keep_database}'").split()
        for name in others:
            cluster.psql(f'DROP DATABASE "{name}"')
        cluster.psql("CHECKPOINT")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def wait_archived(cluster, switch: bool = False, timeout: float = 600) -> None:
    """Wait until the archiver has taken every finished segment (after ending the
    current one, with ``switch``)."""
    if switch:
        cluster.psql("SELECT pg_switch_wal()")
    status = os.path.join(cluster.data_dir, "pg_wal", "archive_status")
    deadline = time.monotonic() + timeout
    while any(name.endswith(".ready") for name in os.listdir(status)):
        if time.monotonic() > deadline:
            raise BenchError(f"the clone's archiver fell {timeout:.0f} s behind; see "
                             f"{cluster.base_dir}/server.log")
        time.sleep(0.2)


# -- WAL segments made by pgbench ------------------------------------------------------


def pgbench_segments(context: Context, cluster, count: int, into: str) -> list[str]:
    """``count`` complete WAL segments of ``cluster`` written under pgbench load.

    A scratch database takes the load (the reference database is left as it
    is); a replication slot holds the WAL until pg_receivewal has copied it.
    """
    slot, scratch = "cosmic_bench_wal", "cosmic_bench_wal_load"
    os.makedirs(into)
    chown_postgres(into)
    env_prefix = f"PGHOST=127.0.0.1 PGPORT={cluster.port} PGUSER=postgres"
    cluster.psql(f"SELECT pg_drop_replication_slot('{slot}') FROM pg_replication_slots "
                 f"WHERE slot_name = '{slot}'")
    cluster.psql(f"DROP DATABASE IF EXISTS {scratch}")
    cluster.psql(f"CREATE DATABASE {scratch}")
    try:
        context.shell(f"{env_prefix} pgbench -i -q -s 2 {scratch}")
        start = cluster.psql(f"SELECT lsn FROM pg_create_physical_replication_slot("
                             f"'{slot}', true)")
        # Checkpoints between rounds bring full-page images back, as under real load.
        load = (f"{env_prefix} PGOPTIONS='-c synchronous_commit=off' "
                f"pgbench -n -c 4 -j 2 -t 5000 {scratch}")
        context.setup_commands.append(f"until {count + 1} segments of WAL since {start}: "
                                      f"CHECKPOINT; {load}")
        needed = (count + 1) * SEGMENT_BYTES
        while int(float(cluster.psql(f"SELECT pg_current_wal_lsn() - '{start}'"))) < needed:
            cluster.psql("CHECKPOINT")
            quiet(context, load)
        end = cluster.psql("SELECT pg_current_wal_lsn()")
        context.shell(f"{AS_POSTGRES} {PG_BIN}/pg_receivewal -h 127.0.0.1 -p {cluster.port} "
                      f"-U postgres -D {into} -S {slot} --endpos={end} --no-loop")
    finally:
        cluster.psql(f"SELECT pg_drop_replication_slot('{slot}') FROM pg_replication_slots "
                     f"WHERE slot_name = '{slot}'")
        cluster.psql(f"DROP DATABASE IF EXISTS {scratch}")
    names = sorted(name for name in os.listdir(into) if len(name) == 24)
    for name in os.listdir(into):
        if name not in names[:count]:
            os.unlink(os.path.join(into, name))
    if len(names) < count:
        raise BenchError(f"{context.row}: pg_receivewal wrote {len(names)} complete "
                         f"segments, not {count}")
    return names[:count]
