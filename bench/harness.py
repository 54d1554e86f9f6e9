"""Rows of ours-against-an-anchor timings, and how one row is measured.

A row names two shell commands that do the same job on the same data: ours
(the engine, through ``bin/cosmic-backup``) and an anchor (the tools an SRE
would use without us). Each runs ``repeat`` times, alternating which goes
first; the medians give the ratio ours/anchor, which the row's target bounds.

Commands are templates: ``{stream}``, ``{cosmic}``, ``{age_recipient}`` and
the rest are filled in from ``Context.values``; ``{measure}`` marks our
process, whose peak resident memory ``/usr/bin/time`` records. Everything a
row needs before its timed commands (a stored backup to read back, say) runs
untimed in its ``setup``; ``reset`` runs untimed before every timed command
(for a fresh repository each time).
"""

from __future__ import annotations

import os
import resource
import shlex
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MIB = 1 << 20
PEAK_RSS = "/usr/bin/time"
SIDES = ("ours", "anchor")


@dataclass(frozen=True)
class Target:
    """What a row must show: ours/anchor at most ``ratio``, our peak RSS at most
    ``rss_mib``, and what ours stores at most ``size_ratio`` times the anchor's."""

    ratio: float | None = 1.0
    rss_mib: float | None = None
    size_ratio: float | None = None

    def describe(self) -> str:
        parts = []
        if self.ratio is not None:
            parts.append(f"ratio <= {self.ratio}")
        if self.rss_mib is not None:
            parts.append(f"RSS <= {self.rss_mib:g} MiB")
        if self.size_ratio is not None:
            parts.append(f"size ratio <= {self.size_ratio}")
        return ", ".join(parts) or "none (informational)"


@dataclass
class Context:
    """One row's working directory, template values and environment."""

    row: str
    scale: float
    work: str
    values: dict[str, str]
    env: dict[str, str]
    data: dict[str, Any] = field(default_factory=dict)  # what the row's data needs yielded
    setup_commands: list[str] = field(default_factory=list)

    def format(self, template: str) -> str:
        return template.format(**self.values)

    def shell(self, template: str) -> None:
        """Run an untimed set-up command (recorded for the report)."""
        command = self.format(template)
        self.setup_commands.append(command)
        result = run_shell(command, self, keep_stdout=True)  # a playbook reports there
        if result.returncode != 0:
            raise BenchError(f"{self.row}: set-up command failed ({result.returncode}): "
                             f"{command}\n{result.output_tail}")


@dataclass(frozen=True)
class Row:
    """A benchmark row. Adding one is a few lines in ``bench/rows.py``."""

    name: str
    summary: str  # what is measured, in one line
    ours: str
    anchor: str
    target: Target = Target()
    needs: tuple[str, ...] = ("stream",)  # reference data: "stream", "tree", "database"
    inputs: tuple[str, ...] = ("{stream}",)  # read before each timed command (page cache)
    setup: Callable[[Context], None] | None = None
    reset: Callable[[Context, str], None] | None = None
    repeat: int | None = None  # overrides --repeat for expensive rows
    stored: tuple[str, str] | None = None  # what each side wrote (ours, anchor): bytes compared
    # One untimed run of the anchor before the timed ones: for rows whose first
    # run pays what every later run reuses (a cold PostgreSQL cluster's buffers,
    # new WAL segment files); the first timed run is always ours.
    warm_up: bool = False


class BenchError(Exception):
    """A command of a row failed: the row cannot be measured."""


@dataclass
class Sample:
    side: str
    seconds: float
    cpu_seconds: float
    peak_rss_kib: int | None
    stored_bytes: int | None = None


@dataclass
class RowResult:
    row: Row
    commands: dict[str, str]
    setup_commands: list[str]
    samples: list[Sample]
    error: str | None = None

    def _side(self, side: str) -> list[Sample]:
        return [sample for sample in self.samples if sample.side == side]

    def median(self, side: str) -> float | None:
        samples = self._side(side)
        return statistics.median(s.seconds for s in samples) if samples else None

    def median_cpu(self, side: str) -> float | None:
        samples = self._side(side)
        return statistics.median(s.cpu_seconds for s in samples) if samples else None

    @property
    def ratio(self) -> float | None:
        ours, anchor = self.median("ours"), self.median("anchor")
        if ours is None or not anchor:
            return None
        return ours / anchor

    def median_stored(self, side: str) -> int | None:
        values = [s.stored_bytes for s in self._side(side) if s.stored_bytes is not None]
        return int(statistics.median(values)) if values else None

    @property
    def size_ratio(self) -> float | None:
        ours, anchor = self.median_stored("ours"), self.median_stored("anchor")
        if ours is None or not anchor:
            return None
        return ours / anchor

    @property
    def cpu_ratio(self) -> float | None:
        ours, anchor = self.median_cpu("ours"), self.median_cpu("anchor")
        if ours is None or not anchor:
            return None
        return ours / anchor

    @property
    def peak_rss_mib(self) -> float | None:
        values = [s.peak_rss_kib for s in self._side("ours") if s.peak_rss_kib is not None]
        return max(values) / 1024 if values else None

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "error"
        target = self.row.target
        if target.ratio is not None and (self.ratio is None or self.ratio > target.ratio):
            return "FAIL"
        if target.rss_mib is not None and (self.peak_rss_mib is None
                                           or self.peak_rss_mib > target.rss_mib):
            return "FAIL"
        if target.size_ratio is not None and (self.size_ratio is None
                                              or self.size_ratio > target.size_ratio):
            return "FAIL"
        return "pass"


@dataclass
class ShellResult:
    returncode: int
    seconds: float
    cpu_seconds: float
    output_tail: str


@dataclass(frozen=True)
class ServerMark:
    """A PostgreSQL server's CPU time so far, and the processes serving it then."""

    postmaster: int
    cpu_seconds: float
    children: frozenset[int]


def _children(pid: int) -> frozenset[int]:
    """The postmaster's children: it has one thread, whose list holds them all."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="utf-8") as handle:
            return frozenset(int(child) for child in handle.read().split())
    except FileNotFoundError:
        return frozenset()


def _mark(postmaster: int) -> ServerMark:
    try:
        with open(f"/proc/{postmaster}/stat", encoding="utf-8") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        raise RuntimeError(f"the PostgreSQL server (pid {postmaster}) is not running") from None
    seconds = sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return ServerMark(postmaster, seconds, _children(postmaster))


def server_mark(data_dir: str) -> ServerMark:
    """CPU time of a running PostgreSQL server and of the backends it has reaped
    (utime, stime, cutime, cstime of the postmaster). A command's connections
    are served by backends that are not its children."""
    with open(os.path.join(data_dir, "postmaster.pid"), encoding="utf-8") as handle:
        return _mark(int(handle.readline()))


def server_cpu_since(mark: ServerMark, timeout: float = 2.0) -> float:
    """CPU the server spent since ``mark``. A client returns before its backend
    has exited, so wait (at most ``timeout``) until every backend started
    since the mark has been reaped: only then is its CPU in the postmaster's."""
    deadline = time.monotonic() + timeout
    while _children(mark.postmaster) - mark.children and time.monotonic() < deadline:
        time.sleep(0.005)
    return _mark(mark.postmaster).cpu_seconds - mark.cpu_seconds


def _database_dir(context: Context) -> str | None:
    """The bench database's data directory, for the rows that use it: its
    server's CPU counts towards a command that used it."""
    database = context.data.get("database")
    return database.cluster.data_dir if database is not None else None


def run_shell(command: str, context: Context, keep_stdout: bool = False) -> ShellResult:
    """Run ``command`` under bash with pipefail; wall time and the CPU time of all its
    processes and of the bench database's backends that served it. The tail is
    stderr's, after stdout's with ``keep_stdout``."""
    server = _database_dir(context)
    mark = server_mark(server) if server else None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], cwd=context.work, env=context.env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if keep_stdout else subprocess.DEVNULL,
        stderr=subprocess.PIPE, check=False,
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) \
        + (server_cpu_since(mark) if mark else 0.0)
    output = (process.stdout or b"") + process.stderr
    tail = output.decode(errors="replace").strip()[-2000:]
    return ShellResult(process.returncode, seconds, cpu, tail)


def warm(paths: list[str]) -> None:
    """Read files (or every file under directories) so they sit in the page cache."""
    for path in paths:
        files = [path] if os.path.isfile(path) else [
            os.path.join(directory, name)
            for directory, _dirs, names in os.walk(path) for name in names
        ]
        for name in files:
            with open(name, "rb", buffering=0) as handle:
                while handle.read(8 * MIB):
                    pass


def tree_bytes(path: str) -> int:
    """The bytes of the files in ``path`` (a file or a directory tree)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(directory, name))
               for directory, _dirs, names in os.walk(path) for name in names)


def settle(directory: str) -> None:
    """Flush what the last command wrote, so its writeback is not billed to the next."""
    for path, _dirs, names in os.walk(directory):
        for name in names:
            try:
                fd = os.open(os.path.join(path, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _peak_rss_kib(path: str) -> int | None:
    """The last line of ``/usr/bin/time -f %M -o path`` (it may prefix an exit status)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().split()
        return int(lines[-1])
    except (OSError, ValueError, IndexError):
        return None


def _run_side(row: Row, context: Context, commands: dict[str, str], side: str,
              inputs: list[str], rss_file: str):
    """Reset, warm the inputs, run one side's command, settle its writes; fail
    the row if the command failed."""
    if row.reset is not None:
        row.reset(context, side)
    warm(inputs)
    if os.path.exists(rss_file):
        os.unlink(rss_file)
    outcome = run_shell(commands[side], context)
    if outcome.returncode != 0:
        raise BenchError(f"{row.name}: {side} command failed ({outcome.returncode}): "
                         f"{commands[side]}\n{outcome.output_tail}")
    settle(context.work)
    return outcome


def measure_row(row: Row, context: Context, repeat: int, log=print) -> RowResult:
    """Set the row up, then time ours and the anchor ``repeat`` times each."""
    rss_file = os.path.join(context.work, "peak-rss")
    context.values["measure"] = f"{PEAK_RSS} -f %M -o {shlex.quote(rss_file)}"
    commands = {"ours": context.format(row.ours), "anchor": context.format(row.anchor)}
    result = RowResult(row, commands, context.setup_commands, [])
    try:
        if row.setup is not None:
            row.setup(context)
            settle(context.work)  # what the set-up wrote is not billed to the first run
        inputs = [context.format(path) for path in row.inputs]
        if row.warm_up:
            outcome = _run_side(row, context, commands, "anchor", inputs, rss_file)
            log(f"bench: {row.name} warm-up (anchor, untimed) {outcome.seconds:7.2f} s")
        for repetition in range(row.repeat or repeat):
            order = SIDES if repetition % 2 == 0 else SIDES[::-1]
            for side in order:
                outcome = _run_side(row, context, commands, side, inputs, rss_file)
                rss = _peak_rss_kib(rss_file) if "{measure}" in getattr(row, side) else None
                stored = (tree_bytes(context.format(row.stored[SIDES.index(side)]))
                          if row.stored else None)
                result.samples.append(Sample(side, outcome.seconds, outcome.cpu_seconds, rss,
                                             stored))
                log(f"bench: {row.name} #{repetition + 1} {side:<6} {outcome.seconds:7.2f} s"
                    + (f"  peak {rss / 1024:.0f} MiB" if rss else ""))
    except BenchError as error:
        result.error = str(error)
        log(f"bench: {error}")
    return result


def fresh_directory(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path
