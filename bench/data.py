"""Reference data for the benchmarks, the same bytes every time at the same scale.

At scale 1.0:

- a file tree like an application's uploads, logs and exports: about 1.5 GB
  in 20,000 files of 1 KiB to 20 MiB (many small, few large), 60% of the bytes
  incompressible (media, archives) and 40% text, JSON and logs;
- ``stream-<scale>.tar``: the first 1 GiB of that tree as one tar stream;
- a database: ``pgbench -i -s 50`` plus ``bench_documents``, 200,000 rows
  with text and jsonb columns, in a PostgreSQL cluster kept under the data
  directory and started on demand.

Smaller scales make fewer files (the largest sizes drop out first), a smaller
tar and a smaller database. Everything is cached under the data directory
(``var/bench`` by default) keyed by scale and by a version per part
(``VERSIONS``): change how a part is made, bump its version.

Incompressible bytes are an AES-256-CTR keystream (fast and seeded); text is
built from a seeded generator over a fixed vocabulary. Nothing reads the
clock or ``os.urandom``.
"""

from __future__ import annotations

import argparse
import array
import bisect
import calendar
import contextlib
import fcntl
import functools
import hashlib
import itertools
import json
import math
import os
import random
import re
import shutil
import socket
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

VERSIONS = {"tree": 1, "stream": 2, "database": 1}
SEED = b"cosmic.backup bench reference data\0"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA_DIR = os.path.join(ROOT, "var", "bench")

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
FULL_FILES = 20_000
MIN_FILES = 8
INCOMPRESSIBLE_SHARE = 0.60
STREAM_CAP = GIB  # at scale 1.0
FULL_PGBENCH_SCALE = 50
FULL_DOCUMENT_ROWS = 200_000

# File sizes: an inverse CDF, log-linear between these (quantile, bytes)
# points. With 20,000 evenly spaced quantiles the tree is about 1.5 GB, the
# median file 6 KiB and about 220 files are over 1 MiB.
SIZE_QUANTILES = (
    (0.0, 1 * KIB), (0.45, 5 * KIB), (0.75, 16 * KIB), (0.93, 96 * KIB),
    (0.985, 560 * KIB), (0.9975, 4 * MIB), (1.0, 20 * MIB),
)

# Shares of the text bytes, by kind.
TEXT_KINDS = (("log", 0.40), ("jsonl", 0.20), ("json", 0.15), ("markdown", 0.15),
              ("csv", 0.10))
BINARY_EXTENSIONS = (("jpg", 0.40), ("png", 0.15), ("pdf", 0.15), ("mp4", 0.10),
                     ("webp", 0.10), ("zip", 0.10))


def scale_label(scale: float) -> str:
    """How a scale appears in file and database names: 1, 0.25, 2."""
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive number, not {scale!r}")
    return f"{scale:g}"


# -- deterministic randomness --------------------------------------------------

_ZEROS = bytes(4 * MIB)


class Keystream:
    """Incompressible pseudo-random bytes: AES-256-CTR over zeros, keyed by a label."""

    def __init__(self, label: str):
        key = hashlib.sha256(SEED + label.encode()).digest()
        self._cipher = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def read(self, size: int) -> bytes:
        parts = []
        while size > 0:
            step = min(size, len(_ZEROS))
            parts.append(self._cipher.update(memoryview(_ZEROS)[:step]))
            size -= step
        return b"".join(parts)

    def indexes(self, count: int) -> array.array:
        """``count`` uniform numbers in 0..65535."""
        values = array.array("H", self.read(2 * count))
        if sys.byteorder == "big":
            values.byteswap()
        return values


def seeded_random(label: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(SEED + label.encode()).digest(), "big"))


def _weighted(rng: random.Random, choices) -> str:
    point, total = rng.random(), 0.0
    for value, weight in choices:
        total += weight
        if point < total:
            return value
    return choices[-1][0]


# -- vocabulary -----------------------------------------------------------------

_COMMON = (
    "the of and to in a is that for it as was with be by on not he this are or his "
    "from at which but have an they you were her she there been one all we their has "
    "would when if so what up out no about into than them can only other new some "
    "could time these two may then do first any my now such like our over man me even "
    "most made after also did many before must through back years where much your way "
    "well down should because each just those people how too little state good very "
    "make world still own see men work long get here between both life being under "
    "never day same another know while last might us great old year off come since "
    "against go came right used take three user post upload photo comment account "
    "community event group message profile share team update member project release"
)
COMMON_WORDS = tuple(_COMMON.split())
_SYLLABLES = ("ka lo mi ne ru ta vo si pe da re no la be co fi gu he ja ki ma ni "
              "po sa te vi wa ze ar en in on ul ex is or an")
SYLLABLES = tuple(_SYLLABLES.split())


def vocabulary(size: int = 3000) -> list[str]:
    """The common words, then made-up words: the same list every time."""
    rng = seeded_random("vocabulary")
    words, seen = list(COMMON_WORDS), set(COMMON_WORDS)
    while len(words) < size:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 2, 3, 3, 4))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def _zipf_table(words: list[str], slots: int = 65536) -> list[bytes]:
    """A table where word k fills a share of slots proportional to 1/(k+1)."""
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    total = sum(weights)
    bounds, running = [], 0.0
    for weight in weights:
        running += weight / total
        bounds.append(running * slots)
    encoded = [word.encode() for word in words]
    return [encoded[min(bisect.bisect_right(bounds, slot), len(words) - 1)]
            for slot in range(slots)]


WORDS = vocabulary()
WORD_TABLE = _zipf_table(WORDS)


def word_run(stream: Keystream, count: int) -> list[bytes]:
    """``count`` words drawn with Zipf frequencies (the usual word first)."""
    table = WORD_TABLE
    return [table[index] for index in stream.indexes(count)]


# -- text generators: each yields blocks of bytes forever -----------------------
#
# Drawing every field of every line from a generator runs at a few MB/s in
# Python. Instead, pools of 65,536 phrases, log events and JSON fragments are
# made once per process, and each line joins a few of them (picked by the
# keystream) with fields that are unique per line (time, ids): as varied as
# real text at zstd's window sizes, at 50-150 MB/s.

POOL = 65536
SERVICES = ("web", "api", "worker", "mailer", "scheduler")
RESOURCES = ("posts", "comments", "users", "groups", "events", "uploads", "messages")
TABLES = ("posts", "comments", "users", "events", "payments", "sessions")
LOG_EVENTS = (
    (0.55, "INFO  [http] request completed method={method} path=/api/v1/{resource}/{id} "
           "status={status} duration_ms={ms} user_id={user}"),
    (0.12, "INFO  [uploads] stored upload user_id={user} object=uploads/{year}/{id}.jpg "
           "bytes={bytes} content_type=image/jpeg"),
    (0.15, "DEBUG [db] query finished table={table} rows={rows} duration_ms={ms} "
           "plan=cached pool=primary"),
    (0.08, "INFO  [mail] notification sent user_id={user} template=digest_{table} "
           "provider=ses"),
    (0.06, "WARN  [auth] login failed user_id={user} ip=10.{a}.{b}.{c} reason=bad_password "
           "attempts={rows}"),
    (0.04, 'ERROR [worker] job failed queue={table} error="{words}" retry_in={rows}s'),
)
METHODS = ("GET", "GET", "GET", "GET", "POST", "PUT", "DELETE")
STATUSES = (200, 200, 200, 200, 200, 201, 204, 304, 400, 404, 500)


@functools.cache
def phrases() -> tuple[str, ...]:
    """2 to 9 words each, Zipf-distributed."""
    stream = Keystream("phrases")
    lengths = [2 + index % 8 for index in stream.indexes(POOL)]
    words = word_run(stream, sum(lengths))
    pool, position = [], 0
    for length in lengths:
        pool.append(b" ".join(words[position : position + length]).decode())
        position += length
    return tuple(pool)


@functools.cache
def log_events() -> tuple[str, ...]:
    """Log messages without their time and request id."""
    rng = seeded_random("log events")
    pool = phrases()
    events = []
    for _ in range(POOL):
        template = _weighted(rng, [(text, share) for share, text in LOG_EVENTS])
        events.append(template.format(
            method=rng.choice(METHODS), resource=rng.choice(RESOURCES),
            table=rng.choice(TABLES), id=rng.randrange(2_000_000),
            status=rng.choice(STATUSES), ms=int(rng.expovariate(0.02)),
            user=int(rng.random() ** 2 * 50_000), year=rng.randrange(2020, 2025),
            bytes=rng.randrange(8 * MIB), rows=rng.randrange(500), a=rng.randrange(256),
            b=rng.randrange(256), c=rng.randrange(256), words=rng.choice(pool),
        ))
    return tuple(events)


@functools.cache
def json_fragments() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Pools of (author object, trailing fields) as compact JSON."""
    rng = seeded_random("json fragments")
    pool = phrases()
    visibility = ("public", "public", "members", "private")
    authors, tails = [], []
    for _ in range(POOL):
        name = rng.choice(pool).title()[:40]
        authors.append(f'{{"id":{int(rng.random() ** 2 * 50_000)},"name":"{name}"}}')
        tags = ",".join(f'"{tag}"' for tag in rng.choice(pool).split()[: int(rng.random() * 5)])
        attachments = ",".join(
            f'{{"path":"uploads/{2020 + int(rng.random() * 5)}/{rng.getrandbits(48):012x}.jpg",'
            f'"bytes":{int(rng.random() * 4 * MIB)}}}'
            for _ in range(int(rng.random() * 3)))
        tails.append(f'"tags":[{tags}],"likes":{int(rng.expovariate(0.05))},'
                     f'"visibility":"{visibility[int(rng.random() * 4)]}",'
                     f'"attachments":[{attachments}]')
    return tuple(authors), tuple(tails)


class Draw:
    """Bulk draws from a keystream, so each line costs a few list lookups."""

    def __init__(self, stream: Keystream):
        self.stream = stream

    def numbers(self, count: int) -> array.array:
        return self.stream.indexes(count)

    def hex(self, count: int, width: int) -> list[str]:
        text = self.stream.read(count * width // 2).hex()
        return [text[index : index + width] for index in range(0, len(text), width)]

    @staticmethod
    def text(numbers, start: int, count: int) -> str:
        return " ".join(map(phrases().__getitem__, numbers[start : start + count]))


def _clock(layout: str = "%Y-%m-%dT%H:%M:%S", unit: int = 1):
    """Formats epoch seconds with ``layout``, caching the last ``unit`` of time."""
    cache = {}

    def format_time(second: int) -> str:
        key = second // unit
        value = cache.get(key)
        if value is None:
            cache.clear()
            value = cache[key] = time.strftime(layout, time.gmtime(second))
        return value

    return format_time


def log_blocks(draw: Draw, start: int) -> Iterator[bytes]:
    """Application log lines, a few milliseconds apart."""
    events = log_events()
    iso = _clock()
    now_ms, lines_per_block = start * 1000, 1024
    while True:
        picks, gaps = draw.numbers(lines_per_block), draw.numbers(lines_per_block)
        ids = draw.hex(lines_per_block, 16)
        lines = []
        for index in range(lines_per_block):
            now_ms += 1 + gaps[index] % 900
            lines.append(f"{iso(now_ms // 1000)}.{now_ms % 1000:03d}Z {events[picks[index]]} "
                         f"request_id={ids[index]}\n")
        yield "".join(lines).encode()


def _records(draw: Draw, start: int, count: int, number: int) -> list[tuple]:
    """(id, time, author, title, body, trailing fields) of ``count`` records."""
    authors, tails = json_fragments()
    picks = draw.numbers(count * 24)
    iso = _clock()
    records = []
    for index in range(count):
        base = index * 24
        number += 1
        words = 2 + picks[base] % 18
        records.append((
            number, iso(start + number * 37 + picks[base + 1] % 30),
            authors[picks[base + 2]], phrases()[picks[base + 3]].capitalize(),
            draw.text(picks, base + 4, words), tails[picks[base + 3 + words // 2]],
        ))
    return records


def jsonl_blocks(draw: Draw, start: int) -> Iterator[bytes]:
    """An export: one compact JSON record per line."""
    number = draw.numbers(1)[0] * 16
    while True:
        records = _records(draw, start, 256, number)
        number += len(records)
        yield "".join(
            f'{{"id":{ident},"created_at":"{created}Z","author":{author},"title":"{title}",'
            f'"body":"{body}",{tail}}}\n'
            for ident, created, author, title, body, tail in records
        ).encode()


def json_blocks(draw: Draw, start: int) -> Iterator[bytes]:
    """A pretty-printed JSON document (an API response, a metadata sidecar)."""
    number = draw.numbers(1)[0] * 16
    yield b'{\n  "items": [\n'
    while True:
        records = _records(draw, start, 128, number)
        number += len(records)
        yield "".join(
            f'    {{\n      "id": {ident},\n      "created_at": "{created}Z",\n'
            f'      "author": {author},\n      "title": "{title}",\n'
            f'      "body": "{body}",\n      {tail.replace(",", ", ")}\n    }},\n'
            for ident, created, author, title, body, tail in records
        ).encode()


@functools.cache
def sentences() -> tuple[str, ...]:
    """Sentences of one to three phrases."""
    pool, picks = phrases(), Keystream("sentences").indexes(4 * POOL)
    return tuple(
        " ".join(pool[pick] for pick in picks[index + 1 : index + 2 + picks[index] % 3])
        .capitalize() + "."
        for index in range(0, len(picks), 4)
    )


@functools.cache
def report_rows() -> tuple[str, ...]:
    """CSV fields after the id and date: user, amount, currency, status, description."""
    pool, picks = phrases(), Keystream("report rows").indexes(4 * POOL)
    currencies, states = ("EUR", "USD", "GBP"), ("paid", "paid", "paid", "refunded", "failed")
    return tuple(
        f"{user % 50_000},{amount / 128:.2f},{currencies[code % 3]},{states[code % 5]},"
        f'"{pool[text]}"'
        for user, amount, code, text in zip(*[iter(picks)] * 4, strict=True)
    )


def markdown_blocks(draw: Draw, start: int) -> Iterator[bytes]:
    """Notes and documents: headings and paragraphs of sentences."""
    pool, sentence = phrases(), sentences()
    while True:
        picks = draw.numbers(4096)
        parts, index = [], 0
        while index < len(picks) - 8:
            shape = picks[index]
            if shape % 7 == 0:
                parts.append(f"## {pool[picks[index + 1]].capitalize()}\n\n")
                index += 2
                continue
            count = 2 + shape % 6
            parts.append(" ".join(map(sentence.__getitem__, picks[index + 1 : index + 1 + count]))
                         + "\n\n")
            index += 1 + count
        yield "".join(parts).encode()


def csv_blocks(draw: Draw, start: int) -> Iterator[bytes]:
    """A report: ids, dates, amounts, a short description."""
    rows = report_rows()
    date = _clock("%Y-%m-%d", 86400)
    yield b"id,date,user_id,amount,currency,status,description\n"
    number = draw.numbers(1)[0] * 16
    while True:
        lines = []
        for pick in draw.numbers(2048):
            number += 1
            lines.append(f"{number},{date(start + number * 61)},{rows[pick]}\n")
        yield "".join(lines).encode()


TEXT_GENERATORS = {"log": log_blocks, "jsonl": jsonl_blocks, "json": json_blocks,
                   "markdown": markdown_blocks, "csv": csv_blocks}


# -- the file tree ----------------------------------------------------------------

@dataclass(frozen=True)
class FileSpec:
    path: str  # relative, with /
    size: int
    kind: str  # "binary" or a TEXT_GENERATORS key
    mtime: int


def file_size_at(quantile: float) -> int:
    for (q0, s0), (q1, s1) in itertools.pairwise(SIZE_QUANTILES):
        if quantile <= q1:
            share = (quantile - q0) / (q1 - q0)
            return round(math.exp(math.log(s0) + share * (math.log(s1) - math.log(s0))))
    return SIZE_QUANTILES[-1][1]


def plan_tree(scale: float) -> list[FileSpec]:
    """Which files the tree holds at ``scale``, sorted by path."""
    count = max(MIN_FILES, round(FULL_FILES * scale))
    rng = seeded_random(f"tree plan {scale_label(scale)}")
    sizes = [file_size_at((index + 0.5) / count) for index in range(count)]
    rng.shuffle(sizes)
    # 60% of the bytes incompressible: largest files first, each goes to the
    # class that is furthest below its share.
    kinds = [""] * count
    binary_bytes = assigned = 0
    for index in sorted(range(count), key=lambda i: (-sizes[i], i)):
        if binary_bytes <= INCOMPRESSIBLE_SHARE * assigned:
            kinds[index] = "binary"
            binary_bytes += sizes[index]
        else:
            kinds[index] = _weighted(rng, TEXT_KINDS)
        assigned += sizes[index]
    specs, used = [], set()
    for index, (size, kind) in enumerate(zip(sizes, kinds, strict=True)):
        path, mtime = _place(rng, kind)
        if path in used:
            stem, dot, extension = path.rpartition(".")
            path = f"{stem}-{index}{dot}{extension}"
        used.add(path)
        specs.append(FileSpec(path, size, kind, mtime))
    return sorted(specs, key=lambda spec: spec.path)


def _place(rng: random.Random, kind: str) -> tuple[str, int]:
    """A path in the tree for a file of ``kind``, and its modification time."""
    year, month, day = 2020 + int(rng.random() * 5), 1 + int(rng.random() * 12), \
        1 + int(rng.random() * 28)
    mtime = calendar.timegm((year, month, day, 0, 0, 0)) + int(rng.random() * 86400)
    user = f"u{int(rng.random() ** 3 * 4000):04d}"
    stem = f"{rng.getrandbits(48):012x}"
    if kind == "binary":
        path = f"uploads/{year}/{month:02d}/{user}/{stem}.{_weighted(rng, BINARY_EXTENSIONS)}"
    elif kind == "log":
        service = SERVICES[int(rng.random() * len(SERVICES))]
        path = f"logs/{service}/{year}/{service}-{year}-{month:02d}-{day:02d}.log"
    elif kind == "jsonl":
        table = TABLES[int(rng.random() * len(TABLES))]
        path = f"exports/{year}/{month:02d}/{table}-{stem}.jsonl"
    elif kind == "json":
        path = f"uploads/{year}/{month:02d}/{user}/{stem}.json"
    elif kind == "markdown":
        path = f"docs/{RESOURCES[int(rng.random() * len(RESOURCES))]}/{stem}.md"
    else:
        path = f"reports/{year}/{TABLES[int(rng.random() * len(TABLES))]}-{month:02d}-{stem}.csv"
    return path, mtime


def file_blocks(spec: FileSpec) -> Iterator[bytes]:
    """The content of one file, in blocks of at most 4 MiB, exactly ``spec.size`` bytes."""
    label = f"file {spec.path} {spec.size} {spec.kind}"
    stream = Keystream(label)
    remaining = spec.size
    if spec.kind == "binary":
        while remaining:
            block = stream.read(min(remaining, 4 * MIB))
            remaining -= len(block)
            yield block
        return
    blocks = TEXT_GENERATORS[spec.kind](Draw(stream), spec.mtime - 30 * 86400)
    pending, pending_size = [], 0
    for block in blocks:
        block = block[:remaining]
        remaining -= len(block)
        pending.append(block)
        pending_size += len(block)
        if remaining == 0 or pending_size >= MIB:
            yield b"".join(pending)
            pending, pending_size = [], 0
        if remaining == 0:
            return


def tree_digest(entries) -> str:
    """One SHA-256 over (path, size, SHA-256 of content) of every file, sorted by path."""
    digest = hashlib.sha256()
    for path, size, sha256 in sorted(entries):
        digest.update(f"{path}\0{size}\0{sha256}\n".encode())
    return digest.hexdigest()


def digest_directory(root: str) -> str:
    """``tree_digest`` of what is on disk under ``root`` (to check a cached tree)."""
    entries = []
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            digest = hashlib.sha256()
            size = 0
            with open(path, "rb") as handle:
                while block := handle.read(4 * MIB):
                    digest.update(block)
                    size += len(block)
            entries.append((os.path.relpath(path, root).replace(os.sep, "/"), size,
                            digest.hexdigest()))
    return tree_digest(entries)


@dataclass(frozen=True)
class Tree:
    path: str
    info: dict[str, Any]


def _load_marker(path: str, part: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            info = json.load(handle)
    except (OSError, ValueError):
        return None
    return info if info.get("version") == VERSIONS[part] else None


def _write_marker(path: str, info: dict[str, Any]) -> None:
    temp = f"{path}.partial"
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(temp, path)


def prepare_tree(scale: float, data_dir: str = DEFAULT_DATA_DIR, log=print) -> Tree:
    """The file tree at ``scale``: generated once, then reused."""
    label = scale_label(scale)
    root = os.path.join(data_dir, f"tree-{label}")
    marker = f"{root}.json"
    info = _load_marker(marker, "tree")
    if info is not None and info.get("scale") == label and os.path.isdir(root):
        return Tree(root, info)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(marker)
    shutil.rmtree(root, ignore_errors=True)
    partial = f"{root}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    specs = plan_tree(scale)
    total = sum(spec.size for spec in specs)
    log(f"bench: generating the file tree at scale {label}: {len(specs)} files, "
        f"{total / 1e6:.0f} MB, in {root}")
    started = time.monotonic()
    entries, by_kind = [], {}
    made = set()
    for spec in specs:
        path = os.path.join(partial, *spec.path.split("/"))
        directory = os.path.dirname(path)
        if directory not in made:
            os.makedirs(directory, exist_ok=True)
            made.add(directory)
        digest = hashlib.sha256()
        with open(path, "wb") as handle:
            for block in file_blocks(spec):
                digest.update(block)
                handle.write(block)
        os.utime(path, (spec.mtime, spec.mtime))
        entries.append((spec.path, spec.size, digest.hexdigest()))
        count, size = by_kind.get(spec.kind, (0, 0))
        by_kind[spec.kind] = (count + 1, size + spec.size)
    os.replace(partial, root)
    info = {
        "version": VERSIONS["tree"],
        "scale": label,
        "files": len(specs),
        "directories": len(made),
        "bytes": total,
        "incompressible_bytes": by_kind.get("binary", (0, 0))[1],
        "smallest": min(spec.size for spec in specs),
        "largest": max(spec.size for spec in specs),
        "median": sorted(spec.size for spec in specs)[len(specs) // 2],
        "by_kind": {kind: {"files": count, "bytes": size}
                    for kind, (count, size) in sorted(by_kind.items())},
        "digest": tree_digest(entries),
        "seconds": round(time.monotonic() - started, 1),
    }
    _write_marker(marker, info)
    log(f"bench: file tree ready in {info['seconds']} s")
    return Tree(root, info)


# -- the tar stream ---------------------------------------------------------------

@dataclass(frozen=True)
class Stream:
    path: str
    info: dict[str, Any]


class _HashingFile:
    """A write-only file that hashes and counts what tarfile writes."""

    def __init__(self, handle):
        self._handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._handle.write(data)

    def tell(self) -> int:
        return self.size


def _tar_size(size: int) -> int:
    return 512 + (size + 511) // 512 * 512


def prepare_stream(scale: float, data_dir: str = DEFAULT_DATA_DIR, log=print) -> Stream:
    """``stream-<scale>.tar``: files of the tree up to 1 GiB x scale, in path order.

    Paths sort by kind (docs/, exports/, logs/ before uploads/), so the files
    are chosen in a hashed order instead: the stream keeps the tree's mix.
    """
    label = scale_label(scale)
    tree = prepare_tree(scale, data_dir, log)
    path = os.path.join(data_dir, f"stream-{label}.tar")
    marker = f"{path}.json"
    info = _load_marker(marker, "stream")
    if (info is not None and info.get("tree_digest") == tree.info["digest"]
            and os.path.exists(path) and os.path.getsize(path) == info["bytes"]):
        return Stream(path, info)
    # tarfile pads the archive to whole 10 KiB records: leave room for that.
    cap = int(STREAM_CAP * scale) - tarfile.RECORDSIZE
    chosen, planned = [], 1024  # the end-of-archive blocks
    for spec in sorted(plan_tree(scale), key=lambda spec: hashlib.sha256(
            spec.path.encode()).digest()):
        if planned + _tar_size(spec.size) <= cap:
            chosen.append(spec)
            planned += _tar_size(spec.size)
    chosen.sort(key=lambda spec: spec.path)
    log(f"bench: writing {path} ({len(chosen)} files, {planned / MIB:.0f} MiB)")
    temp = f"{path}.partial"
    with open(temp, "wb") as handle:
        hashing = _HashingFile(handle)
        with tarfile.TarFile(fileobj=hashing, mode="w", format=tarfile.GNU_FORMAT,
                             copybufsize=4 * MIB) as archive:
            for spec in chosen:
                member = tarfile.TarInfo(spec.path)
                member.size, member.mtime, member.mode = spec.size, spec.mtime, 0o644
                member.uname = member.gname = "cosmic"
                member.uid = member.gid = 1000
                with open(os.path.join(tree.path, *spec.path.split("/")), "rb") as source:
                    archive.addfile(member, source)
    os.replace(temp, path)
    info = {"version": VERSIONS["stream"], "scale": label, "files": len(chosen),
            "bytes": hashing.size, "sha256": hashing.sha256.hexdigest(),
            "incompressible_bytes": sum(s.size for s in chosen if s.kind == "binary"),
            "content_bytes": sum(s.size for s in chosen), "tree_digest": tree.info["digest"]}
    _write_marker(marker, info)
    return Stream(path, info)


# -- the database -------------------------------------------------------------------

def database_name(scale: float) -> str:
    return "bench_s" + re.sub(r"[^0-9a-z]", "_", scale_label(scale))


def pgbench_scale(scale: float) -> int:
    return max(1, round(FULL_PGBENCH_SCALE * scale))


def document_rows(scale: float) -> int:
    return max(100, round(FULL_DOCUMENT_ROWS * scale))


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _running_port(data_dir: str) -> int | None:
    """The port of a postmaster already running on ``data_dir``, if any."""
    try:
        with open(os.path.join(data_dir, "postmaster.pid"), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        os.kill(int(lines[0]), 0)
        return int(lines[3])
    except (OSError, ValueError, IndexError):
        return None


def _configured_port(data_dir: str) -> int | None:
    port = None
    with contextlib.suppress(OSError), \
            open(os.path.join(data_dir, "postgresql.auto.conf"), encoding="utf-8") as handle:
        for line in handle:
            name, _, value = line.partition("=")
            if name.strip() == "port" and value.strip().isdigit():
                port = int(value.strip())
    return port


@contextlib.contextmanager
def bench_cluster(base_dir: str, log=print):
    """The benchmark's PostgreSQL cluster in ``base_dir``: created the first time,
    started if it is not running, and stopped again if this call started it."""
    from ansible_collections.cosmic.backup.plugins.module_utils.postgres_cluster import (
        TemporaryCluster,
        free_port,
    )

    data = os.path.join(base_dir, "data")
    started = False
    if not os.path.exists(os.path.join(data, "PG_VERSION")):
        shutil.rmtree(base_dir, ignore_errors=True)
        os.makedirs(os.path.dirname(os.path.abspath(base_dir)), exist_ok=True)
        log(f"bench: creating the PostgreSQL cluster in {base_dir}")
        cluster = TemporaryCluster(base_dir).init()
        cluster.start()
        started = True
    elif (port := _running_port(data)) is not None:
        cluster = TemporaryCluster(base_dir, port=port)
    else:
        port = _configured_port(data)
        if port is None or not _port_is_free(port):
            port = free_port()
            cluster = TemporaryCluster(base_dir, port=port)
            cluster.write_settings({"port": str(port)})
        else:
            cluster = TemporaryCluster(base_dir, port=port)
        cluster.start()
        started = True
    try:
        yield cluster
    finally:
        if started:
            cluster.stop()


DOCUMENTS_SQL = """
CREATE FUNCTION pg_temp.bench_words(seed bigint, low int, spread int) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT string_agg(
           vocabulary.w[1 + floor(array_length(vocabulary.w, 1)
             * power((hashint8(seed * 1000 + j) & 2147483647)::float8 / 2147483648.0, 2))::int],
           ' ' ORDER BY j)
  FROM generate_series(1, low + ((hashint8(seed) & 2147483647) % spread)::int) AS j,
       (SELECT ARRAY[{words}]::text[] AS w) AS vocabulary
$$;

CREATE TABLE bench_documents (
    id bigint PRIMARY KEY,
    author text NOT NULL,
    title text NOT NULL,
    body text NOT NULL,
    attributes jsonb NOT NULL,
    created_at timestamptz NOT NULL
);

INSERT INTO bench_documents
SELECT i,
       'user' || lpad(((i * 7919) % 50021)::text, 5, '0'),
       initcap(pg_temp.bench_words(i * 3 + 1, 3, 6)),
       pg_temp.bench_words(i * 3 + 2, 40, 160),
       jsonb_build_object(
           'lang', (ARRAY['en', 'de', 'fr', 'es', 'pt', 'nl'])[1 + i % 6],
           'score', round(((hashint8(i) & 1023) / 10.24)::numeric, 2),
           'views', hashint8(i * 5) & 65535,
           'tags', to_jsonb(string_to_array(pg_temp.bench_words(i * 3 + 3, 1, 5), ' ')),
           'flags', jsonb_build_object('pinned', i % 97 = 0, 'archived', i % 13 = 0),
           'source', jsonb_build_object(
               'client', (ARRAY['web', 'ios', 'android', 'api'])[1 + i % 4],
               'ip', '10.' || i % 251 || '.' || i / 251 % 251 || '.' || i * 7 % 251),
           'revision', 1 + i % 5),
       timestamptz '2020-01-01 00:00:00+00' + make_interval(secs => i * 613)
FROM generate_series(1, {rows}) AS i;

CREATE INDEX bench_documents_author ON bench_documents (author);
CREATE INDEX bench_documents_created ON bench_documents (created_at);
VACUUM ANALYZE bench_documents;
"""

BENCH_TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history",
                "bench_documents")


def database_checksum(cluster, name: str) -> dict[str, Any]:
    """Row count and an order-independent sum of per-row MD5s, per table."""
    tables = {}
    for table in BENCH_TABLES:
        count, total = cluster.psql(
            f"SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)"
            f"::bigint), 0) FROM {table} AS t", name).split("|")
        tables[table] = {"rows": int(count), "sum": total}
    digest = hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()
    return {"tables": tables, "digest": digest}


@dataclass(frozen=True)
class Database:
    cluster: Any  # a running TemporaryCluster
    name: str
    info: dict[str, Any]

    def environment(self) -> dict[str, str]:
        """PGHOST, PGPORT, PGUSER and PGDATABASE for tools that connect to it."""
        return {**self.cluster.environment(), "PGDATABASE": self.name}


def ensure_database(cluster, scale: float, data_dir: str = DEFAULT_DATA_DIR, *,
                    force: bool = False, log=print) -> Database:
    """The database at ``scale`` in a running ``cluster``: created once, then reused."""
    name = database_name(scale)
    marker = os.path.join(data_dir, f"database-{scale_label(scale)}.json")
    info = _load_marker(marker, "database")
    exists = cluster.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "1"
    if not force and exists and info is not None and info.get("name") == name:
        return Database(cluster, name, info)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(marker)
    rows = document_rows(scale)
    log(f"bench: creating database {name}: pgbench -i -s {pgbench_scale(scale)} and "
        f"{rows} rows of bench_documents")
    started = time.monotonic()
    cluster.psql(f"DROP DATABASE IF EXISTS {name}")
    cluster.psql(f"CREATE DATABASE {name}")
    cluster.run(["pgbench", "-i", "-q", "-s", str(pgbench_scale(scale)), name], timeout=7200)
    words = ", ".join(f"'{word}'" for word in WORDS[:2000])
    cluster.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", name],
                input=DOCUMENTS_SQL.format(words=words, rows=rows).encode(), timeout=7200)
    cluster.psql("CHECKPOINT")
    info = {
        "version": VERSIONS["database"],
        "scale": scale_label(scale),
        "name": name,
        "pgbench_scale": pgbench_scale(scale),
        "document_rows": rows,
        "bytes": int(cluster.psql(f"SELECT pg_database_size('{name}')")),
        "checksum": database_checksum(cluster, name),
        "seconds": None,
    }
    info["seconds"] = round(time.monotonic() - started, 1)
    _write_marker(marker, info)
    log(f"bench: database {name} ready ({info['bytes'] / 1e6:.0f} MB) in {info['seconds']} s")
    return Database(cluster, name, info)


@contextlib.contextmanager
def database(scale: float, data_dir: str = DEFAULT_DATA_DIR, log=print):
    """The reference database at ``scale``, its cluster running while the block runs."""
    with bench_cluster(os.path.join(data_dir, "postgres"), log) as cluster:
        yield ensure_database(cluster, scale, data_dir, log=log)


@contextlib.contextmanager
def locked(data_dir: str):
    """One benchmark or data preparation at a time per data directory."""
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, ".lock"), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"bench: waiting for another run that holds {data_dir}", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.data",
        description="Generate (or reuse) the benchmark's reference data at a scale.")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--only", choices=("tree", "stream", "database"), action="append",
                        help="prepare only this part (repeatable); default: all")
    args = parser.parse_args(argv)
    parts = set(args.only or ("tree", "stream", "database"))
    summary = {}
    with locked(args.data_dir):
        if "tree" in parts:
            summary["tree"] = prepare_tree(args.scale, args.data_dir).info
        if "stream" in parts:
            summary["stream"] = prepare_stream(args.scale, args.data_dir).info
        if "database" in parts:
            with database(args.scale, args.data_dir) as db:
                summary["database"] = db.info
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
