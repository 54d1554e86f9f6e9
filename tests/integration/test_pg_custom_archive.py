"""Data offsets for pg_dump archives written to a pipe, on real pg_dump 15 output."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from ansible_collections.cosmic.backup.plugins.module_utils import pg_custom_archive
from ansible_collections.cosmic.backup.plugins.module_utils.postgres_cluster import (
    TemporaryCluster,
)

from tests.integration.dbfixtures import dump_sql, load_app


@pytest.fixture(scope="module")
def cluster():
    with TemporaryCluster() as cluster:
        load_app(cluster)
        cluster.psql("select lo_from_bytea(0, 'a large object'::bytea)", "app")
        yield cluster


def run(cluster, *argv):
    return subprocess.run([f"{cluster.bindir}/{argv[0]}", *argv[1:]], check=True,
                          capture_output=True, env=cluster.environment())


@pytest.fixture(scope="module")
def piped(cluster, tmp_path_factory):
    """A custom-format dump as a full backup streams it: through a pipe, uncompressed."""
    path = tmp_path_factory.mktemp("dumps") / "piped.dump"
    path.write_bytes(run(cluster, "pg_dump", "-Fc", "-Z0", "-d", "app").stdout)  # a pipe
    return path


def offset_states(cluster, path) -> list[str]:
    """pg_restore's own reading of the table of contents: entries with data."""
    listing = run(cluster, "pg_restore", "-l", str(path)).stdout.decode()
    return [line for line in listing.splitlines() if " TABLE DATA " in line or " BLOBS " in line]


def seen_while_written(path, chunk_size: int) -> pg_custom_archive.BlockFinder:
    finder = pg_custom_archive.BlockFinder()
    data = path.read_bytes()
    for start in range(0, len(data), chunk_size):
        finder.feed(data[start:start + chunk_size])
    return finder


def blocks_found_by_search(path, positions):
    """What the search alone makes of ``positions`` (None: unsure, the walk decides)."""
    data = path.read_bytes()
    reader = pg_custom_archive._Reader(data)
    reader.bytes(8)
    unset, _size = pg_custom_archive._read_toc(reader)
    return unset, pg_custom_archive._data_blocks_by_search(reader, len(data), unset,
                                                           sorted(positions))


@pytest.mark.parametrize("chunk_size", [3, 4099, 1 << 20, None])
def test_the_search_sees_every_block_start_whatever_the_chunks(piped, chunk_size):
    positions = pg_custom_archive._block_markers(piped.read_bytes(), 0) if chunk_size is None \
        else seen_while_written(piped, chunk_size).positions
    unset, found = blocks_found_by_search(piped, positions)
    assert found is not None and set(found) == set(unset) and len(found) == 4


@pytest.mark.parametrize("markers", ["searched in the file", "seen in 4099-byte chunks",
                                     "seen in 3-byte chunks"])
def test_offsets_make_a_piped_archive_restore_in_parallel_equal(cluster, piped, tmp_path,
                                                                markers):
    patched = tmp_path / "patched.dump"
    shutil.copyfile(piped, patched)
    finder = {"searched in the file": None,
              "seen in 4099-byte chunks": seen_while_written(piped, 4099),
              "seen in 3-byte chunks": seen_while_written(piped, 3)}[markers]
    outcome = pg_custom_archive.add_data_offsets(str(patched), finder)
    assert outcome == "data offsets recorded for 4 tables"  # 3 tables and the large objects
    assert patched.stat().st_size == piped.stat().st_size
    assert offset_states(cluster, patched) == offset_states(cluster, piped)
    # what pg_restore makes of both is the same SQL, byte for byte
    plain = [[line for line in run(cluster, "pg_restore", "-f", "-", str(path)).stdout.split(b"\n")
              if not line.startswith((b"\\restrict ", b"\\unrestrict "))]  # a random key
             for path in (piped, patched)]
    assert plain[0] == plain[1] and len(plain[0]) > 15000
    target = "restored_" + markers.split()[0] + markers.split()[-2].replace("-", "")
    cluster.psql(f"create database {target}")
    run(cluster, "pg_restore", "-j", "2", "--exit-on-error", "-d", target, str(patched))
    assert dump_sql(cluster, target) == dump_sql(cluster, "app")
    assert pg_custom_archive.add_data_offsets(str(patched)) == \
        "the archive has its data offsets already"


def test_pg_dumps_own_file_output_is_left_alone(cluster, tmp_path):
    own = tmp_path / "own.dump"
    run(cluster, "pg_dump", "-Fc", "-f", str(own), "-d", "app")
    before = own.read_bytes()
    assert pg_custom_archive.add_data_offsets(str(own)) == \
        "the archive has its data offsets already"
    assert own.read_bytes() == before


@pytest.mark.parametrize("damage", ["truncated", "not an archive", "trailing bytes"])
def test_an_unexpected_file_is_left_as_it_is(piped, tmp_path, damage):
    data = piped.read_bytes()
    damaged = {"truncated": data[: len(data) - 100], "not an archive": b"-- SQL\n" + data,
               "trailing bytes": data + b"\x01"}[damage]
    path = tmp_path / "damaged.dump"
    path.write_bytes(damaged)
    assert "left as it is" in pg_custom_archive.add_data_offsets(str(path))
    assert path.read_bytes() == damaged


def test_large_object_bytes_that_look_like_a_block_start_are_walked_past(cluster, tmp_path):
    """An end marker, a block type and an id inside large-object data: the search is
    unsure and the block-by-block walk finds the true positions."""
    cluster.psql("create database tricky")
    cluster.psql("create table t (k int primary key); insert into t select generate_series(1, 100);"
                 "select lo_from_bytea(0, '\\x0000000000010000ffff7f00'::bytea)", "tricky")
    archive = tmp_path / "tricky.dump"
    archive.write_bytes(run(cluster, "pg_dump", "-Fc", "-Z0", "-d", "tricky").stdout)
    finder = seen_while_written(archive, 1 << 20)
    assert blocks_found_by_search(archive, finder.positions)[1] is None
    assert pg_custom_archive.add_data_offsets(str(archive), finder) == \
        "data offsets recorded for 2 tables"
    cluster.psql("create database tricky_restored")
    run(cluster, "pg_restore", "-j", "2", "--exit-on-error", "-d", "tricky_restored",
        str(archive))
    assert dump_sql(cluster, "tricky_restored") == dump_sql(cluster, "tricky")
