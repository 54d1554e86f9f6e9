"""Declared command lines for the tools the engine drives (pg_dump, pg_restore, ...).

In the spirit of community.general's ``cmd_runner``: each option of a tool is
declared once with a small formatter that turns a value into arguments, and a
command line is built from values, never concatenated by hand. Tests feed
values in and expect the exact argv out.

    PG_DUMP = CommandSpec("pg_dump", [
        ("format", as_option("--format")),
        ("jobs", as_option("--jobs")),
        ("schema_only", as_flag("--schema-only")),
        ("dbname", as_option("--dbname")),
    ])
    PG_DUMP.argv(format="custom", schema_only=True, dbname="host=db1")
    # ['pg_dump', '--format=custom', '--schema-only', '--dbname=host=db1']
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from .errors import ConfigError, ExternalCommandError

Formatter = Callable[[Any], list[str]]


def as_flag(flag: str) -> Formatter:
    """``flag`` when the value is true, nothing otherwise."""
    return lambda value: [flag] if value else []


def as_option(option: str, *, separate: bool = False) -> Formatter:
    """``--option=value`` (or ``-o value`` with ``separate``), nothing for None or False."""

    def format_value(value):
        if value is None or value is False:
            return []
        return [option, str(value)] if separate else [f"{option}={value}"]

    return format_value


def as_repeated(option: str) -> Formatter:
    """``--option=a --option=b`` for a list of values."""
    return lambda values: [f"{option}={value}" for value in (values or ())]


def as_map(mapping: dict[Any, Sequence[str]]) -> Formatter:
    """A fixed argument list per value (e.g. {"fast": ["--checkpoint=fast"]})."""

    def format_value(value):
        if value is None:
            return []
        if value not in mapping:
            raise ConfigError(f"unsupported value {value!r}: use one of "
                              f"{', '.join(str(key) for key in mapping)}")
        return list(mapping[value])

    return format_value


def as_positional() -> Formatter:
    return lambda value: [] if value is None else [str(value)]


@dataclass(frozen=True)
class CommandSpec:
    """A tool and the ordered options it accepts."""

    tool: str
    options: Sequence[tuple[str, Formatter]]
    fixed: Sequence[str] = ()  # arguments every run carries

    def argv(self, bindir: str | None = None, **values: Any) -> list[str]:
        """The command line for ``values``; unknown option names are an error."""
        known = {name for name, _formatter in self.options}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{self.tool} has no option {', '.join(unknown)}")
        tool = os.path.join(bindir, self.tool) if bindir else self.tool
        argv = [tool, *self.fixed]
        for name, formatter in self.options:
            if name in values:
                argv += formatter(values[name])
        return argv


def display(argv: Sequence[str]) -> str:
    """A command line as an operator would type it (for RETURN and the audit log)."""
    import shlex

    return " ".join(shlex.quote(part) for part in argv)


class StderrFile:
    """A tool's standard error in an unnamed temporary file: never a pipe that
    could fill up and stall the tool, read back when the tool ends."""

    def __init__(self):
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()

    def fileno(self) -> int:
        return self.file.fileno()

    def text(self, limit: int = 4000) -> str:
        self.file.seek(0)
        data = self.file.read()
        return data.decode(errors="replace").strip()[-limit:]

    def close(self) -> None:
        self.file.close()


def run(argv: Sequence[str], *, env: dict[str, str] | None = None, input: bytes | None = None,
        timeout: float | None = None, what: str | None = None) -> subprocess.CompletedProcess:
    """Run a tool to completion; a failure raises with its standard error."""
    try:
        result = subprocess.run(list(argv), input=input, capture_output=True, env=env,
                                timeout=timeout, check=False)
    except FileNotFoundError:
        raise ConfigError(f"{argv[0]} is not installed: apt-get install postgresql-client-15"
                          ) from None
    except subprocess.TimeoutExpired:
        raise ExternalCommandError(f"{what or os.path.basename(argv[0])} did not finish "
                                   f"within {timeout:.0f} s") from None
    if result.returncode != 0:
        raise ExternalCommandError(
            f"{what or os.path.basename(argv[0])} failed (exit {result.returncode}): "
            f"{result.stderr.decode(errors='replace').strip()[-2000:]}"
        )
    return result


# pg_dump and pg_basebackup write through stdio, whose buffer on a pipe is one
# page: a write, and a wake-up of the reader, for every 4 KiB of a dump.
# coreutils' stdbuf gives the tool a larger buffer; about a CPU-second less
# per GiB between the tool, the kernel and our reader.
STDOUT_BUFFER = 1 << 20


def with_large_stdout(argv: Sequence[str]) -> list[str]:
    """``argv`` run with a large stdio output buffer, where stdbuf and the tool
    are installed (otherwise as it is, to fail or run as before)."""
    stdbuf = shutil.which("stdbuf")
    if stdbuf is None or shutil.which(argv[0]) is None:
        return list(argv)
    return [stdbuf, f"--output={STDOUT_BUFFER}", *argv]


@contextlib.contextmanager
def tool_output(argv: Sequence[str], *, env: dict[str, str] | None = None,
                what: str) -> Iterator[BinaryIO]:
    """A tool's standard output to read (into a backup); on leaving, the tool must
    have succeeded, or ``what`` failed and nothing was stored."""
    stderr = StderrFile()
    try:
        # Unbuffered: sealing splices it into zstd without a copy through Python.
        process = subprocess.Popen(with_large_stdout(argv), stdout=subprocess.PIPE,
                                   stderr=stderr, env=env, bufsize=0)
        try:
            yield process.stdout
        except BaseException:
            process.kill()  # nothing will read it: waiting could be long (pg_dump on a lock)
            raise
        finally:
            process.stdout.close()
            returncode = process.wait()
        if returncode != 0:
            raise ExternalCommandError(f"{what} failed (exit {returncode}): {stderr.text()}; "
                                       "nothing was stored as a backup")
    finally:
        stderr.close()


def feed(argv: Sequence[str], plain: BinaryIO, *, env: dict[str, str] | None = None,
         where: str = "", chunk_size: int = 4 << 20) -> None:
    """Stream ``plain`` into a tool's standard input.

    ``plain`` is read to its end even when the tool stops reading early, so a
    verifying reader (size and checksum checked at EOF) always gets to check.
    """
    stderr = StderrFile()
    try:
        process = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stderr=stderr, env=env)
    except FileNotFoundError:
        stderr.close()
        raise ConfigError(f"{argv[0]} is not installed") from None
    failure: list[BaseException] = []

    def pump() -> None:
        try:
            broken = False
            while True:
                chunk = plain.read(chunk_size)
                if not chunk:
                    break
                if not broken:
                    try:
                        process.stdin.write(chunk)
                    except BrokenPipeError:
                        broken = True
                        if process.wait() != 0:
                            return  # the tool failed: its error says more than the rest
        except BaseException as error:  # noqa: BLE001 - re-raised by the caller
            failure.append(error)
        finally:
            with contextlib.suppress(BrokenPipeError, OSError):
                process.stdin.close()

    thread = threading.Thread(target=pump, name="feed", daemon=True)
    thread.start()
    thread.join()
    returncode = process.wait()
    try:
        if failure:
            raise failure[0]
        if returncode != 0:
            raise ExternalCommandError(
                f"{os.path.basename(argv[0])} {where} failed (exit {returncode}): "
                f"{stderr.text()}".replace("  ", " "))
    finally:
        stderr.close()
