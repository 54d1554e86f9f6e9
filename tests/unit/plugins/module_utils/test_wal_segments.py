"""The batched push's markers: a marker only ever shortens a push, never skips one."""

import os
import pathlib
import struct

import pytest
from ansible_collections.cosmic.backup.plugins.module_utils import wal_segments

SEGMENT = "000000010000000000000007"


@pytest.fixture
def segment(tmp_path):
    """A file that starts with a WAL long page header (system id 42, 16 MiB segments)."""
    path = tmp_path / "pg_wal" / SEGMENT
    path.parent.mkdir()
    header = wal_segments.XLP_LONG_HEADER.pack(0xD113, 0x0002, 1, 0, 0, 0, 42, 16 << 20, 8192)
    path.write_bytes(header + os.urandom(4096))
    return str(path)


def test_a_recorded_segment_is_claimed_once(tmp_path, segment):
    markers = wal_segments.PushedMarkers(str(tmp_path / "spool"))
    markers.record(segment, "20260406T030000.000Z-wal-abc123")
    assert markers.claim(segment) == "20260406T030000.000Z-wal-abc123"
    assert markers.claim(segment) is None  # used up: a second call pushes in full


@pytest.mark.parametrize("damage", ["torn", "empty", "other size", "other system"])
def test_a_damaged_or_foreign_marker_means_push_again(tmp_path, segment, damage):
    markers = wal_segments.PushedMarkers(str(tmp_path / "spool"))
    markers.record(segment, "20260406T030000.000Z-wal-abc123")
    marker = pathlib.Path(markers.directory, SEGMENT)
    text = marker.read_text(encoding="utf-8")
    if damage == "torn":  # a crash while the marker was written (it is not fsynced)
        marker.write_text(text[: len(text) // 2], encoding="utf-8")
    elif damage == "empty":
        marker.write_text("", encoding="utf-8")
    elif damage == "other size":
        with open(segment, "ab") as handle:
            handle.write(b"x")
    else:
        with open(segment, "r+b") as handle:
            handle.seek(24)  # the system identifier in the long page header
            handle.write(struct.pack("<Q", 43))
    assert markers.claim(segment) is None
    assert not os.path.exists(marker)


def test_the_fast_path_answers_only_plain_wal_push_calls(tmp_path, segment):
    spool = str(tmp_path / "spool")
    wal_segments.PushedMarkers(spool).record(segment, "b1")
    assert wal_segments.claim_batched_push(["wal-push", "--verbose", segment,
                                            "--spool-dir", spool]) is None
    assert wal_segments.claim_batched_push(["wal-fetch", segment]) is None
    assert wal_segments.claim_batched_push(["wal-push", segment, "--spool-dir", spool]) == "b1"


def test_segment_names(segment):
    assert wal_segments.is_segment_name(SEGMENT)
    assert wal_segments.is_segment_name("00000001000000A2000000FF")
    for other in ("00000002.history", "00000001000000a2000000ff", SEGMENT + ".partial",
                  SEGMENT[:-1]):
        assert not wal_segments.is_segment_name(other)
