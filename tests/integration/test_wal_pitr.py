"""WAL archiving through the host CLI, base backups and point-in-time recovery,
on real PostgreSQL 15 clusters whose archive_command is ``cosmic-backup wal-push``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
from ansible_collections.cosmic.backup.plugins.module_utils import pitr, wal
from ansible_collections.cosmic.backup.plugins.module_utils.errors import (
    BackupError,
    SelectorError,
)
from ansible_collections.cosmic.backup.plugins.module_utils.postgres_cluster import (
    TemporaryCluster,
)

from tests.engine import settings as engine_settings
from tests.integration.dbfixtures import (
    CLI,
    archiving_settings,
    connection,
    load_app,
    postgres_owned_settings,
)


@pytest.fixture
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("wal-lab")
    settings, config = postgres_owned_settings(base / "lab")
    return settings, config, engine_settings.build_vault(settings)


def wait_until_archived(cluster: TemporaryCluster, timeout: float = 60) -> str:
    """Switch to a new segment and wait until the archiver has pushed the old one."""
    cluster.psql("create temporary table touch as select 1")  # something to switch from
    segment = cluster.psql("select pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + timeout
    while cluster.psql("select coalesce(last_archived_wal, '') from pg_stat_archiver") < segment:
        failed = cluster.psql("select coalesce(last_failed_wal, '') from pg_stat_archiver")
        assert time.monotonic() < deadline, f"{segment} not archived; last failure {failed}"
        time.sleep(0.1)
    return segment


def restored_rows(data_directory: str, sql: str, database: str = "app") -> str:
    """Start a restored data directory as a throwaway cluster and query it."""
    cluster = TemporaryCluster()
    try:
        cluster.init()  # for its settings and directories; the data is replaced
        subprocess.run(["rm", "-rf", cluster.data_dir], check=True)
        shutil.move(data_directory, cluster.data_dir)
        cluster.write_settings({"port": str(cluster.port), "archive_mode": "off",
                                "unix_socket_directories": f"'{cluster.socket_dir}'"})
        cluster.start()
        cluster.wait_until_writable()
        return cluster.psql(sql, database)
    finally:
        cluster.destroy()


def test_point_in_time_before_and_after_the_target(lab):
    _settings, config, vault = lab
    with TemporaryCluster(settings=archiving_settings(config)) as cluster:
        load_app(cluster)
        cluster.psql("create table marks (n int primary key, at timestamptz "
                     "default clock_timestamp())", "app")
        result = pitr.base_backup(vault, connection(cluster, "postgres"))
        assert result.meta["type"] == "base" and result.meta["wal_method"] == "none"
        assert wal.is_segment_name(result.meta["start_wal_segment"])
        for n in range(1, 6):
            cluster.psql(f"insert into marks (n) values ({n})", "app")
        time.sleep(0.3)
        target = datetime.now(timezone.utc)
        time.sleep(0.3)
        for n in range(6, 11):
            cluster.psql(f"insert into marks (n) values ({n})", "app")
        wait_until_archived(cluster)
        current = cluster.data_dir
        before = sorted(os.listdir(current))
        restored = pitr.restore_point_in_time(vault, current, target_time=target)
        # the server still runs on the current data directory: it was not touched
        assert restored.previous is None and restored.warnings
        assert "still runs" in restored.warnings[0]
        assert sorted(os.listdir(current)) == before
        assert restored.wal_files >= 1 and restored.backup_id == result.backup_id
        rows = restored_rows(restored.data_directory, "select string_agg(n::text, ',' order by n) "
                                                    "from marks")
        assert rows == "1,2,3,4,5"


def test_recovery_to_the_end_of_the_archive_and_swap(lab):
    _settings, config, vault = lab
    cluster = TemporaryCluster(settings=archiving_settings(config))
    try:
        cluster.init().start()
        load_app(cluster)
        pitr.base_backup(vault, connection(cluster, "postgres"))
        cluster.psql("create table after_base as select generate_series(1, 1000) n", "app")
        wait_until_archived(cluster)
        cluster.stop("immediate")  # the disaster
        old = cluster.data_dir
        restored = pitr.restore_point_in_time(vault, old)
        assert restored.previous.startswith(f"{old}.pre_restore_")
        assert os.path.isdir(restored.previous) and restored.data_directory == old
        assert not os.path.exists(os.path.join(old, "recovery.signal"))
        assert restored.restored_to == "end of archived WAL"
        cluster.start()
        cluster.wait_until_writable()
        assert cluster.psql("select count(*) from after_base", "app") == "1000"
        assert cluster.psql("select count(*) from app.posts", "app") == "12000"
        # archiving goes on, on the new timeline, from its history file on
        archive = wal.WalArchive(vault)
        deadline = time.monotonic() + 60
        while "00000002.history" not in archive.index():
            assert time.monotonic() < deadline, "the new timeline's history was not archived"
            time.sleep(0.2)
    finally:
        cluster.destroy()


def test_target_before_the_oldest_base_backup_is_refused(lab):
    _settings, config, vault = lab
    with TemporaryCluster(settings=archiving_settings(config)) as cluster:
        with pytest.raises(SelectorError, match="no base backup"):
            pitr.restore_point_in_time(vault, cluster.data_dir,
                                       target_time=datetime.now(timezone.utc))
        pitr.base_backup(vault, connection(cluster, "postgres"))
        before = sorted(os.listdir(cluster.data_dir))
        with pytest.raises(SelectorError, match="before the oldest base backup"):
            pitr.restore_point_in_time(
                vault, cluster.data_dir,
                target_time=datetime.now(timezone.utc) - timedelta(hours=1))
        assert sorted(os.listdir(cluster.data_dir)) == before
        assert not [name for name in os.listdir(os.path.dirname(cluster.data_dir))
                    if "restoring" in name]


def test_a_gap_in_the_archive_is_found_and_refused(lab):
    settings, config, vault = lab
    with TemporaryCluster(settings=archiving_settings(config)) as cluster:
        pitr.base_backup(vault, connection(cluster, "postgres"))
        segments = [wait_until_archived(cluster) for _ in range(3)]
        archive = wal.WalArchive.from_settings(vault, settings)
        start = pitr.oldest_base_start(vault)
        assert archive.check_continuity(start).ok
        check = subprocess.run([CLI, "--config", config, "wal-check"], capture_output=True,
                               text=True)
        assert check.returncode == 0 and "continuous from" in check.stdout
        # lose one segment's backup everywhere
        index = archive.index()
        vault.delete_backup(vault.select(index[segments[1]]), "test: lose a segment")
        report = archive.check_continuity(start)
        assert report.gaps == [(segments[1], segments[1])]
        check = subprocess.run([CLI, "--config", config, "wal-check"], capture_output=True,
                               text=True)
        assert check.returncode == 2 and segments[1] in check.stderr
        with pytest.raises(BackupError, match="gap"):
            pitr.restore_point_in_time(vault, cluster.data_dir)


def test_wal_push_spools_when_the_primary_fails_and_fetch_reads_both(lab, tmp_path):
    settings, config, vault = lab
    segment = tmp_path / "000000010000000000000042"
    segment.write_bytes(os.urandom(1 << 20))
    broken = dict(settings, repositories=[
        {"name": "primary", "url": "s3://no-such-bucket/x", "endpoint_url": "http://127.0.0.1:9"},
        settings["repositories"][1]])
    broken_config = tmp_path / "broken.yml"
    import yaml

    broken_config.write_text(yaml.safe_dump(broken))
    push = subprocess.run([CLI, "--config", str(broken_config), "wal-push", str(segment)],
                          capture_output=True, text=True)
    assert push.returncode == 0, push.stderr  # durable in the spool: PostgreSQL may go on
    assert "spooled" in push.stderr
    spooled = os.path.join(settings["wal"]["spool_dir"], "primary", segment.name)
    with open(spooled, "rb") as handle:
        assert handle.read() == segment.read_bytes()
    # fetch reads the spool while the repository is down
    out = tmp_path / "fetched"
    fetch = subprocess.run([CLI, "--config", str(broken_config), "wal-fetch", segment.name,
                            str(out)], capture_output=True, text=True)
    assert fetch.returncode == 0 and out.read_bytes() == segment.read_bytes()
    # the repository is back: the next push drains the spool first
    other = tmp_path / "000000010000000000000043"
    other.write_bytes(b"x" * 1000)
    subprocess.run([CLI, "--config", config, "wal-push", str(other)], check=True)
    assert not os.path.exists(spooled)
    index = wal.WalArchive(vault).index()
    assert {segment.name, other.name} <= set(index)
    fetched = tmp_path / "again"
    assert subprocess.run([CLI, "--config", config, "wal-fetch", segment.name, str(fetched),
                           "--cache", str(tmp_path / "index.json")]).returncode == 0
    assert fetched.read_bytes() == segment.read_bytes()
    missing = subprocess.run([CLI, "--config", config, "wal-fetch",
                              "000000010000000000000099", str(tmp_path / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "not in the WAL archive" in missing.stderr
    assert not (tmp_path / "nope").exists()


def test_a_lagging_archiver_catches_up_in_batches(lab, tmp_path):
    """Segments pile up while archiving fails; once it works, the first push stores the
    ready ones together and the archiver's next calls return from their markers."""
    settings, config, vault = lab
    cluster = TemporaryCluster(settings={"archive_mode": "on",
                                         "archive_command": "'/bin/false'"})
    try:
        cluster.init().start()
        cluster.psql("create table t (n int)")
        names = []
        for n in range(4):
            cluster.psql(f"insert into t select generate_series(1, 1000) + {n}")
            names.append(cluster.psql("select pg_walfile_name(pg_switch_wal())"))
        saved = {}
        for name in names:  # what the server wrote, before it recycles the files
            deadline = time.monotonic() + 30
            while not os.path.exists(f"{cluster.data_dir}/pg_wal/archive_status/{name}.ready"):
                assert time.monotonic() < deadline, f"{name} never became ready"
                time.sleep(0.1)
            with open(f"{cluster.data_dir}/pg_wal/{name}", "rb") as handle:
                saved[name] = handle.read()
        cluster.write_settings(archiving_settings(config))
        cluster.psql("select pg_reload_conf()")
        deadline = time.monotonic() + 60
        while cluster.psql("select coalesce(last_archived_wal, '') from pg_stat_archiver") \
                < names[-1]:
            assert time.monotonic() < deadline, "the archiver did not catch up"
            time.sleep(0.2)
        index = wal.WalArchive(vault).index()
        assert set(names) <= set(index)
        # one push stored several segments at once: they share a backup
        assert len({index[name] for name in names}) < len(names)
        with open(settings["audit_log"], encoding="utf-8") as audit:
            pushes = [json.loads(line) for line in audit if '"wal_push"' in line]
        assert any(record.get("batched") for record in pushes)
        assert not os.listdir(os.path.join(settings["wal"]["spool_dir"], "pushed"))
        for name in names:  # restores read back exactly what the server wrote
            out = tmp_path / name
            subprocess.run([CLI, "--config", config, "wal-fetch", name, str(out)], check=True)
            assert out.read_bytes() == saved[name]
    finally:
        cluster.destroy()


def test_a_marker_that_does_not_match_the_file_is_pushed_again(lab, tmp_path):
    settings, config, vault = lab
    pg_wal = tmp_path / "pg_wal"
    (pg_wal / "archive_status").mkdir(parents=True)
    first, second = "000000010000000000000050", "000000010000000000000051"
    for name in (first, second):
        (pg_wal / name).write_bytes(os.urandom(1 << 16))
        (pg_wal / "archive_status" / f"{name}.ready").touch()
    push = [CLI, "--config", config, "wal-push"]
    subprocess.run([*push, str(pg_wal / first)], check=True)
    marker = os.path.join(settings["wal"]["spool_dir"], "pushed", second)
    assert os.path.exists(marker)
    (pg_wal / second).write_bytes(os.urandom(1 << 15))  # not the file that was stored
    subprocess.run([*push, str(pg_wal / second)], check=True)
    assert not os.path.exists(marker)
    out = tmp_path / "fetched"
    subprocess.run([CLI, "--config", config, "wal-fetch", second, str(out)], check=True)
    assert out.read_bytes() == (pg_wal / second).read_bytes()  # the newer push wins
    # --batch 1 stores only the file asked for
    third = pg_wal / "000000010000000000000052"
    third.write_bytes(b"w" * 100)
    (pg_wal / "archive_status" / f"{third.name}.ready").touch()
    (pg_wal / "archive_status" / f"{first}.ready").unlink()
    (pg_wal / "archive_status" / f"{second}.ready").unlink()
    fourth = pg_wal / "000000010000000000000053"
    fourth.write_bytes(b"v" * 100)
    (pg_wal / "archive_status" / f"{fourth.name}.ready").touch()
    subprocess.run([*push, str(third), "--batch", "1"], check=True)
    assert fourth.name not in wal.WalArchive(vault).index()


def test_wal_push_fails_when_nothing_can_keep_the_segment(lab, tmp_path):
    settings, _config, _vault = lab
    segment = tmp_path / "000000010000000000000042"
    segment.write_bytes(b"wal")
    unusable = tmp_path / "spool-is-a-file"
    unusable.write_text("")
    broken = dict(settings, repositories=[
        {"name": "primary", "url": "s3://no-such-bucket/x", "endpoint_url": "http://127.0.0.1:9"}],
        wal={"spool_dir": str(unusable)})
    import yaml

    broken_config = tmp_path / "broken.yml"
    broken_config.write_text(yaml.safe_dump(broken))
    push = subprocess.run([CLI, "--config", str(broken_config), "wal-push", str(segment)],
                          capture_output=True, text=True)
    assert push.returncode == 2
    assert "could not be stored anywhere" in push.stderr


def test_continuity_follows_timeline_switches():
    size = wal.DEFAULT_SEGMENT_SIZE
    names = {"000000010000000000000003", "000000010000000000000004",
             "000000020000000000000005", "000000020000000000000006", "00000002.history"}
    history = {2: "1\t0/5000000\tno recovery target specified\n"}
    report = wal.continuity(names, "000000010000000000000003", size, history.get)
    assert report.ok and report.timelines == [1, 2] and report.segments == 4
    assert report.end == "000000020000000000000006"
    names.discard("000000010000000000000004")
    report = wal.continuity(names, "000000010000000000000003", size, history.get)
    assert report.gaps == [("000000010000000000000004", "000000010000000000000004")]
    assert wal.lsn_segment("1/A0000028", 3) == "0000000300000001000000A0"
    assert wal.parse_segment("0000000300000001000000A0") == (3, 256 + 0xA0)


def test_backup_verify_checks_a_base_backup(lab):
    from ansible_collections.cosmic.backup.plugins.module_utils import verification

    _settings, config, vault = lab
    with TemporaryCluster(settings=archiving_settings(config)) as cluster:
        result = pitr.base_backup(vault, connection(cluster, "postgres"))
        wait_until_archived(cluster)
    ref = vault.select(result.backup_id)
    outcome = verification.verify_backup(vault, ref, record=False)
    assert outcome.ok, outcome.summary()
    assert {"pg_verifybackup", "WAL to consistency"} <= {c.name for c in outcome.checks}
    index = wal.WalArchive(vault).index()
    vault.delete_backup(vault.select(index[result.meta["end_wal_segment"]]), "test")
    outcome = verification.verify_backup(vault, ref, record=False)
    assert not outcome.ok and "WAL to consistency" in outcome.summary()
