"""Retention keep sets as a table of cases, Borg-style, plus seven-plus years of
simulated daily backups checked against the guide's tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import pytest
from ansible_collections.cosmic.backup.plugins.module_utils import errors, retention

UTC = timezone.utc
D = retention.Duration


@dataclass(frozen=True)
class B:
    id: str
    created: datetime


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def backups(*stamps: str) -> list[B]:
    return [B(stamp, at(stamp)) for stamp in stamps]


NOW = "2025-04-06T03:00:00"

CASES = [
    # (name, policy, backups, now, kept)
    ("nothing to keep", retention.Policy(daily=D(30, "d")), [], NOW, set()),
    ("last keeps the newest whatever its age", retention.Policy(last=1),
     ["2001-01-01T00:00:00", "2002-01-01T00:00:00"], NOW, {"2002-01-01T00:00:00"}),
    ("last 0 and nothing in any window", retention.Policy(last=0, daily=D(30, "d")),
     ["2024-01-01T00:00:00"], NOW, set()),
    ("daily keeps the newest of each day",
     retention.Policy(last=0, daily=D(30, "d")),
     ["2025-04-05T01:00:00", "2025-04-05T13:00:00", "2025-04-06T02:00:00"], NOW,
     {"2025-04-05T13:00:00", "2025-04-06T02:00:00"}),
    ("daily window is exclusive at its edge",
     retention.Policy(last=0, daily=D(30, "d")),
     ["2025-03-07T03:00:00"], NOW, set()),
    ("daily window: one second inside keeps it",
     retention.Policy(last=0, daily=D(30, "d")),
     ["2025-03-07T03:00:01"], NOW, {"2025-03-07T03:00:01"}),
    ("weekly uses ISO weeks across the new year",
     retention.Policy(last=0, weekly=D(1, "y")),
     ["2024-12-29T02:00:00",   # Sunday of 2024-W52
      "2024-12-30T02:00:00",   # Monday of 2025-W01
      "2025-01-05T02:00:00"],  # Sunday of 2025-W01
     NOW, {"2024-12-29T02:00:00", "2025-01-05T02:00:00"}),
    ("monthly keeps each month's last",
     retention.Policy(last=0, monthly=D(1, "y")),
     ["2025-01-30T00:00:00", "2025-01-31T00:00:00", "2025-02-01T00:00:00"], NOW,
     {"2025-01-31T00:00:00", "2025-02-01T00:00:00"}),
    ("yearly keeps each year's last within seven calendar years",
     retention.Policy(last=0, yearly=D(7, "y")),
     ["2017-12-31T02:00:00", "2018-04-06T02:59:59", "2018-04-06T03:00:01",
      "2019-06-01T00:00:00", "2019-12-31T00:00:00"], NOW,
     {"2018-04-06T03:00:01", "2019-12-31T00:00:00"}),
    ("within keeps every backup in the window",
     retention.Policy(last=0, within=D(7, "d")),
     ["2025-03-30T02:00:00", "2025-03-30T04:00:00", "2025-04-06T01:00:00"], NOW,
     {"2025-03-30T04:00:00", "2025-04-06T01:00:00"}),
    ("hours", retention.Policy(last=0, hourly=D(2, "h")),
     ["2025-04-06T01:10:00", "2025-04-06T01:50:00", "2025-04-06T02:30:00"], NOW,
     {"2025-04-06T01:50:00", "2025-04-06T02:30:00"}),
    ("indefinite keeps everything", retention.Policy(indefinite=True),
     ["1999-01-01T00:00:00", "2025-04-06T00:00:00"], NOW,
     {"1999-01-01T00:00:00", "2025-04-06T00:00:00"}),
    ("a backup from the future is never pruned", retention.Policy(last=0),
     ["2025-04-07T00:00:00"], NOW, {"2025-04-07T00:00:00"}),
    ("leap day: one year before 29 February is 28 February",
     retention.Policy(last=0, within=D(1, "y")),
     ["2023-02-28T11:59:59", "2023-02-28T12:00:01"], "2024-02-29T12:00:00",
     {"2023-02-28T12:00:01"}),
]


@pytest.mark.parametrize(("policy", "stamps", "now", "kept"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_keep_set_table(policy, stamps, now, kept):
    assert retention.keep_set(backups(*stamps), policy, at(now)) == kept


def test_decisions_say_which_rules_keep_a_backup():
    policy = retention.GUIDE_POLICIES["database"]
    [newest, older] = retention.decide(backups("2025-03-31T02:00:00", "2025-04-06T02:00:00"),
                                       policy, at(NOW))
    assert newest.id == "2025-04-06T02:00:00"
    assert newest.reasons == ("newest 1", "daily 2025-04-06", "weekly 2025-W14",
                              "monthly 2025-04", "yearly 2025")
    assert older.reasons == ("daily 2025-03-31", "monthly 2025-03")


def daily_backups(first: date, last: date) -> list[B]:
    result, day = [], first
    while day <= last:
        stamp = datetime(day.year, day.month, day.day, 2, 0, tzinfo=UTC)
        result.append(B(stamp.isoformat(), stamp))
        day += timedelta(days=1)
    return result


def guide_expectation(items: list[B], now: datetime) -> set[str]:
    """The guide's tables written out with plain date arithmetic, not strftime periods."""
    kept = {items[-1].id}  # the newest, always
    for item in items:
        day = item.created.date()
        age = now - item.created
        next_day = day + timedelta(days=1)
        if age < timedelta(days=30):
            kept.add(item.id)  # daily for 30 days
        if age < timedelta(days=90) and (day.weekday() == 6 or item is items[-1]):
            kept.add(item.id)  # the Sunday of each week for 90 days
        if next_day.month != day.month and age < timedelta(days=365):
            kept.add(item.id)  # the last day of each month for one year
        if next_day.year != day.year and item.created > now.replace(year=now.year - 7):
            kept.add(item.id)  # 31 December of each year for seven years
    return kept


def test_seven_plus_years_of_daily_database_backups():
    items = daily_backups(date(2017, 6, 1), date(2025, 4, 6))
    assert len(items) > 7 * 365
    now = at(NOW)
    kept = retention.keep_set(items, retention.GUIDE_POLICIES["database"], now)
    assert kept == guide_expectation(items, now)
    # 30 daily, plus older Sundays of 90 days, month ends of a year, year ends of seven.
    ids = sorted(kept)
    assert ids[0] == "2018-12-31T02:00:00+00:00"  # 2017-12-31 is older than seven years
    assert sum(1 for i in ids if i.endswith("12-31T02:00:00+00:00")) == 7  # 2018..2024
    assert 30 + 9 + 9 + 6 <= len(kept) <= 30 + 13 + 12 + 7


def test_pruning_every_day_for_seven_years_equals_pruning_once():
    """Running prune daily never removes something the policy keeps later on."""
    policy = retention.GUIDE_POLICIES["database"]
    everything = daily_backups(date(2017, 6, 1), date(2025, 4, 6))
    present: list[B] = []
    for item in everything:
        present.append(item)
        now = item.created + timedelta(hours=1)
        kept = retention.keep_set(present, policy, now)
        present = [b for b in present if b.id in kept]
    assert {b.id for b in present} == retention.keep_set(everything, policy, at(NOW))


def test_uploads_config_and_code_defaults():
    now = at(NOW)
    items = daily_backups(date(2024, 1, 1), date(2025, 4, 6))
    files = retention.keep_set(items, retention.GUIDE_POLICIES["files"], now)
    assert len(files) == 90
    changes = backups("2024-12-01T10:00:00", "2025-01-20T10:00:00", "2025-01-20T11:00:00")
    config = retention.keep_set(changes, retention.GUIDE_POLICIES["config"], now)
    assert config == {"2025-01-20T10:00:00", "2025-01-20T11:00:00"}
    code = retention.keep_set(items, retention.GUIDE_POLICIES["code"], now)
    assert len(code) == len(items)


def test_config_is_never_emptied_by_a_quiet_quarter():
    only_old = backups("2023-01-01T00:00:00", "2023-06-01T00:00:00")
    assert retention.keep_set(only_old, retention.GUIDE_POLICIES["config"], at(NOW)) == {
        "2023-06-01T00:00:00"}


def test_policies_from_settings_override_one_kind_and_keep_the_rest():
    policies = retention.policies_from_settings({"database": {"daily": "14d", "last": 3},
                                                 "code": {"yearly": 10}})
    assert policies["database"].daily == D(14, "d")
    assert policies["database"].weekly == D(90, "d")
    assert policies["database"].last == 3
    assert policies["code"].yearly == D(10, "d")
    assert policies["wal"] == retention.GUIDE_POLICIES["wal"]
    assert retention.policies_from_settings({"code": "indefinite"})["code"].indefinite
    described = retention.GUIDE_POLICIES["database"].describe()
    assert described == ("keep the newest 1, daily for 30 days, weekly for 90 days, "
                         "monthly for 1 year, yearly for 7 years")


@pytest.mark.parametrize(("value", "message"), [
    ({"databse": {}}, "unknown kinds databse"),
    ({"database": {"dayly": "3d"}}, "unknown rules dayly"),
    ({"database": {"daily": "30 days"}}, "retention.database.daily is '30 days'"),
    ({"database": {"last": -1}}, "retention.database.last is -1"),
    ({"wal": ["7d"]}, "retention.wal must be a mapping"),
])
def test_bad_settings_name_the_entry(value, message):
    with pytest.raises(errors.ConfigError, match=message):
        retention.policies_from_settings(value)


def wal(stamp: str, *names: str) -> retention.WalArchive:
    return retention.WalArchive(f"wal-{stamp}", at(stamp), names)


def test_wal_kept_seven_days_and_while_a_base_backup_needs_it():
    archives = [
        wal("2025-03-01T00:00:00", "000000010000000A000000FE"),
        wal("2025-03-01T01:00:00", "000000010000000A000000FF"),   # the base starts here
        wal("2025-03-01T02:00:00", "000000010000000B00000000"),
        wal("2025-03-02T00:00:00", "00000002.history"),
        wal("2025-03-02T00:00:01", "000000020000000B00000001.partial"),
        wal("2025-03-03T00:00:00", "000000020000000B00000002"),
        wal("2025-04-05T00:00:00", "000000020000000C00000000"),
        wal("2025-03-04T00:00:00"),
    ]
    policy = retention.GUIDE_POLICIES["wal"]
    decisions = {d.id: d for d in retention.decide_wal(archives, policy, at(NOW),
                                                         "000000010000000A000000FF")}
    assert not decisions["wal-2025-03-01T00:00:00"].keep
    for kept in ("2025-03-01T01:00:00", "2025-03-01T02:00:00", "2025-03-02T00:00:01",
                 "2025-03-03T00:00:00"):
        assert decisions[f"wal-{kept}"].reasons == (
            "needed by the oldest base backup (from 000000010000000A000000FF)",)
    assert decisions["wal-2025-03-02T00:00:00"].reasons == ("timeline history",)
    assert decisions["wal-2025-04-05T00:00:00"].keep
    assert decisions["wal-2025-03-04T00:00:00"].reasons == (
        "holds no recognisable WAL file name",)

    without_base = retention.decide_wal(archives[:3], policy, at(NOW), None)
    assert [d.keep for d in without_base] == [True, False, False]  # only the newest 1


def test_wal_anchor_must_be_a_segment_name():
    with pytest.raises(errors.ConfigError, match="not a WAL segment name"):
        retention.decide_wal([], retention.GUIDE_POLICIES["wal"], at(NOW), "base-1")
