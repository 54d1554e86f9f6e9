"""Rows of issue 4: file snapshots of the reference tree against restic, same run.

Each side works on its own hard-linked copy of the tree (``cp -al``), so
changing 2% of the files (new content written beside and renamed over) never
touches the cached reference tree, and both sides see the same change.
"""

from __future__ import annotations

import os
import random
import shutil

from bench.harness import Context, Row, Target

RESTIC = "RESTIC_PASSWORD=bench restic --quiet --no-cache -r {work}/restic"
OURS = "{measure} {cosmic} files"
CHANGED_SHARE = 0.02


def _restic_init(context: Context) -> None:
    shutil.rmtree(os.path.join(context.work, "restic"), ignore_errors=True)
    context.shell(RESTIC + " init")


def _fresh(context: Context, side: str) -> None:
    """First-snapshot rows: an empty repository (and no cache) before every timed run."""
    if side == "ours":
        shutil.rmtree(context.values["repo"], ignore_errors=True)
        shutil.rmtree(os.path.join(context.work, "state"), ignore_errors=True)
    else:
        _restic_init(context)


def _copies(context: Context) -> None:
    """Each side's own copy of the tree, snapshotted once (untimed)."""
    for side in ("ours", "anchor"):
        copy = os.path.join(context.work, f"tree-{side}")
        shutil.rmtree(copy, ignore_errors=True)
        context.shell(f"cp -al {{tree}} {copy}")
    _restic_init(context)
    context.shell("{cosmic} files backup {work}/tree-ours --label bench "
                  "--state-dir {work}/state")
    context.shell(RESTIC + " backup {work}/tree-anchor")


def change_share(tree: str, share: float, seed: int) -> int:
    """Give ``share`` of the files new content of the same size; returns how many."""
    paths = sorted(os.path.join(directory, name)
                   for directory, _dirs, names in os.walk(tree) for name in names)
    rng = random.Random(seed)
    chosen = rng.sample(paths, max(1, round(len(paths) * share)))
    for path in chosen:
        size = os.path.getsize(path)
        temp = path + ".bench-new"
        with open(temp, "wb") as handle:
            handle.write(rng.randbytes(size))
        os.replace(temp, path)  # a new inode: the hard-linked reference stays as it was
    return len(chosen)


_rounds: dict[tuple[str, str], int] = {}


def _change(context: Context, side: str) -> None:
    """Before each timed second snapshot: 2% of that side's files changed, the same
    files with the same bytes on both sides (the seed counts the side's rounds)."""
    number = _rounds.get((context.work, side), 0) + 1
    _rounds[(context.work, side)] = number
    change_share(os.path.join(context.work, f"tree-{side}"), CHANGED_SHARE, number)


def _stored(context: Context) -> None:
    """Restore and verify rows read one snapshot of the tree on each side."""
    _restic_init(context)
    context.shell("{cosmic} files backup {tree} --label bench --state-dir {work}/state")
    context.shell(RESTIC + " backup {tree}")


def _no_outputs(context: Context, side: str) -> None:
    shutil.rmtree(os.path.join(context.work, f"out-{side}"), ignore_errors=True)


ROWS = [
    Row(
        name="files-first-snapshot",
        summary="first snapshot of the reference tree into an empty repository",
        ours=OURS + " backup {tree} --label bench --state-dir {work}/state",
        anchor=RESTIC + " backup {tree}",
        target=Target(ratio=1.0),
        needs=("tree",), inputs=("{tree}",), reset=_fresh,
    ),
    Row(
        name="files-second-snapshot",
        summary="second snapshot after 2% of the files got new content; the repository "
                "sizes are measured after it (each repetition adds one more snapshot to both)",
        ours=OURS + " backup {work}/tree-ours --label bench --state-dir {work}/state",
        anchor=RESTIC + " backup {work}/tree-anchor",
        target=Target(ratio=1.0, size_ratio=1.05),
        needs=("tree",), inputs=("{tree}",), setup=_copies, reset=_change,
        stored=("{repo}", "{work}/restic"),
    ),
    Row(
        name="files-restore",
        summary="full restore of a snapshot of the tree into an empty directory",
        ours=OURS + " restore latest --label bench --target {work}/out-ours --no-safety-backup",
        anchor=RESTIC + " restore latest --target {work}/out-anchor",
        target=Target(ratio=1.0),
        needs=("tree",), inputs=("{repo}", "{work}/restic"), setup=_stored, reset=_no_outputs,
    ),
    Row(
        # Ours syncs the restored tree before it swaps it in (a crash must not
        # leave files full of zeros); restic leaves it in the page cache. This
        # row syncs the anchor's file system too (`sync -f`, a syncfs), to show
        # what of the gap is the disk.
        name="files-restore-durable",
        summary="the files-restore row with the anchor's restored tree synced too "
                "(informational)",
        ours=OURS + " restore latest --label bench --target {work}/out-ours --no-safety-backup",
        anchor=RESTIC + " restore latest --target {work}/out-anchor && sync -f {work}/out-anchor",
        target=Target(ratio=None),
        needs=("tree",), inputs=("{repo}", "{work}/restic"), setup=_stored, reset=_no_outputs,
    ),
    Row(
        name="files-verify-data",
        summary="read and check every stored byte of the snapshots (restic check --read-data)",
        ours=OURS + " verify all",
        anchor=RESTIC + " check --read-data",
        target=Target(ratio=1.0),
        needs=("tree",), inputs=("{repo}", "{work}/restic"), setup=_stored,
    ),
]
