"""Data offsets for pg_dump archives written to a pipe, on real pg_dump 15 output."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from ansible_collections.cosmic.backup.plugins.module_utils import pg_custom_archive
from ansible_collections.cosmic.backup.plugins.module_utils.postgres_cluster import (
    TemporaryCluster,
)

from tests.integration.dbfixtures import dump_sql, frozen_tables, load_app


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
    pg_custom_archive._read_start(reader)
    entries, _size = pg_custom_archive._read_toc(reader)
    unset = {entry.dump_id: entry.offset_at for entry in entries
             if entry.offset_state == pg_custom_archive.OFFSET_NOT_SET}
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


def written_for_parallel_restore(source, path, chunk_size: int) -> str:
    data = source.read_bytes()
    with pg_custom_archive.ParallelRestoreArchive(str(path)) as out:
        for start in range(0, len(data), chunk_size):
            out.write(data[start:start + chunk_size])
        return out.finish()


def sql_of(cluster, path) -> list[bytes]:
    return [line for line in run(cluster, "pg_restore", "-f", "-", str(path)).stdout.split(b"\n")
            if not line.startswith((b"\\restrict ", b"\\unrestrict "))]  # a random key


@pytest.mark.parametrize("chunk_size", [4099, 1 << 20])
def test_an_archive_written_for_parallel_restore_loads_frozen_rows(cluster, piped, tmp_path,
                                                                   chunk_size):
    archive = tmp_path / "for-restore.dump"
    assert written_for_parallel_restore(piped, archive, chunk_size) == \
        "data offsets recorded for 4 tables; COPY FREEZE for 3 of 3 tables"
    assert offset_states(cluster, archive) == offset_states(cluster, piped)
    # the same SQL, but for FREEZE in each COPY
    rewritten = sql_of(cluster, archive)
    assert sum(b" FROM stdin WITH (FREEZE);" in line for line in rewritten) == 3
    assert [line.replace(b" WITH (FREEZE);", b";") for line in rewritten] == sql_of(cluster, piped)
    target = f"frozen_{chunk_size}"
    cluster.psql(f"create database {target}")
    run(cluster, "pg_restore", "-j", "2", "--exit-on-error", "-d", target, str(archive))
    assert dump_sql(cluster, target) == dump_sql(cluster, "app")
    assert frozen_tables(cluster, target) == {
        '"Odd Name|x"': True, "app.posts": True, "app.users": True}
    # pg_restore with one job does not truncate first: that is why only -j gets FREEZE
    cluster.psql(f"create database {target}_one_job")
    with pytest.raises(subprocess.CalledProcessError) as failure:
        run(cluster, "pg_restore", "--exit-on-error", "-d", f"{target}_one_job", str(archive))
    assert b"COPY FREEZE" in failure.value.stderr


def test_data_loaded_through_a_partition_root_is_not_frozen(cluster, tmp_path):
    """pg_dump loads a table hash-partitioned on an enum through its root (the
    hash of an enum differs between clusters): such a COPY may not freeze."""
    cluster.psql("create database parts")
    cluster.psql("create type mood as enum ('sad', 'ok', 'happy');"
                 "create table feel (m mood, n int) partition by hash (m);"
                 "create table feel_0 partition of feel for values with (modulus 2, remainder 0);"
                 "create table feel_1 partition of feel for values with (modulus 2, remainder 1);"
                 "insert into feel select (array['sad', 'ok', 'happy'])[1 + i % 3]::mood, i "
                 "from generate_series(1, 300) i;"
                 "create table plain (k int primary key); insert into plain values (1), (2);",
                 "parts")
    piped = tmp_path / "parts.dump"
    piped.write_bytes(run(cluster, "pg_dump", "-Fc", "-Z0", "-d", "parts").stdout)
    archive = tmp_path / "parts-for-restore.dump"
    assert written_for_parallel_restore(piped, archive, 1 << 20) == \
        "data offsets recorded for 3 tables; COPY FREEZE for 1 of 3 tables"
    cluster.psql("create database parts_restored")
    run(cluster, "pg_restore", "-j", "2", "--exit-on-error", "-d", "parts_restored", str(archive))
    # rows may land in the other partition: the hash of an enum is its new oid's
    every_row = "select json_agg(f order by n) from feel f"
    assert cluster.psql(every_row, "parts_restored") == cluster.psql(every_row, "parts")
    assert frozen_tables(cluster, "parts_restored")["plain"] is True


@pytest.mark.parametrize("damage", ["not an archive", "truncated in its table of contents"])
def test_an_unexpected_start_is_written_out_as_it_is(piped, tmp_path, damage):
    data = piped.read_bytes()
    damaged = {"not an archive": b"-- SQL\n" + data,
               "truncated in its table of contents": data[:2000]}[damage]
    source = tmp_path / "damaged.dump"
    source.write_bytes(damaged)
    archive = tmp_path / "written.dump"
    outcome = written_for_parallel_restore(source, archive, 4099)
    assert "left as it is" in outcome and "COPY FREEZE" not in outcome
    assert archive.read_bytes() == damaged
