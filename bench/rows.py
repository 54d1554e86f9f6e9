"""The benchmark rows: ours against an anchor, on the same data in the same run.

To add a row, append a ``Row`` to ``ROWS``: two command templates, a target,
and the data it needs. Template values (see ``bench.run.row_context``):

``{cosmic}``         bin/cosmic-backup with this row's settings (a fresh local
                     repository ``{repo}`` and the run's local master key)
``{measure}``        put before our program: records its peak RSS
``{stream}``         the tar stream (1 GiB at scale 1.0); ``{stream_bytes}``
``{tree}``           the file tree
``{age_key}``, ``{age_recipient}``   the anchor's age identity file and recipient
``{out}``            a scratch output file for the anchor
``{work}``           this row's directory
``{database}``       the reference database (rows that need "database"; PG* is set)
"""

from __future__ import annotations

import contextlib
import os
import shutil

from bench import rows_database, rows_drill, rows_files
from bench.harness import Context, Row, Target

STREAM_RSS_MIB = 256  # the bound on our memory, whatever the size


def fresh_outputs(context: Context, side: str) -> None:
    """Each timed command writes into nothing: a fresh repository, no output file."""
    if side == "ours":
        shutil.rmtree(context.values["repo"], ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(context.values["out"])


def store_stream_once(context: Context) -> None:
    """The backup that read-verify reads: sealed by us, and by the anchor pipeline."""
    context.shell("{cosmic} backup-stream files --name tree.tar --file {stream}")
    context.shell("zstd -3 -T2 -c {stream} | age -r {age_recipient} > {out}")


ROWS = [
    Row(
        name="store-stream",
        summary="seal the tar stream into a fresh local repository",
        ours="{measure} {cosmic} backup-stream files --name tree.tar --file {stream}",
        anchor="zstd -3 -T2 -c {stream} | age -r {age_recipient} > {out}",
        target=Target(ratio=1.0, rss_mib=STREAM_RSS_MIB),
        reset=fresh_outputs,
    ),
    Row(
        # Ours fsyncs what it stores (a backup must survive a crash); the
        # issue's anchor leaves its file in the page cache. This row makes
        # the anchor durable too (`sync FILE` fsyncs that file only), to
        # show what of the gap is the disk.
        name="store-stream-durable",
        summary="the store-stream row with the anchor's output fsynced too (informational)",
        ours="{measure} {cosmic} backup-stream files --name tree.tar --file {stream}",
        anchor="zstd -3 -T2 -c {stream} | age -r {age_recipient} > {out} && sync {out}",
        target=Target(ratio=None, rss_mib=STREAM_RSS_MIB),
        reset=fresh_outputs,
    ),
    Row(
        name="read-verify",
        summary="read the stored stream back, decrypt, decompress and verify it",
        ours="{measure} {cosmic} restore-stream latest --kind files --name tree.tar > /dev/null",
        anchor="age -d -i {age_key} {out} | zstd -d > /dev/null",
        target=Target(ratio=1.0, rss_mib=STREAM_RSS_MIB),
        inputs=("{repo}", "{out}"),
        setup=store_stream_once,
    ),
    Row(
        name="store-stream-2x",
        summary="memory check: twice the stream, through a pipe (peak RSS must stay flat)",
        ours="cat {stream} {stream} | {measure} {cosmic} backup-stream files --name tree-2x.tar",
        anchor="cat {stream} {stream} | zstd -3 -T2 -c | age -r {age_recipient} > {out}",
        target=Target(ratio=None, rss_mib=STREAM_RSS_MIB),
        reset=fresh_outputs,
    ),
]

ROWS += rows_files.ROWS  # issue 4: file snapshots against restic
ROWS += rows_database.ROWS  # issue 3: logical database backups against pg_dump
ROWS += rows_drill.ROWS  # issue 5: the drill's recovery against its engine restores alone


def select(names: list[str] | None) -> list[Row]:
    """The rows to run, in catalogue order; unknown names are an error."""
    if not names:
        return list(ROWS)
    known = {row.name: row for row in ROWS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown row(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [row for row in ROWS if row.name in names]
