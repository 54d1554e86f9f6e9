"""Generated file trees for snapshot tests, and an exact comparison of two trees."""

from __future__ import annotations

import hashlib
import os
import random
import stat

MIB = 1 << 20
T0 = 1_700_000_000_123_456_789  # a fixed modification time, in nanoseconds


def write(path, data: bytes, *, mode=0o644, mtime_ns=T0, owner=None) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, *owner)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def make_tree(root, *, files: int = 60, seed: int = 1, large: bool = True) -> dict:
    """A tree with every kind of entry the snapshot must keep; returns facts about it."""
    rng = random.Random(seed)
    root = os.fsencode(str(root))
    os.makedirs(root, exist_ok=True)
    paths = []
    for number in range(files):
        directory = os.path.join(root, b"d%d" % (number % 7), b"sub%d" % (number % 3))
        size = rng.choice([0, 1, 100, 1000, 5000, 40_000, 300_000])
        data = rng.randbytes(size // 2) + bytes(size - size // 2)
        path = os.path.join(directory, b"f%03d.bin" % number)
        write(path, data, mode=rng.choice([0o644, 0o600, 0o755, 0o640]),
              mtime_ns=T0 + number * 1_000_003)
        paths.append(path)
    if large:
        write(os.path.join(root, b"big", b"large.bin"), rng.randbytes(9 * MIB + 12345))
    # names that break naive tools
    write(os.path.join(root, b"odd", b"with space.txt"), b"space\n")
    write(os.path.join(root, b"odd", b"new\nline.txt"), b"newline\n")
    write(os.path.join(root, b"odd", b"caf\xe9-latin1.txt"), b"not utf-8 name\n")
    write(os.path.join(root, b"odd", "ünïcødé ✓.txt".encode()), b"unicode\n")
    deep = os.path.join(root, b"deep", *[b"x" * 200] * 12)
    write(os.path.join(deep, b"y" * 255), b"long path\n")
    # owners, modes, sparse and empty things
    write(os.path.join(root, b"owned", b"by-1234.txt"), b"owned\n", owner=(1234, 2345),
          mode=0o640)
    os.chown(os.path.join(root, b"owned"), 1234, 2345)
    write(os.path.join(root, b"exec", b"setgid-tool"), b"#!/bin/sh\n", mode=0o2755)
    write(os.path.join(root, b"empty-file"), b"")
    os.makedirs(os.path.join(root, b"empty-dir", b"nested-empty"))
    os.chmod(os.path.join(root, b"empty-dir"), 0o750)
    sparse = os.path.join(root, b"sparse.img")
    with open(sparse, "wb") as handle:
        handle.truncate(64 * MIB)
        handle.seek(40 * MIB)
        handle.write(b"data in the middle of holes")
    os.utime(sparse, ns=(T0, T0))
    # links
    os.symlink(b"d1/sub1", os.path.join(root, b"link-to-dir"))
    os.symlink(b"../empty-file", os.path.join(root, b"odd", b"link-up"))
    os.symlink(b"does-not-exist", os.path.join(root, b"dangling"))
    os.link(paths[1], os.path.join(root, b"hardlink-a"))
    os.link(paths[1], os.path.join(root, b"odd", b"hardlink-b"))
    os.chmod(os.path.join(root, b"exec"), 0o711)
    for directory, _dirs, _names in os.walk(root):
        os.utime(directory, ns=(T0 - 7, T0 - 7))
    return {"files": paths}


def describe(root) -> dict[bytes, tuple]:
    """Everything a restore must keep, per relative path (bytes)."""
    root = os.fsencode(str(root))
    found = {}
    inodes: dict[int, list[bytes]] = {}
    for directory, dirs, names in os.walk(root):
        for name in dirs + names:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            info = os.lstat(path)
            kind = stat.S_IFMT(info.st_mode)
            detail: tuple = ()
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    detail = (info.st_size, hashlib.sha256(handle.read()).hexdigest())
                inodes.setdefault(info.st_ino, []).append(relative)
            elif stat.S_ISLNK(info.st_mode):
                detail = (os.readlink(path),)
            mtime = info.st_mtime_ns
            found[relative] = (kind, stat.S_IMODE(info.st_mode) if not stat.S_ISLNK(info.st_mode)
                               else None, info.st_uid, info.st_gid, mtime, detail)
    links = sorted(sorted(group) for group in inodes.values() if len(group) > 1)
    found[b"<hard links>"] = tuple(tuple(group) for group in links)
    return found


def allocated(path) -> int:
    return os.lstat(path).st_blocks * 512


def change_files(paths, share: float, seed: int = 2) -> list:
    """Rewrite ``share`` of ``paths`` with new content of the same size; returns them."""
    rng = random.Random(seed)
    chosen = rng.sample(list(paths), max(1, round(len(paths) * share)))
    for path in chosen:
        size = os.path.getsize(path)
        write(path, rng.randbytes(max(size, 1)), mtime_ns=T0 + 99_000_000_000)
    return chosen
