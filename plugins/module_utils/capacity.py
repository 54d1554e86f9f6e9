"""Storage capacity: what each kind uses in each repository, and the free space
of the local directories a backup needs (spool, staging, local repositories)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from .errors import StorageError

DEFAULT_MIN_FREE_PERCENT = 10.0


@dataclass
class Usage:
    repository: str
    kind: str
    backups: int
    bytes: int


@dataclass
class Space:
    path: str
    total_bytes: int
    free_bytes: int
    low: bool
    message: str = ""

    @property
    def free_ratio(self) -> float:
        return self.free_bytes / self.total_bytes if self.total_bytes else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "free_ratio": round(self.free_ratio, 4)}


def repository_usage(vault) -> tuple[list[Usage], list[str]]:
    """Bytes and complete backups per repository and kind (from listings, no key)."""
    usage: dict[tuple[str, str], Usage] = {}
    warnings = []
    for repository in vault.repositories:
        try:
            stored = list(repository.storage.list("backups"))
        except StorageError as error:
            warnings.append(f"usage of {repository.describe()} is unknown: {error}")
            continue
        for item in stored:
            parts = item.key.split("/")
            if len(parts) < 4:
                continue
            entry = usage.setdefault((repository.name, parts[1]),
                                     Usage(repository.name, parts[1], 0, 0))
            entry.bytes += item.size
            if len(parts) == 4 and parts[3] == "manifest":
                entry.backups += 1
    return sorted(usage.values(), key=lambda u: (u.repository, u.kind)), warnings


def local_roots(vault) -> list[str]:
    """Directories of the vault's local repositories (their file systems fill up too)."""
    return [repository.storage.root for repository in vault.repositories
            if hasattr(repository.storage, "root")]


def free_space(paths: Iterable[str], *, min_free_percent: float = DEFAULT_MIN_FREE_PERCENT,
               min_free_bytes: int = 0) -> list[Space]:
    """Free space of each path's file system, ``low`` below either threshold."""
    result = []
    for path in paths:
        probe = path
        while not os.path.exists(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)  # not created yet: its file system still counts
        try:
            stat = os.statvfs(probe)
        except OSError as error:
            result.append(Space(path, 0, 0, True, f"{path}: cannot read free space "
                                                  f"({error.strerror})"))
            continue
        total = stat.f_blocks * stat.f_frsize
        free = stat.f_bavail * stat.f_frsize
        percent = 100.0 * free / total if total else 0.0
        low = percent < min_free_percent or free < min_free_bytes
        message = ""
        if low:
            message = (f"{path} has {free / 2**30:.1f} GiB free ({percent:.1f}%), below the "
                       f"warning threshold ({min_free_percent:g}% / "
                       f"{min_free_bytes / 2**30:.1f} GiB): free space there or prune old "
                       "backups (backup_prune), before a backup fails for want of room")
        result.append(Space(path, total, free, low, message))
    return result
