"""Retention: which backups to keep, as a pure function of their times.

Like Borg's prune, each rule keeps the newest backup of every period (hour,
day, ISO week, month, year) that lies inside the rule's window; ``within``
keeps every backup younger than its window and ``last`` the N newest whatever
their age. A backup is kept when any rule keeps it, and each decision says
which rules kept it, so the outcome can be explained to an auditor. Nothing
here touches storage: deletion is pruning.py's job.

The defaults are the guide's tables ("Backup Schedule", "Data Retention").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from .errors import ConfigError

# (rule, strftime pattern of its period), finest first.
PERIODS = (
    ("hourly", "%Y-%m-%dT%H"),
    ("daily", "%Y-%m-%d"),
    ("weekly", "%G-W%V"),
    ("monthly", "%Y-%m"),
    ("yearly", "%Y"),
)
PERIOD_RULES = tuple(rule for rule, _pattern in PERIODS)
DURATION_PATTERN = re.compile(r"^\s*(\d+)\s*([hdwy])\s*$")
UNIT_NAMES = {"h": "hour", "d": "day", "w": "week", "y": "year"}


@dataclass(frozen=True)
class Duration:
    """A retention window: hours, days, weeks, or calendar years."""

    amount: int
    unit: str  # h, d, w, y

    @classmethod
    def parse(cls, value: Any, what: str = "duration") -> Duration | None:
        """``30d``, ``12h``, ``4w``, ``7y`` or a whole number of days; None stays None."""
        if value is None or value == "":
            return None
        if isinstance(value, Duration):
            return value
        if isinstance(value, bool):
            raise ConfigError(f"{what} is {value!r}: use a duration such as 30d, 12h, 4w or 7y")
        if isinstance(value, int):
            value = f"{value}d"
        match = DURATION_PATTERN.match(str(value))
        if not match:
            raise ConfigError(
                f"{what} is {value!r}: use a duration such as 30d, 12h, 4w or 7y"
            )
        return cls(int(match[1]), match[2])

    def cutoff(self, now: datetime) -> datetime:
        """The oldest moment still inside the window ending at ``now``."""
        if self.unit == "y":
            year = now.year - self.amount
            try:
                return now.replace(year=year)
            except ValueError:  # 29 February in a year without one
                return now.replace(year=year, day=28)
        hours = {"h": 1, "d": 24, "w": 24 * 7}[self.unit] * self.amount
        return now - timedelta(hours=hours)

    def seconds(self) -> float:
        """Length in seconds (a year counts 365.25 days); for ages and metrics."""
        hours = {"h": 1, "d": 24, "w": 24 * 7, "y": 24 * 365.25}[self.unit]
        return self.amount * hours * 3600

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"

    def describe(self) -> str:
        unit = UNIT_NAMES[self.unit]
        return f"{self.amount} {unit}{'' if self.amount == 1 else 's'}"


@dataclass(frozen=True)
class Policy:
    """How long backups of one kind are kept; ``indefinite`` keeps everything."""

    last: int = 1
    within: Duration | None = None
    hourly: Duration | None = None
    daily: Duration | None = None
    weekly: Duration | None = None
    monthly: Duration | None = None
    yearly: Duration | None = None
    indefinite: bool = False

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None, *, base: Policy | None = None,
                  what: str = "retention") -> Policy:
        """A policy from settings (``{daily: 30d, weekly: 90d, last: 1}``) over ``base``."""
        base = base or cls()
        if value is None:
            return base
        if value in ("indefinite", "forever"):
            return cls(indefinite=True)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{what} must be a mapping such as {{daily: 30d, weekly: 90d}} "
                              "or the word indefinite")
        names = {"last", "within", "indefinite", *PERIOD_RULES}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(f"{what} has unknown rules {', '.join(unknown)}: "
                              f"use {', '.join(sorted(names))}")
        changes: dict[str, Any] = {}
        for name, setting in value.items():
            if name == "last":
                if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
                    raise ConfigError(f"{what}.last is {setting!r}: use a whole number >= 0")
                changes[name] = setting
            elif name == "indefinite":
                changes[name] = bool(setting)
            else:
                changes[name] = Duration.parse(setting, f"{what}.{name}")
        merged = {**base.__dict__, **changes}
        return cls(**merged)

    def rules(self) -> list[tuple[str, str, Duration]]:
        """(rule, period pattern, window) of every period rule that is set."""
        return [(name, pattern, getattr(self, name)) for name, pattern in PERIODS
                if getattr(self, name) is not None]

    def describe(self) -> str:
        if self.indefinite:
            return "kept indefinitely"
        parts = [f"the newest {self.last}"] if self.last else []
        if self.within:
            parts.append(f"all of the last {self.within.describe()}")
        parts += [f"{name} for {window.describe()}" for name, _pattern, window in self.rules()]
        return "keep " + ", ".join(parts) if parts else "keep nothing"

    def to_dict(self) -> dict[str, Any]:
        if self.indefinite:
            return {"indefinite": True}
        result: dict[str, Any] = {"last": self.last}
        for name in ("within", *PERIOD_RULES):
            if getattr(self, name) is not None:
                result[name] = str(getattr(self, name))
        return result


# The guide: full database daily 30 days, weekly 90 days, monthly 1 year,
# yearly 7 years; transaction logs 7 days; uploads 90 days (daily);
# configuration 90 days (every change); application code indefinitely.
GUIDE_POLICIES: dict[str, Policy] = {
    "database": Policy(daily=Duration(30, "d"), weekly=Duration(90, "d"),
                       monthly=Duration(1, "y"), yearly=Duration(7, "y")),
    "wal": Policy(within=Duration(7, "d")),
    "files": Policy(daily=Duration(90, "d")),
    "config": Policy(within=Duration(90, "d")),
    "code": Policy(indefinite=True),
}


def policies_from_settings(value: Mapping[str, Any] | None) -> dict[str, Policy]:
    """Per-kind policies: the guide's defaults with the given kinds' rules overridden."""
    value = value or {}
    if not isinstance(value, Mapping):
        raise ConfigError("retention must map kinds to rules, e.g. {database: {daily: 30d}}")
    unknown = sorted(set(value) - set(GUIDE_POLICIES))
    if unknown:
        raise ConfigError(f"retention names unknown kinds {', '.join(unknown)}: "
                          f"use {', '.join(GUIDE_POLICIES)}")
    return {kind: Policy.from_dict(value.get(kind), base=policy, what=f"retention.{kind}")
            for kind, policy in GUIDE_POLICIES.items()}


@dataclass(frozen=True)
class Decision:
    """Keep or prune one backup, and why."""

    id: str
    created: datetime
    keep: bool
    reasons: tuple[str, ...] = field(default=())

    def with_reason(self, reason: str) -> Decision:
        return Decision(self.id, self.created, True, (*self.reasons, reason))


def decide(backups: Iterable[Any], policy: Policy, now: datetime) -> list[Decision]:
    """A decision for every backup (items with ``.id`` and a UTC ``.created``), newest first."""
    items = sorted(backups, key=lambda item: (item.created, item.id), reverse=True)
    reasons: dict[str, list[str]] = {item.id: [] for item in items}
    if policy.indefinite:
        for item in items:
            reasons[item.id].append("indefinite")
    else:
        for position, item in enumerate(items):
            if item.created > now:
                reasons[item.id].append("newer than now (check the clock)")
            if position < policy.last:
                reasons[item.id].append(f"newest {policy.last}")
            if policy.within and item.created > policy.within.cutoff(now):
                reasons[item.id].append(f"within {policy.within}")
        for name, pattern, window in policy.rules():
            cutoff = window.cutoff(now)
            seen: set[str] = set()
            for item in items:  # newest first: the first of each period is its newest
                period = item.created.astimezone(timezone.utc).strftime(pattern)
                if period in seen:
                    continue
                seen.add(period)
                if item.created > cutoff:
                    reasons[item.id].append(f"{name} {period}")
    return [Decision(item.id, item.created, bool(reasons[item.id]), tuple(reasons[item.id]))
            for item in items]


def keep_set(backups: Iterable[Any], policy: Policy, now: datetime) -> set[str]:
    """The ids that ``policy`` keeps at ``now``."""
    return {decision.id for decision in decide(backups, policy, now) if decision.keep}


# -- WAL ------------------------------------------------------------------------

SEGMENT_PATTERN = re.compile(
    r"^(?P<timeline>[0-9A-F]{8})(?P<log>[0-9A-F]{8})(?P<seg>[0-9A-F]{8})"
    r"(?P<suffix>\.partial|\.[0-9A-F]{8}\.backup)?$"
)
HISTORY_PATTERN = re.compile(r"^[0-9A-F]{8}\.history$")


def segment_position(name: str) -> tuple[int, int] | None:
    """(log, segment) of a WAL file name, comparable across timelines; None if not one."""
    match = SEGMENT_PATTERN.match(name.rsplit("/", 1)[-1])
    if not match:
        return None
    return int(match["log"], 16), int(match["seg"], 16)


@dataclass(frozen=True)
class WalArchive:
    """One WAL backup: its id, time and the WAL file names it holds."""

    id: str
    created: datetime
    segments: tuple[str, ...]


def decide_wal(archives: Iterable[WalArchive], policy: Policy, now: datetime,
               needed_from: str | None) -> list[Decision]:
    """WAL decisions: the policy's keep set, plus every archive that holds a segment
    at or after ``needed_from`` (the start segment of the oldest retained base
    backup) on any timeline, a timeline history file, or contents it cannot read."""
    archives = list(archives)
    start = segment_position(needed_from) if needed_from else None
    if needed_from and start is None:
        raise ConfigError(f"{needed_from!r} is not a WAL segment name (24 hex digits)")
    by_id = {archive.id: archive for archive in archives}
    decisions = []
    for decision in decide(archives, policy, now):
        segments = by_id[decision.id].segments
        if not segments:
            decision = decision.with_reason("holds no recognisable WAL file name")
        elif any(HISTORY_PATTERN.match(name.rsplit("/", 1)[-1]) for name in segments):
            decision = decision.with_reason("timeline history")
        elif start is not None:
            positions = [segment_position(name) for name in segments]
            if any(position is None for position in positions):
                decision = decision.with_reason("holds a file that is not a WAL segment")
            elif max(positions) >= start:
                decision = decision.with_reason(f"needed by the oldest base backup "
                                                f"(from {needed_from})")
        decisions.append(decision)
    return decisions
