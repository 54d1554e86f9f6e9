"""Files that appear whole or not at all: restored objects, key files, metrics,
indexes and caches."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "wb", *, permissions: int = 0o600) -> Iterator[IO]:
    """A temporary file beside ``path`` that replaces it, fsynced, when the block
    ends without error; on error it is removed and ``path`` is left as it was.

    The temporary file is created with ``permissions`` (0600 by default, so a
    key never exists with wider ones even for a moment).
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                dir=directory)
    try:
        os.fchmod(fd, permissions)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
