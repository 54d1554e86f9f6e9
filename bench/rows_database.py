"""Issue 3's rows: logical database backups against the pg_dump pipelines an SRE
would otherwise run, on the reference database (bench/data.py), same run."""

from __future__ import annotations

import contextlib
import os
import shutil

from bench.harness import Context, Row, Target


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
        summary="full logical backup against plain pg_dump -Fc (its own gzip, one core)",
        ours="{measure} {cosmic} database-backup",
        anchor="pg_dump -Fc > {out}",
        target=Target(ratio=0.35),
        needs=("database",),
        inputs=(),
        reset=_fresh,
    ),
]
