"""The benchmark report: the table, the data, the method, versions and machine."""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from typing import Any

from bench.harness import RowResult

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = (
    ("zstd", ["zstd", "--version"]),
    ("age", ["age", "--version"]),
    ("restic", ["restic", "version"]),
    ("pgBackRest", ["pgbackrest", "version"]),
    ("pg_dump", ["pg_dump", "--version"]),
    ("pgbench", ["pgbench", "--version"]),
)
PACKAGES = ("zstandard", "aws-encryption-sdk", "cryptography", "boto3", "PyYAML")


@dataclass
class RunInfo:
    argv: list[str]
    scale: float
    repeat: int
    started: datetime
    seconds: float
    load_before: str
    load_after: str
    shared_commands: list[str]
    data: dict[str, dict[str, Any]]
    data_dir: str
    versions: dict[str, str] = field(default_factory=dict)
    pressure_before: dict[str, int] = field(default_factory=dict)
    pressure_after: dict[str, int] = field(default_factory=dict)


def load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def pressure() -> dict[str, int]:
    """Cumulative stall times (microseconds) from Linux pressure stall information."""
    totals = {}
    for resource in ("cpu", "io"):
        try:
            with open(f"/proc/pressure/{resource}", encoding="utf-8") as handle:
                for line in handle:
                    kind, *fields = line.split()
                    values = dict(field.split("=") for field in fields)
                    totals[f"{resource} {kind}"] = int(values["total"])
        except (OSError, KeyError, ValueError):
            continue
    return totals


def _stalls(info: RunInfo) -> str | None:
    """Share of the run's time in which some task waited for CPU or disk."""
    if not info.pressure_before or not info.pressure_after or info.seconds <= 0:
        return None
    parts = []
    for key in ("cpu some", "io some", "io full"):
        if key in info.pressure_before and key in info.pressure_after:
            stalled = (info.pressure_after[key] - info.pressure_before[key]) / 1e6
            parts.append(f"{key} {stalled / info.seconds:.0%}")
    return ", ".join(parts) or None


def _first_line(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (result.stdout or result.stderr).strip()
    return text.splitlines()[0].strip("* ") if text else "unknown"


def tool_versions() -> dict[str, str]:
    versions = {name: _first_line(argv) for name, argv in TOOLS}
    versions["cosmic-backup"] = _first_line([os.path.join(ROOT, "bin", "cosmic-backup"),
                                             "--version"])
    versions["engine commit"] = engine_commit()
    versions["Python"] = platform.python_version()
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def engine_commit() -> str:
    """HEAD, and a digest of uncommitted engine changes if there are any."""
    commit = _first_line(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    try:
        diff = subprocess.run(["git", "-C", ROOT, "diff", "HEAD", "--", "plugins", "bin"],
                              capture_output=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return commit
    if not diff:
        return commit
    return f"{commit} + uncommitted changes (diff sha256 {hashlib.sha256(diff).hexdigest()[:12]})"


def machine() -> dict[str, str]:
    info = {"CPUs (nproc)": str(len(os.sched_getaffinity(0)))}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle
                          if line.startswith("model name")), "unknown")
        info["CPU model"] = model
        with open("/proc/meminfo", encoding="utf-8") as handle:
            total = next(int(line.split()[1]) for line in handle if line.startswith("MemTotal"))
        info["memory"] = f"{total / (1 << 20):.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    info["kernel"] = f"{platform.system()} {platform.release()}"
    return info


def _display(path: str) -> str:
    """A path relative to the checkout when it is inside it."""
    relative = os.path.relpath(path, ROOT)
    return path if relative.startswith("..") else relative


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(results: list[RowResult]) -> str:
    lines = [
        "| Row | Ours median (s) | Anchor median (s) | Ratio ours/anchor | Target "
        "| Peak RSS ours (MiB) | Verdict | CPU ratio |",
        "|---|---:|---:|---:|---|---:|---|---:|",
    ]
    for result in results:
        lines.append(
            f"| {result.row.name} | {_fmt(result.median('ours'))} "
            f"| {_fmt(result.median('anchor'))} | {_fmt(result.ratio)} "
            f"| {result.row.target.describe()} | {_fmt(result.peak_rss_mib, 0)} "
            f"| {result.verdict} | {_fmt(result.cpu_ratio)} |"
        )
    return "\n".join(lines)


def _size(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count} B"


def _memory_flatness(results: list[RowResult]) -> str | None:
    by_name = {result.row.name: result for result in results}
    small, large = by_name.get("store-stream"), by_name.get("store-stream-2x")
    if not (small and large and small.peak_rss_mib and large.peak_rss_mib):
        return None
    growth = large.peak_rss_mib / small.peak_rss_mib - 1
    flat = "flat" if growth <= 0.10 else "NOT flat"
    return (f"Peak RSS of ours: {small.peak_rss_mib:.0f} MiB storing the stream, "
            f"{large.peak_rss_mib:.0f} MiB storing twice as much "
            f"({growth:+.0%}: {flat}).")


def _data_section(info: RunInfo) -> list[str]:
    lines = ["## Data", ""]
    tree, stream, database = (info.data.get(name) for name in ("tree", "stream", "database"))
    if tree:
        kinds = ", ".join(f"{kind} {values['files']} files / {_size(values['bytes'])}"
                          for kind, values in tree["by_kind"].items())
        lines += [
            f"- **File tree** (scale {tree['scale']}): {tree['files']} files in "
            f"{tree['directories']} directories, {tree['bytes'] / 1e9:.2f} GB; "
            f"{tree['incompressible_bytes'] / tree['bytes']:.1%} of the bytes incompressible "
            f"(AES-CTR keystream), the rest text, JSON and logs; sizes "
            f"{_size(tree['smallest'])} to {_size(tree['largest'])}, median "
            f"{_size(tree['median'])}. By kind: {kinds}. Digest `{tree['digest'][:16]}`.",
        ]
    if stream:
        lines += [
            f"- **Stream**: `{_display(info.data_dir)}/stream-{stream['scale']}.tar`, "
            f"{stream['files']} files of the tree (chosen in a hashed order, so that it keeps "
            f"the tree's mix; written in path order), {stream['bytes']:,} bytes "
            f"({_size(stream['bytes'])}), "
            f"{stream['incompressible_bytes'] / stream['content_bytes']:.1%} incompressible; "
            f"SHA-256 `{stream['sha256'][:16]}`.",
        ]
    if database:
        lines += [
            f"- **Database** `{database['name']}`: pgbench -i -s {database['pgbench_scale']} and "
            f"{database['document_rows']:,} rows of bench_documents (text and jsonb), "
            f"{database['bytes'] / 1e6:.0f} MB; checksum `{database['checksum']['digest'][:16]}`.",
        ]
    lines += ["", "Generated by `python -m bench.data` (seeded; the same bytes at the same "
              "scale) and cached under the data directory.", ""]
    return lines


def render(info: RunInfo, results: list[RowResult]) -> str:
    versions = info.versions or tool_versions()
    lines = [
        "# Benchmark results",
        "",
        f"Latest run: {info.started:%Y-%m-%d %H:%M} UTC, `{shlex.join(info.argv)}` "
        f"({info.seconds / 60:.1f} min). `make bench` regenerates this file "
        "(`BENCH_ARGS=\"--scale 0.1\"` for a quick look).",
        "",
        table(results),
        "",
        "Ratio: median wall-clock time of ours divided by the anchor's; below 1.0 ours is "
        "faster. Peak RSS: maximum resident memory of our process over its runs. CPU ratio: "
        "the same for CPU time (user + system of every process of the command, and of the "
        "bench database's backends that served it), which a "
        "busy shared machine disturbs less than wall-clock time; the verdict uses wall-clock "
        "time.",
        "",
    ]
    flatness = _memory_flatness(results)
    if flatness:
        lines += [flatness, ""]
    errors = [result for result in results if result.error]
    for result in errors:
        lines += [f"**{result.row.name} could not run:**", "", "```", result.error, "```", ""]
    lines += ["## Rows", ""]
    for result in results:
        samples = {side: ", ".join(f"{s.seconds:.2f}" for s in result.samples if s.side == side)
                   for side in ("ours", "anchor")}
        lines += [
            f"### {result.row.name}",
            "",
            f"{result.row.summary[0].upper()}{result.row.summary[1:]}.",
            "",
            f"- ours: `{result.commands['ours']}`",
            f"- anchor: `{result.commands['anchor']}`",
        ]
        for command in result.setup_commands:
            lines.append(f"- untimed set-up: `{command}`")
        if result.row.warm_up:
            lines.append("- untimed warm-up: the anchor's command, once, before the timed runs")
        lines += [
            f"- runs (s): ours {samples['ours'] or 'none'}; anchor {samples['anchor'] or 'none'}",
            f"- CPU time, median (s, user+system of every process and database backend): ours "
            f"{_fmt(result.median_cpu('ours'))}, anchor {_fmt(result.median_cpu('anchor'))}",
        ]
        if result.median_stored("ours") is not None and result.median_stored("anchor"):
            lines.append(f"- stored, median: ours {_size(result.median_stored('ours'))}, anchor "
                         f"{_size(result.median_stored('anchor'))} (size ratio "
                         f"{_fmt(result.size_ratio)})")
        lines.append("")
    lines += _data_section(info)
    lines += [
        "## Method",
        "",
        f"- Each side runs {info.repeat} time(s), alternating which goes first; the table shows "
        "medians. Every command runs as `bash -o pipefail -c COMMAND`, its output "
        "to /dev/null unless the command says otherwise.",
        "- Page cache: page caches cannot be dropped reliably on a shared machine, so the "
        "inputs are read (untimed) before every timed command: both sides read from memory.",
        "- Writes: after every timed command the row's files are fsynced (untimed), so one "
        "command's writeback is not billed to the next. Ours fsyncs each object before it "
        "commits it (inside its time); the issue's anchor (`> file`) does not, so "
        "store-stream-durable repeats the row with `sync FILE` (an fsync of that file) "
        "after the anchor. A files restore likewise syncs the restored tree before it "
        "swaps it in (restic does not): files-restore-durable repeats that row with "
        "`sync -f` (a syncfs) after the anchor.",
        "- Fresh state: store rows start each timed command with no repository and no output "
        "file; our repository and key are local (`keys.local_key_file`), compression "
        "`{level: 3, threads: 2}` like `zstd -3 -T2`.",
        "- Peak RSS: `/usr/bin/time -f %M` around our process (`{measure}` in the templates).",
        "- Stored size (rows that compare it): the bytes of the files each side's timed "
        "command left in its repository, summed after every run; the size ratio is ours "
        "over the anchor's, medians.",
        "- Set-up for the whole run (untimed): "
        + "; ".join(f"`{command}`" for command in info.shared_commands) + ".",
        "",
        "## Versions",
        "",
        "| Tool | Version |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in versions.items()],
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in machine().items()],
        f"| load average (1, 5, 15 min) before | {info.load_before} |",
        f"| load average after | {info.load_after} |",
        f"| data directory | `{_display(info.data_dir)}` |",
        *([f"| stalled during the run (pressure stall information) | {_stalls(info)} |"]
          if _stalls(info) else []),
        "",
        "The machine may be shared: compare ratios (same run, alternated), not absolute "
        "times across runs. \"cpu some 40%\" means that for 40% of the run at least one "
        "task was ready to run but waited for a CPU (the benchmark's own threads count too).",
        "",
    ]
    return "\n".join(lines)
