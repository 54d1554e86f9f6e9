"""Issue 3's rows, on the reference database (bench/data.py), same run: logical
backups and restores against the pg_dump and pg_restore an SRE would otherwise
run; base backups, point-in-time restores and WAL pushes against pgBackRest
(bench/pgbackrest.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from datetime import datetime, timezone

from bench import data, pgbackrest
from bench.harness import Context, Row, Target, fresh_directory


def _fresh(context: Context, side: str) -> None:
    """Each timed backup writes into nothing: a fresh repository, no output file."""
    if side == "ours":
        shutil.rmtree(context.values["repo"], ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(context.values["out"])


ROWS = [
    Row(
        name="database-backup",
        warm_up=True,
        summary="full logical backup (dump, row counts in its snapshot, globals), sealed",
        ours="{measure} {cosmic} database-backup",
        anchor="pg_dump -Fc -Z0 | zstd -3 -T2 | age -r {age_recipient} > {out}",
        target=Target(ratio=1.1),
        needs=("database",),
        inputs=(),
        reset=_fresh,
    ),
    Row(
        name="database-backup-vs-pg-dump",
        warm_up=True,
        summary="full logical backup against plain pg_dump -Fc (its own gzip, one core)",
        ours="{measure} {cosmic} database-backup",
        anchor="pg_dump -Fc > {out}",
        target=Target(ratio=0.35),
        needs=("database",),
        inputs=(),
        reset=_fresh,
    ),
]


# -- restores, base backups, point in time and WAL against pg_restore and pgBackRest --

PYTHON = os.path.join(data.ROOT, ".venv", "bin", "python")
PITR_RESTORE = os.path.join(data.ROOT, "bench", "pitr_restore.py")
RESTORED = ("{database}_restored_ours", "{database}_restored_anchor")


@pgbackrest.reported
def _drop_restored(context: Context, _side: str | None = None) -> None:
    """The logical restore row's copies go between runs, and before a base backup
    (they would be backed up with the cluster)."""
    cluster = context.data["database"].cluster
    for template in RESTORED:
        cluster.psql(f'DROP DATABASE IF EXISTS "{context.format(template)}" WITH (FORCE)')


@pgbackrest.reported
def _dump_once(context: Context) -> None:
    """The backups the restore row restores: ours sealed, the anchor's a local -Fc file."""
    _drop_restored(context)
    context.shell("{cosmic} database-backup")
    context.shell("pg_dump -Fc -f {work}/anchor.dump")


@pgbackrest.reported
def _stanza_on_reference(context: Context) -> None:
    _drop_restored(context)
    pgbackrest.write_config(context, context.data["database"].cluster)
    pgbackrest.stanza_create(context)


@pgbackrest.reported
def _fresh_repositories(context: Context, side: str) -> None:
    """Each timed backup or push writes into an empty repository (pgBackRest's: a stanza)."""
    if side == "ours":
        shutil.rmtree(context.values["repo"], ignore_errors=True)
        shutil.rmtree(os.path.join(context.work, "spool"), ignore_errors=True)
    else:
        pgbackrest.stanza_create(context, record=False)


# what the archiver does after archive_command succeeded, on both sides
_ARCHIVED = ('status={work}/segments/archive_status/$(basename "$segment"); '
             'mv "$status.ready" "$status.done"')


def wal_segments(scale: float) -> int:
    """Segments the wal-push row pushes: 32 (512 MiB) at scale 1.0, at least 4."""
    return max(4, round(32 * scale))


@pgbackrest.reported
def _segments_once(context: Context) -> None:
    _stanza_on_reference(context)
    cluster = context.data["database"].cluster
    pgbackrest.pgbench_segments(context, cluster, wal_segments(context.scale),
                                os.path.join(context.work, "segments"))
    context.setup_commands.append(
        "each run starts as a lagging archiver leaves pg_wal: every segment has its "
        "archive_status/NAME.ready, and each push that succeeds renames it to NAME.done")


def _segments_ready(context: Context, side: str) -> None:
    """An empty repository, and every segment ready again (as the server marks them)."""
    _fresh_repositories(context, side)
    segments = os.path.join(context.work, "segments")
    status = os.path.join(segments, "archive_status")
    shutil.rmtree(status, ignore_errors=True)
    os.makedirs(status)
    for name in os.listdir(segments):
        if len(name) == 24:
            open(os.path.join(status, f"{name}.ready"), "w").close()
    pgbackrest.chown_postgres(status)


def pitr_transactions(scale: float) -> int:
    """pgbench transactions before and again after the target: 200,000 at scale 1.0."""
    return max(2000, round(200_000 * scale))


def _push_archived(context: Context, staged: str, pushed: set[str]) -> None:
    """Push what the clone archived since the last call, into both archives, in order."""
    for name in sorted(os.listdir(staged)):
        if name in pushed:
            continue
        path = os.path.join(staged, name)
        pgbackrest.quiet(context, context.format(
            "{cosmic} wal-push --spool-dir {work}/spool ") + path)
        pgbackrest.quiet(context, f"{pgbackrest.command(context.work)} archive-push {path}")
        pushed.add(name)


@pgbackrest.reported
def _history_to_target(context: Context) -> None:
    """A clone of the reference cluster that archives its WAL; both base backups;
    pgbench load; the target time; more load; then the clone is stopped."""
    reference = context.data["database"]
    staged = os.path.join(context.work, "archived")
    os.makedirs(staged)
    pgbackrest.chown_postgres(staged)
    cluster = pgbackrest.clone_cluster(context, reference.cluster, reference.name,
                                       f"cp %p {staged}/%f")
    pushed: set[str] = set()
    context.setup_commands.append(context.format(
        f"archive_command copies each WAL file to {staged}; each one is then pushed with "
        "`{cosmic} wal-push --spool-dir {work}/spool FILE` and "
        f"`{pgbackrest.command(context.work)} archive-push FILE`"))
    try:
        pgbackrest.write_config(context, cluster)
        pgbackrest.stanza_create(context)
        env = (f"PGHOST=127.0.0.1 PGPORT={cluster.port} PGUSER=postgres "
               f"PGDATABASE={reference.name}")
        context.shell(f"{env} {{cosmic}} database-backup --type base")
        context.shell(f"{pgbackrest.command(context.work)} backup --type=full --start-fast=y "
                      "--archive-check=n")
        load = (f"{env} PGOPTIONS='-c synchronous_commit=off' pgbench -n -c 4 -j 2 "
                f"-t {pitr_transactions(context.scale) // 4}")
        context.shell(load)
        pgbackrest.wait_archived(cluster)
        _push_archived(context, staged, pushed)
        time.sleep(1)
        target = datetime.now(timezone.utc).isoformat(sep=" ")
        with open(os.path.join(context.work, "target-time"), "w", encoding="utf-8") as handle:
            handle.write(target + "\n")
        context.setup_commands.append(f"target time {target}")
        time.sleep(1)
        context.shell(load)
        pgbackrest.wait_archived(cluster, switch=True)
        _push_archived(context, staged, pushed)
    finally:
        cluster.stop()
    shutil.rmtree(cluster.base_dir, ignore_errors=True)
    shutil.rmtree(staged, ignore_errors=True)


@pgbackrest.reported
def _fresh_restore_directories(context: Context, side: str) -> None:
    """Ours restores into a data directory that does not exist yet; pgBackRest
    into an empty one (its socket directory beside it)."""
    base = os.path.join(context.work, f"restored-{side}")
    if os.path.exists(os.path.join(base, "data", "postmaster.pid")):
        pgbackrest.quiet(context, f"{pgbackrest.AS_POSTGRES} {pgbackrest.PG_BIN}/pg_ctl "
                                  f"-D {base}/data -m immediate -w stop")
    fresh_directory(base)
    if side == "anchor":
        os.makedirs(os.path.join(base, "data"), mode=0o700)
        pgbackrest.chown_postgres(base, os.path.join(base, "data"))


_ANCHOR_PG_CTL = (f"{pgbackrest.AS_POSTGRES} {pgbackrest.PG_BIN}/pg_ctl "
                  "-D {work}/restored-anchor/data")
_ANCHOR_REPLAY = (
    f"{pgbackrest.command()} restore --type=time --target=\"$(cat {{work}}/target-time)\" "
    "--target-action=promote --pg1-path={work}/restored-anchor/data"
    f" && {_ANCHOR_PG_CTL} -l {{work}}/restored-anchor/server.log -w -t 14400 "
    "-o \"-c port=5432 -c listen_addresses='' -c unix_socket_directories={work}/restored-anchor "
    "-c archive_mode=off\" start"
    " && until [ \"$(psql -h {work}/restored-anchor -p 5432 -U postgres -XAtc "
    "'select pg_is_in_recovery()' 2>/dev/null)\" = f ]; do "
    f"{_ANCHOR_PG_CTL} status > /dev/null || exit 1; sleep 0.2; done"
    f" && {_ANCHOR_PG_CTL} -m fast -w stop"
)
_PGBACKREST = "pgBackRest (zst level 3, process-max 2, aes-256-cbc)"

ROWS += [
    Row(
        name="database-restore",
        warm_up=True,
        summary="restore the latest logical backup into a new database (ours: decrypt, "
                "pg_restore -j2, row counts checked) against pg_restore -j2 of a local "
                "-Fc file",
        ours="{measure} {cosmic} database-restore --target {database}_restored_ours --jobs 2",
        anchor="createdb {database}_restored_anchor && "
               "pg_restore -j2 -d {database}_restored_anchor {work}/anchor.dump",
        target=Target(ratio=1.15),
        needs=("database",),
        inputs=("{repo}", "{work}/anchor.dump"),
        setup=_dump_once,
        reset=_drop_restored,
    ),
    Row(
        # The reference cluster does not archive WAL, so ours takes the WAL
        # that makes the backup consistent into it (pg_basebackup -X fetch,
        # the engine's choice); pgBackRest without archiving can only skip the
        # check (archive-check=n) and stores no WAL. Both checkpoint fast.
        name="base-backup",
        warm_up=True,
        summary="physical base backup of the reference cluster against a "
                f"{_PGBACKREST} full backup; ours carries its WAL (-X fetch), "
                "pgBackRest's none (archive-check=n); fast checkpoint on both; size: "
                "the repositories' bytes",
        # Exit 1 is the CLI's warning that archiving is off (expected here).
        ours="{measure} {cosmic} database-backup --type base || [ $? -eq 1 ]",
        anchor=f"{pgbackrest.command()} backup --type=full --start-fast=y --archive-check=n",
        target=Target(ratio=1.0, size_ratio=1.05),
        needs=("database",),
        inputs=(),
        setup=_stanza_on_reference,
        reset=_fresh_repositories,
        stored=("{repo}", "{work}/pgbackrest/repo"),
    ),
    Row(
        name="pitr-restore",
        summary="point-in-time restore of a clone of the reference cluster into a new data "
                "directory: the base backup, then WAL replayed to a target time between two "
                f"pgbench runs until the server has promoted, against {_PGBACKREST} "
                "restore --type=time and the same replay",
        ours=f"{{measure}} {PYTHON} {PITR_RESTORE} --config {{work}}/cosmic.yml "
             "--target-time \"$(cat {work}/target-time)\" "
             "--data-directory {work}/restored-ours/data",
        anchor=_ANCHOR_REPLAY,
        target=Target(ratio=1.5),
        needs=("database",),
        inputs=("{repo}", "{work}/pgbackrest/repo"),
        setup=_history_to_target,
        reset=_fresh_restore_directories,
    ),
    Row(
        # archive_command starts one process per segment, as the postgres
        # user: both sides run once per segment, both through runuser.
        name="wal-push",
        summary="push WAL segments written under pgbench load, one process per segment "
                f"(as archive_command runs them), against {_PGBACKREST} archive-push; "
                "ratio <= 1.0 means at least pgBackRest's segments per second",
        ours="for segment in {work}/segments/????????????????????????; do runuser -u root -- "
             "{measure} {cosmic} wal-push --spool-dir {work}/spool \"$segment\" || exit; "
             + _ARCHIVED + "; done",
        anchor="for segment in {work}/segments/????????????????????????; do "
               f"{pgbackrest.command()} archive-push \"$segment\" || exit; "
               + _ARCHIVED + "; done",
        target=Target(ratio=1.0),
        needs=("database",),
        inputs=("{work}/segments",),
        setup=_segments_once,
        reset=_segments_ready,
        stored=("{repo}", "{work}/pgbackrest/repo"),
    ),
]
