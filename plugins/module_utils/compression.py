"""zstd as a separate process, reading a file itself or fed by a thread.

Compression is most of a backup's CPU time. Run as its own process, zstd
works on both cores beside our encryption whatever the interpreter does, and
it is the same program, format and speed as the `zstd` an operator has.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, ExternalCommandError

PIPE_SIZE = 1 << 20


def zstd_command(*arguments: str) -> list[str]:
    program = shutil.which("zstd")
    if program is None:
        raise ConfigError("the zstd command is not installed: apt-get install zstd")
    return [program, "-q", "-c", *arguments]


def compress_command(level: int, threads: int) -> list[str]:
    if not 1 <= level <= 19:
        raise ConfigError(f"zstd level {level} is out of range: use 1 (fastest) to 19")
    return zstd_command(f"-{level}", f"-T{max(threads, 1)}")


def decompress_command() -> list[str]:
    return zstd_command("-d")


@dataclass(frozen=True)
class Compression:
    level: int = 3
    threads: int = 2

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Compression:
        section = settings.get("compression") or {}
        return cls(int(section.get("level", cls.level)), int(section.get("threads", cls.threads)))

    def start(self, source) -> ZstdFilter:
        """zstd compressing what ``source`` (a readable) yields, from now on."""
        fd = splice_source(source)
        return ZstdFilter(compress_command(self.level, self.threads),
                          source.read if fd is None else fd, PIPE_SIZE)


def _widen(pipe) -> None:
    """A 1 MiB pipe instead of 64 KiB: a sixteenth of the wake-ups per megabyte."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def splice_source(source) -> int | None:
    """The descriptor of an unbuffered file (zstd reads it itself) or pipe (it
    is spliced into zstd), so the bytes never pass through Python; None otherwise.
    (A buffered reader may hold bytes already read: it is read as a file.)"""
    if isinstance(source, io.FileIO) and not source.closed and hasattr(os, "splice"):
        return source.fileno()
    return None


def _is_regular_file(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


class ZstdFilter:
    """``zstd`` reading what ``source`` yields (fed by a thread, unless it is a
    regular file) and readable like a file. ``source`` is a read function, or
    a descriptor (see splice_source). ``fed`` counts the bytes zstd was given.
    ``finish`` waits for both sides and raises what went wrong: the feeding
    side's error first (e.g. a frame that failed authentication), then zstd's
    own."""

    def __init__(self, argv: list[str], source: Callable[[int], bytes] | int, chunk_size: int):
        self._error: BaseException | None = None
        self.fed = 0
        self._finished = False
        # A regular file becomes zstd's standard input, as `zstd FILE` reads
        # it: no thread, no pipe between us. What it read is where it left
        # the shared file offset.
        self._file = source if isinstance(source, int) and _is_regular_file(source) else None
        self._start = os.lseek(source, 0, os.SEEK_CUR) if self._file is not None else 0
        self._process = subprocess.Popen(
            argv, stdin=subprocess.PIPE if self._file is None else self._file,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        _widen(self._process.stdout)
        self._feeder = None
        if self._file is None:
            _widen(self._process.stdin)
            self._feeder = threading.Thread(target=self._feed, name="zstd-feed", daemon=True,
                                            args=(source, chunk_size))
            self._feeder.start()

    def __enter__(self) -> ZstdFilter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.abort()  # nothing to do once finished

    def _feed(self, source, chunk_size) -> None:
        stdin = self._process.stdin
        try:
            if isinstance(source, int):
                source = self._splice(source, chunk_size)
            while chunk := source(chunk_size):
                stdin.write(chunk)
                self.fed += len(chunk)
        except BrokenPipeError:
            pass  # zstd stopped reading: finish() reports why
        except BaseException as error:  # noqa: BLE001 - handed to finish()
            self._error = error
        finally:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()

    def _splice(self, fd: int, chunk_size: int) -> Callable[[int], bytes]:
        """Splice ``fd`` into zstd until its end; if the kernel cannot splice
        from it, the read function that goes on from where splicing stopped."""
        stdin = self._process.stdin.fileno()
        try:
            while moved := os.splice(fd, stdin, chunk_size):
                self.fed += moved
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            return lambda size: os.read(fd, size)
        return lambda size: b""

    def read(self, size: int = -1) -> bytes:
        # A pipe holds at most PIPE_SIZE: asking for more only makes Python
        # allocate (and fault in) a larger buffer each time, then shrink it.
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(PIPE_SIZE), b""))
        return self._process.stdout.read(min(size, PIPE_SIZE))

    def readinto(self, buffer) -> int:
        return self._process.stdout.readinto(buffer)

    def splice_to(self, fd: int, size: int) -> int:
        """Move up to ``size`` bytes of zstd's output into ``fd`` (a file, a pipe
        or a socket) without copying them through Python; 0 at the end."""
        return os.splice(self._process.stdout.fileno(), fd, min(size, PIPE_SIZE))

    def finish(self) -> None:
        """Wait for the feeder and zstd; raise the first failure."""
        self._finished = True
        if self._feeder is not None:
            self._feeder.join()
        stderr = self._process.stderr.read().decode(errors="replace").strip()
        returncode = self._process.wait()
        self._process.stdout.close()
        self._process.stderr.close()
        if self._file is not None:
            self.fed = os.lseek(self._file, 0, os.SEEK_CUR) - self._start
        if self._error is not None:
            raise self._error
        if returncode != 0:
            raise ExternalCommandError(f"zstd failed ({returncode}): {stderr or 'no message'}")

    def abort(self) -> None:
        """Stop zstd and the feeder; for error paths."""
        if self._finished:
            return
        self._finished = True
        self._process.kill()
        self._process.stdout.close()
        if self._feeder is not None:
            self._feeder.join(timeout=30)  # it may be waiting on a slow source; it is a daemon
        self._process.wait()
        self._process.stderr.close()
