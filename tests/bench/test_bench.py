"""Smoke test of the benchmark harness at a tiny scale: data, rows, report."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from bench import data, rows
from bench import run as bench_run
from bench.harness import Row, RowResult, Sample, Target, server_cpu_since, server_mark

SCALE = 0.002  # 40 files, a 2 MiB stream, pgbench -s 1


@pytest.fixture(scope="module")
def data_dir():
    """Outside pytest's private temp tree: rows that need the database keep the
    cluster in it, and the postgres user must be able to reach it."""
    path = tempfile.mkdtemp(prefix="cosmic-bench-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def quiet(*_):
    pass


def test_tree_and_stream_are_the_same_bytes_every_time(data_dir, tmp_path):
    first = data.prepare_stream(SCALE, data_dir, log=quiet)
    again = data.prepare_stream(SCALE, str(tmp_path), log=quiet)

    tree = data.prepare_tree(SCALE, data_dir, log=quiet)
    assert tree.info["digest"] == data.prepare_tree(SCALE, str(tmp_path), log=quiet).info["digest"]
    assert data.digest_directory(tree.path) == tree.info["digest"]
    assert first.info["sha256"] == again.info["sha256"]
    assert os.path.getsize(first.path) == first.info["bytes"] <= data.STREAM_CAP * SCALE
    assert tree.info["files"] == 40
    share = tree.info["incompressible_bytes"] / tree.info["bytes"]
    assert 0.5 < share < 0.7


def test_tree_plan_at_full_scale_matches_the_brief():
    plan = data.plan_tree(1.0)
    sizes = [spec.size for spec in plan]
    incompressible = sum(spec.size for spec in plan if spec.kind == "binary")

    assert len(plan) == 20_000 and len({spec.path for spec in plan}) == 20_000
    assert 1.4e9 < sum(sizes) < 1.6e9
    assert min(sizes) >= 1024 and max(sizes) <= 20 << 20
    assert 0.59 < incompressible / sum(sizes) < 0.61


def test_database_is_the_same_every_time(tmp_path):
    base = tempfile.mkdtemp(prefix="cosmic-bench-pg-")  # the postgres user must reach it
    try:
        with data.bench_cluster(base, log=quiet) as cluster:
            made = data.ensure_database(cluster, SCALE, str(tmp_path), log=quiet)
            remade = data.ensure_database(cluster, SCALE, str(tmp_path), force=True,
                                          log=quiet)
            rows_found = cluster.psql("SELECT count(*) FROM bench_documents", made.name)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert made.info["checksum"] == remade.info["checksum"]
    assert made.info["checksum"]["tables"]["pgbench_accounts"]["rows"] == 100_000
    assert int(rows_found) == data.document_rows(SCALE)



def test_the_cpu_of_backends_that_served_a_command_is_counted(tmp_path):
    """pg_dump's backend works for it outside its process tree: the harness adds
    what the postmaster reaped during the command."""
    base = tempfile.mkdtemp(prefix="cosmic-bench-pg-")
    try:
        with data.bench_cluster(base, log=quiet) as cluster:
            mark = server_mark(cluster.data_dir)
            cluster.psql("SELECT count(*) FROM generate_series(1, 3000000)")
            spent = server_cpu_since(mark)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert spent >= 0.1


def test_harness_runs_every_row_and_writes_the_report(data_dir, tmp_path):
    output = tmp_path / "RESULTS.md"
    before = _stat(os.path.join(bench_run.ROOT, "bench", "RESULTS.md"))

    # drill-recovery builds a whole lab (over a minute): test_rows_drill.py checks its
    # commands, and the drill test of test_lab_playbooks.py runs the same playbook
    names = [row.name for row in rows.ROWS if row.name != "drill-recovery"]
    code, results = bench_run.run(SCALE, 1, names, data_dir, str(output), log=quiet)

    assert code in (bench_run.EXIT_OK, bench_run.EXIT_MISSED)
    assert [result.row.name for result in results] == names
    for result in results:
        assert result.error is None
        assert {sample.side for sample in result.samples} == {"ours", "anchor"}
        assert result.ratio is not None and result.peak_rss_mib > 0
    report = output.read_text()
    for name in names:
        assert f"| {name} |" in report
    for heading in ("## Data", "## Method", "## Versions", "## Machine"):
        assert heading in report
    assert _stat(os.path.join(bench_run.ROOT, "bench", "RESULTS.md")) == before


def test_unknown_row_is_refused():
    with pytest.raises(ValueError, match="unknown row"):
        rows.select(["no-such-row"])


@pytest.mark.parametrize(("ours", "anchor", "rss_kib", "expected"), [
    (1.0, 2.0, 100 * 1024, "pass"),
    (3.0, 2.0, 100 * 1024, "FAIL"),  # slower than the anchor
    (1.0, 2.0, 300 * 1024, "FAIL"),  # over the memory bound
])
def test_verdict_follows_the_target(ours, anchor, rss_kib, expected):
    row = Row("r", "a row", "true", "true", Target(ratio=1.0, rss_mib=256))
    samples = [Sample("ours", ours, ours, rss_kib), Sample("anchor", anchor, anchor, None)]
    assert RowResult(row, {}, [], samples).verdict == expected


@pytest.mark.parametrize(("ours_bytes", "anchor_bytes", "expected"), [
    (100, 100, "pass"),
    (106, 100, "FAIL"),  # stores more than the bound allows
    (None, 100, "FAIL"),  # nothing measured is no evidence
])
def test_size_verdict_compares_what_each_side_stored(ours_bytes, anchor_bytes, expected):
    row = Row("r", "a row", "true", "true", Target(ratio=None, size_ratio=1.05),
              stored=("{repo}", "{out}"))
    samples = [Sample("ours", 1.0, 1.0, None, ours_bytes),
               Sample("anchor", 1.0, 1.0, None, anchor_bytes)]
    assert RowResult(row, {}, [], samples).verdict == expected


def _stat(path):
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size
