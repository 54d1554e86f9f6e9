import os

import pytest

from tests.engine import durability, errors, storage


@pytest.fixture
def local(tmp_path):
    return storage.LocalStorage(str(tmp_path / "repo"))


def test_object_appears_only_on_commit(local):
    writer = local.writer("backups/files/x/data/a")
    writer.write(b"hello ")
    writer.write(b"world")
    assert list(local.list("backups")) == []
    writer.commit()
    assert [o.key for o in local.list("backups")] == ["backups/files/x/data/a"]
    with local.reader("backups/files/x/data/a") as handle:
        assert handle.read() == b"hello world"


def test_abort_leaves_nothing(local):
    writer = local.writer("backups/files/x/data/a")
    writer.write(b"partial")
    writer.abort()
    assert list(local.list("")) == []
    assert local.remove_incomplete(0) == []


def test_interrupted_write_is_invisible_and_cleaned(local):
    writer = local.writer("backups/files/x/data/a")
    writer.write(b"partial")  # the process dies here: no commit, no abort
    writer._file.flush()
    assert list(local.list("")) == []
    removed = local.remove_incomplete(0)
    assert len(removed) == 1 and ".partial-" in removed[0]
    assert not any(".partial-" in name for _, _, files in os.walk(local.root) for name in files)


def test_missing_object(local):
    with pytest.raises(errors.ObjectMissing, match="is missing from file://"):
        local.reader("backups/nothing")


@pytest.mark.parametrize("key", ["../escape", "/abs", "a/../../b", "a//b", "x.partial-1234"])
def test_keys_cannot_escape_the_repository(local, key):
    with pytest.raises(errors.StorageError, match="refusing object key"):
        local.writer(key)


def test_delete_prunes_empty_directories(local):
    writer = local.writer("backups/files/x/data/a")
    writer.commit()
    local.delete("backups/files/x/data/a")
    assert os.listdir(local.root) == []


def test_unwritable_root_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(errors.StorageError, match="not usable"):
        storage.LocalStorage(str(blocker / "repo")).probe()


@pytest.mark.parametrize(
    ("url", "kind"), [("/var/backups", "LocalStorage"), ("file:///srv/b", "LocalStorage")]
)
def test_open_storage(url, kind):
    assert type(storage.open_storage(url)).__name__ == kind


def test_open_storage_rejects_unknown_schemes():
    with pytest.raises(errors.ConfigError, match="use a path"):
        storage.open_storage("ftp://host/x")
    with pytest.raises(errors.ConfigError, match="names no bucket"):
        storage.open_storage("s3:///prefix")


def test_large_object_is_synced_in_the_background_and_committed_whole(local):
    chunk = os.urandom(1 << 20)
    writer = local.writer("backups/files/x/data/big")
    for index in range(3 * (storage.WRITEBACK_BYTES >> 20) + 1):
        writer.write(bytes([index % 256]) + chunk[1:])
    assert writer._sync is not None  # the background sync started
    writer.commit()
    with local.reader("backups/files/x/data/big") as handle:
        for index in range(3 * (storage.WRITEBACK_BYTES >> 20) + 1):
            assert handle.read(1 << 20) == bytes([index % 256]) + chunk[1:]
        assert handle.read() == b""


def test_background_sync_failure_is_raised_when_stopped(tmp_path):
    closed = os.open(tmp_path / "gone", os.O_CREAT | os.O_WRONLY)
    os.close(closed)
    sync = durability.BackgroundSync(lambda: os.fdatasync(closed))  # fails: EBADF
    sync.request()
    with pytest.raises(OSError):
        sync.stop()
