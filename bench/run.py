"""``python -m bench.run``: every row, ours against its anchor, into bench/RESULTS.md.

    python -m bench.run [--scale 1.0] [--repeat 3] [--rows store-stream,read-verify]

Exit codes: 0 every row met its target, 1 a row missed it, 2 a row could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sys
import time
from datetime import UTC, datetime

from bench import data, report
from bench.harness import BenchError, Context, RowResult, fresh_directory, measure_row
from bench.rows import ROWS, select

ROOT = data.ROOT
COSMIC = os.path.join(ROOT, "bin", "cosmic-backup")
DEFAULT_OUTPUT = os.path.join(ROOT, "bench", "RESULTS.md")
EXIT_OK, EXIT_MISSED, EXIT_ERROR = 0, 1, 2


def prepare_data(needs: set[str], scale: float, data_dir: str,
                 stack: contextlib.ExitStack, log=print) -> dict:
    """Generate or reuse the reference data the selected rows need."""
    prepared = {}
    if needs & {"tree", "stream"}:
        prepared["tree"] = data.prepare_tree(scale, data_dir, log)
    if "stream" in needs:
        prepared["stream"] = data.prepare_stream(scale, data_dir, log)
    if "database" in needs:
        prepared["database"] = stack.enter_context(data.database(scale, data_dir, log))
    return prepared


def shared_setup(work_root: str, env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The run's keys: our local master key and the anchor's age identity."""
    keys = fresh_directory(os.path.join(work_root, "keys"))
    master = os.path.join(keys, "master.key")
    age_key = os.path.join(keys, "age.key")
    settings = os.path.join(keys, "cosmic.yml")
    write_settings(settings, os.path.join(keys, "unused-repository"), master, None)
    context = Context("keys", 0, keys, {}, env)
    # Bytecode ahead of time, as bootstrap.sh and a host install have it: an edit
    # since then would make every start of the CLI compile the engine again.
    context.shell(f"{shlex.quote(sys.executable)} -m compileall -q "
                  f"{shlex.quote(os.path.join(ROOT, 'plugins', 'module_utils'))}")
    context.shell(f"{shlex.quote(COSMIC)} --config {shlex.quote(settings)} key init")
    context.shell(f"age-keygen -o {shlex.quote(age_key)}")
    with open(age_key, encoding="utf-8") as handle:
        recipient = next(line.split(":", 1)[1].strip() for line in handle
                         if line.startswith("# public key:"))
    values = {"age_key": age_key, "age_recipient": recipient, "master_key": master}
    return values, context.setup_commands


def write_settings(path: str, repository: str, key_file: str, audit_log: str | None) -> None:
    """A cosmic-backup settings file (JSON is YAML, and quotes every path safely)."""
    settings = {
        "repositories": [{"name": "primary", "url": repository}],
        "keys": {"local_key_file": key_file},
        "compression": {"level": 3, "threads": 2},
    }
    if audit_log:
        settings["audit_log"] = audit_log
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(settings, handle, indent=2)
        handle.write("\n")


def row_context(row, scale: float, work_root: str, shared: dict[str, str], prepared: dict,
                env: dict[str, str]) -> Context:
    work = fresh_directory(os.path.join(work_root, row.name))
    repository = os.path.join(work, "repository")
    settings = os.path.join(work, "cosmic.yml")
    write_settings(settings, repository, shared["master_key"], os.path.join(work, "audit.jsonl"))
    values = {
        "cosmic": f"{shlex.quote(COSMIC)} --config {shlex.quote(settings)}",
        "repo": repository,
        "out": os.path.join(work, "anchor.out"),
        "work": work,
        "age_key": shared["age_key"],
        "age_recipient": shared["age_recipient"],
    }
    row_env = dict(env)
    if "tree" in prepared:
        values["tree"] = prepared["tree"].path
    if "stream" in prepared:
        values["stream"] = prepared["stream"].path
        values["stream_bytes"] = str(prepared["stream"].info["bytes"])
    if "database" in prepared:
        values["database"] = prepared["database"].name
        row_env.update(prepared["database"].environment())
    return Context(row.name, scale, work, values, row_env, dict(prepared))


def command_environment() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("COSMIC_BACKUP_", "PG"))}
    env["LC_ALL"] = "C.UTF-8"
    return env


def run(scale: float, repeat: int, row_names: list[str] | None, data_dir: str,
        output: str, log=print, keep: bool = False) -> tuple[int, list[RowResult]]:
    rows = select(row_names)
    data_dir = os.path.abspath(data_dir)
    started = datetime.now(UTC)
    clock = time.monotonic()
    machine_before = report.load_average()
    pressure_before = report.pressure()
    with data.locked(data_dir), contextlib.ExitStack() as stack:
        needs = {need for row in rows for need in row.needs}
        prepared = prepare_data(needs, scale, data_dir, stack, log)
        env = command_environment()
        work_root = fresh_directory(os.path.join(data_dir, "work"))
        shared, shared_commands = shared_setup(work_root, env)
        results = []
        for row in rows:
            context = row_context(row, scale, work_root, shared, prepared, env)
            results.append(measure_row(row, context, repeat, log))
        run_info = report.RunInfo(
            argv=["python", "-m", "bench.run", "--scale", f"{scale:g}", "--repeat", str(repeat)]
                 + (["--rows", ",".join(row.name for row in rows)]
                    if row_names else []),
            scale=scale, repeat=repeat, started=started,
            seconds=time.monotonic() - clock, load_before=machine_before,
            load_after=report.load_average(), shared_commands=shared_commands,
            data={name: value.info for name, value in prepared.items()},
            data_dir=data_dir, pressure_before=pressure_before,
            pressure_after=report.pressure(),
        )
        text = report.render(run_info, results)
        if not keep:
            shutil.rmtree(work_root, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as handle:
        handle.write(text)
    log("")
    log(report.table(results))
    log(f"\nbench: report written to {output}")
    if any(result.verdict == "error" for result in results):
        return EXIT_ERROR, results
    if any(result.verdict != "pass" for result in results):
        return EXIT_MISSED, results
    return EXIT_OK, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Time the engine against its anchors on the same data; write a report.",
        epilog="Exit codes: 0 every target met, 1 a target missed, 2 a row could not run.",
    )
    parser.add_argument("--scale", type=float, default=1.0,
                        help="reference data scale (1.0: 1.5 GB tree, 1 GiB stream)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each side")
    parser.add_argument("--rows", help="comma-separated row names (default: all); "
                        f"known: {', '.join(row.name for row in ROWS)}")
    parser.add_argument("--data-dir", default=data.DEFAULT_DATA_DIR,
                        help="cached reference data and scratch space (default var/bench)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="report (bench/RESULTS.md)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the rows' repositories and outputs in DATA_DIR/work "
                             "(several GB at scale 1), e.g. to profile a command by hand")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    try:
        data.scale_label(args.scale)
        names = [name.strip() for name in args.rows.split(",")] if args.rows else None
        code, _ = run(args.scale, args.repeat, names, args.data_dir, args.output,
                      keep=args.keep)
    except (ValueError, BenchError) as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())
