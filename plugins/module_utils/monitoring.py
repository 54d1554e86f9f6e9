"""Monitoring settings and the run recorder every operation goes through.

    monitoring:
      textfile_dir: /var/lib/prometheus/node-exporter   # node_exporter textfile collector
      cloudwatch: {region: eu-west-1}                   # publish the freshness metric
      webhook_url: https://alerts.example/hooks/backup
      sns_topic_arn: arn:aws:sns:eu-west-1:123456789012:cosmic-prod-alerts
      max_age: {database: 26h, wal: 1h, files: 26h}     # freshness limits (RPO)
      paths: [/var/spool/cosmic-backup, /var/tmp/cosmic-backup]  # spool and staging
      min_free_percent: 10
      min_free_bytes: 5368709120

``Monitor.run(operation, kind)`` wraps a backup, verify, restore or prune run:
it writes the run's textfile metrics, publishes CloudWatch's
``CosmicBackup/LastSuccessTimestamp`` after a successful backup, and sends an
alert when the run fails. Monitoring problems become warnings; they never
change the outcome of the run they describe.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import alerts, metrics
from .capacity import DEFAULT_MIN_FREE_PERCENT
from .errors import BackupError, ConfigError
from .retention import Duration

# Freshness limits that follow the guide's schedule and RPO: WAL every hour
# (database RPO < 1 hour), daily dumps and uploads with two hours of slack.
# Configuration is backed up on change and code on release: no age limit.
GUIDE_MAX_AGE = {"database": "26h", "wal": "1h", "files": "26h"}


@dataclass
class MonitoringSettings:
    textfile_dir: str | None = None
    cloudwatch: dict[str, Any] | None = None  # {region, endpoint_url}; None: do not publish
    webhook_url: str | None = None
    sns_topic_arn: str | None = None
    sns_region: str | None = None
    sns_endpoint_url: str | None = None
    max_age: dict[str, Duration] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    min_free_percent: float = DEFAULT_MIN_FREE_PERCENT
    min_free_bytes: int = 0

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None) -> MonitoringSettings:
        value = dict(value or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"monitoring has unknown settings {', '.join(unknown)}: "
                              f"use {', '.join(sorted(known))}")
        value = {key: item for key, item in value.items() if item is not None}
        cloudwatch = value.get("cloudwatch")
        if cloudwatch is True:
            value["cloudwatch"] = {}
        elif cloudwatch is False:
            value["cloudwatch"] = None
        value["max_age"] = parse_max_age(value.get("max_age"))
        return cls(**value)

    @property
    def alerting(self) -> bool:
        return bool(self.webhook_url or self.sns_topic_arn)


def parse_max_age(value: Mapping[str, Any] | str | None) -> dict[str, Duration]:
    """``{database: 26h, wal: 1h}``, or ``guide`` for the guide's limits."""
    if value in (None, ""):
        return {}
    if value == "guide":
        value = GUIDE_MAX_AGE
    if not isinstance(value, Mapping):
        raise ConfigError("max_age must map kinds to durations, e.g. {database: 26h, wal: 1h}, "
                          "or be the word guide")
    return {kind: Duration.parse(limit, f"max_age.{kind}") for kind, limit in value.items()
            if limit not in (None, "")}


@dataclass
class Run:
    operation: str
    kind: str
    started: float = field(default_factory=time.time)
    bytes: int | None = None
    ok: bool = False
    error: str | None = None
    where: str = field(default_factory=socket.gethostname)
    next_step: str | None = None
    warnings: list[str] = field(default_factory=list)
    deliveries: list[alerts.Delivery] = field(default_factory=list)

    def fail(self, error: str, next_step: str | None = None) -> None:
        """Mark the run failed without raising (e.g. a verification that found damage)."""
        self.error, self.next_step = error, next_step


def monitored(operation: str, kind: str):
    """Report every call of an engine function ``f(vault, ...)`` as a run of
    ``operation`` on ``kind`` to the vault's monitor (metrics, alert on failure)."""
    def decorate(function):
        @functools.wraps(function)
        def run(vault, *args, **kwargs):
            with vault.monitor.run(operation, kind) as record:
                result = function(vault, *args, **kwargs)
                record.warnings += list(getattr(result, "warnings", None) or [])
                return result
        return run
    return decorate


class Monitor:
    def __init__(self, settings: MonitoringSettings | None = None):
        self.settings = settings or MonitoringSettings()

    @contextlib.contextmanager
    def run(self, operation: str, kind: str, where: str | None = None) -> Iterator[Run]:
        """Record the run of ``operation`` on ``kind``; failures (raised or marked) alert."""
        run = Run(operation, kind)
        if where:
            run.where = where
        try:
            yield run
        except BackupError as error:
            run.error = str(error)
            raise
        except BaseException as error:
            run.error = f"{type(error).__name__}: {error}"
            raise
        finally:
            run.ok = run.error is None
            self._finish(run)

    def _finish(self, run: Run) -> None:
        finished = time.time()
        settings = self.settings
        if settings.textfile_dir:
            try:
                metrics.record_run(settings.textfile_dir, run.operation, run.kind, ok=run.ok,
                                   finished=finished, duration=finished - run.started,
                                   byte_count=run.bytes)
            except (BackupError, OSError) as error:
                run.warnings.append(f"metrics not written: {error}")
        if run.ok and run.operation == "backup" and settings.cloudwatch is not None:
            try:
                metrics.publish_freshness(run.kind, finished, **settings.cloudwatch)
            except BackupError as error:
                run.warnings.append(str(error))
        if not run.ok:
            self.alert(alerts.failure_alert(run.operation, run.kind, run.error or "failed",
                                            run.where, run.next_step), run)

    def alert(self, alert: alerts.Alert, run: Run | None = None) -> list[alerts.Delivery]:
        settings = self.settings
        deliveries = alerts.deliver(alert, webhook_url=settings.webhook_url,
                                    sns_topic_arn=settings.sns_topic_arn,
                                    sns_region=settings.sns_region,
                                    sns_endpoint_url=settings.sns_endpoint_url)
        if run is not None:
            run.deliveries += deliveries
            run.warnings += [f"alert not delivered by {d.channel}: {d.detail}"
                             for d in deliveries if not d.ok]
        return deliveries


def monitoring_argument_spec() -> dict[str, Any]:
    """Module option ``monitoring``, documented by the ``cosmic.backup.monitoring`` fragment."""
    return {
        "monitoring": {
            "type": "dict",
            "options": {
                "textfile_dir": {"type": "path"},
                "cloudwatch": {"type": "dict", "options": {
                    "region": {"type": "str"}, "endpoint_url": {"type": "str"}}},
                "webhook_url": {"type": "str", "no_log": False},
                "sns_topic_arn": {"type": "str"},
                "sns_region": {"type": "str"},
                "sns_endpoint_url": {"type": "str"},
                "paths": {"type": "list", "elements": "path", "default": []},
                "min_free_percent": {"type": "float", "default": DEFAULT_MIN_FREE_PERCENT},
                "min_free_bytes": {"type": "int", "default": 0},
            },
        },
    }
