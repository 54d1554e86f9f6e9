from datetime import datetime, timezone

import pytest

from tests.engine import catalog, errors


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def refs(*times, kind="database"):
    return [catalog.BackupRef.parse(catalog.new_backup_id(kind, at(t))) for t in times]


def test_backup_id_carries_time_kind_and_a_random_tag():
    backup_id = catalog.new_backup_id("files", at("2026-04-06T03:04:05.678"))
    ref = catalog.BackupRef.parse(backup_id)
    assert backup_id.startswith("20260406T030405.678Z-files-")
    assert ref.kind == "files"
    assert ref.created == at("2026-04-06T03:04:05.678")
    assert catalog.new_backup_id("files", ref.created) != backup_id


def test_ids_sort_in_time_order():
    backups = refs("2026-01-02T00:00", "2025-12-31T23:59", "2026-01-01T12:00")
    assert [b.created for b in sorted(backups)] == sorted(b.created for b in backups)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("latest", "2025-04-07T01:00"),
        ("2025-04-06", "2025-04-06T23:59:59"),  # the newest of that UTC day
        ("2025-04-05", "2025-04-05T08:00"),
    ],
)
def test_selectors(selector, expected):
    backups = refs("2025-04-05T08:00", "2025-04-06T00:00", "2025-04-06T23:59:59",
                   "2025-04-07T01:00")
    assert catalog.select(backups, selector).created == at(expected)


def test_exact_id_selects_that_backup():
    backups = refs("2025-04-05T08:00", "2025-04-06T00:00")
    assert catalog.select(backups, backups[0].id) == backups[0]


def test_selection_is_per_kind():
    backups = refs("2025-04-05T08:00") + refs("2025-04-06T08:00", kind="files")
    assert catalog.select(backups, "latest", "database").kind == "database"


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("yesterday", "unknown selector 'yesterday': use latest, a date YYYY-MM-DD"),
        ("2025-04-09", "no database backup was taken on 2025-04-09 .*2025-04-05"),
        ("2025-02-30", "not a calendar date"),
        ("20250405T080000.000Z-database-aaaaaa", "is not in any repository"),
    ],
)
def test_bad_selectors_explain_themselves(selector, message):
    with pytest.raises(errors.SelectorError, match=message):
        catalog.select(refs("2025-04-05T08:00"), selector, "database")


def test_latest_of_nothing():
    with pytest.raises(errors.SelectorError, match="there is no files backup yet"):
        catalog.select([], "latest", "files")


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../b", "", "a//b", ".hidden"])
def test_object_names_cannot_escape(name):
    with pytest.raises(errors.ConfigError):
        catalog.check_object_name(name)


def test_unknown_kind():
    with pytest.raises(errors.ConfigError, match="unknown backup kind 'photos'"):
        catalog.new_backup_id("photos")
