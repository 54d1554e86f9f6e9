"""Prometheus textfile metrics (node_exporter's textfile collector) and the
CloudWatch freshness metric that the Pulumi stack's alarms watch.

Each run rewrites one file, ``cosmic_backup_<operation>_<kind>.prom``, so runs
of different kinds never race on a file; the catalog's state (sizes, ages,
verification, capacity) goes to ``cosmic_backup_catalog.prom``. Files are
written to a temporary name and renamed, so node_exporter never reads half.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .atomic_file import atomic_file
from .errors import BackupError

PREFIX = "cosmic_backup_"
CLOUDWATCH_NAMESPACE = "CosmicBackup"
FRESHNESS_METRIC = "LastSuccessTimestamp"
NAME_PATTERN = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")

HELP = {
    "last_run_timestamp_seconds": "Unix time the last run of this operation and kind ended.",
    "last_run_success": "1 if the last run succeeded, 0 if it failed.",
    "last_run_duration_seconds": "Wall time of the last run.",
    "last_run_bytes": "Bytes the last run stored, read or deleted.",
    "last_success_timestamp_seconds": "Unix time of the last successful run.",
    "newest_backup_timestamp_seconds": "Creation time of the newest complete backup.",
    "newest_backup_age_seconds": "Age of the newest complete backup when the catalog was read.",
    "backup_max_age_seconds": "The freshness limit (RPO) for the kind.",
    "backup_stale": "1 if the newest backup is older than its freshness limit.",
    "backups": "Complete backups in the repository.",
    "repository_bytes": "Stored bytes of complete backups in the repository.",
    "last_verified_timestamp_seconds": "Time of the newest passed verification of the kind.",
    "verify_age_seconds": "Seconds since the newest passed verification of the kind.",
    "filesystem_free_bytes": "Free bytes on the file system of a spool, staging or repository "
                             "directory.",
    "filesystem_free_ratio": "Free fraction of that file system.",
    "filesystem_low": "1 if free space is below the warning threshold.",
}


@dataclass
class Sample:
    name: str  # without the prefix
    value: float
    labels: dict[str, str] = field(default_factory=dict)


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def render(samples: Iterable[Sample]) -> str:
    """The exposition text: HELP and TYPE once per metric, then its samples."""
    grouped: dict[str, list[Sample]] = {}
    for sample in samples:
        if not NAME_PATTERN.match(PREFIX + sample.name):
            raise BackupError(f"metric name {sample.name!r} is not a valid Prometheus name")
        grouped.setdefault(sample.name, []).append(sample)
    lines = []
    for name, group in grouped.items():
        full = PREFIX + name
        lines.append(f"# HELP {full} {HELP.get(name, name.replace('_', ' '))}")
        lines.append(f"# TYPE {full} gauge")
        for sample in group:
            labels = ",".join(f'{key}="{_escape(value)}"'
                              for key, value in sorted(sample.labels.items()))
            lines.append(f"{full}{{{labels}}} {_number(sample.value)}" if labels
                         else f"{full} {_number(sample.value)}")
    return "\n".join(lines) + "\n"


def write_textfile(directory: str, name: str, samples: Iterable[Sample]) -> str:
    """Atomically replace ``directory/name`` (a ``.prom`` file) with these samples."""
    text = render(samples)
    path = os.path.join(directory, name)
    try:
        os.makedirs(directory, exist_ok=True)
        # 0644: node_exporter usually runs as another user
        with atomic_file(path, "w", permissions=0o644) as handle:
            handle.write(text)
    except OSError as error:
        raise BackupError(f"cannot write metrics into {directory}: {error.strerror}; check the "
                          "textfile directory setting and its permissions") from None
    return path


def read_textfile(path: str) -> list[Sample]:
    """Samples from one of our own files (to carry values over between runs)."""
    samples = []
    pattern = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? '
                         r'(?P<value>\S+)$')
    label = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                match = pattern.match(line.strip())
                if not match or not match["name"].startswith(PREFIX):
                    continue
                labels = {key: value.replace('\\"', '"').replace("\\n", "\n")
                          .replace("\\\\", "\\")
                          for key, value in label.findall(match["labels"] or "")}
                try:
                    value = float(match["value"])
                except ValueError:
                    continue
                samples.append(Sample(match["name"][len(PREFIX):], value, labels))
    except FileNotFoundError:
        pass
    return samples


def run_file_name(operation: str, kind: str) -> str:
    return f"{PREFIX}{operation}_{kind}.prom"


def record_run(directory: str, operation: str, kind: str, *, ok: bool, finished: float,
               duration: float, byte_count: int | None = None) -> str:
    """Write the run metrics of one operation and kind; a failure keeps the last success."""
    labels = {"operation": operation, "kind": kind}
    name = run_file_name(operation, kind)
    last_success = finished if ok else next(
        (sample.value for sample in read_textfile(os.path.join(directory, name))
         if sample.name == "last_success_timestamp_seconds"), 0.0)
    samples = [
        Sample("last_run_timestamp_seconds", finished, labels),
        Sample("last_run_success", 1 if ok else 0, labels),
        Sample("last_run_duration_seconds", round(duration, 3), labels),
        Sample("last_success_timestamp_seconds", last_success, labels),
    ]
    if byte_count is not None:
        samples.append(Sample("last_run_bytes", byte_count, labels))
    return write_textfile(directory, name, samples)


def publish_freshness(kind: str, timestamp: float, *, region: str | None = None,
                      endpoint_url: str | None = None) -> None:
    """Put CosmicBackup/LastSuccessTimestamp{Kind} for the stack's freshness alarm."""
    try:
        import boto3  # here, not at the top: it costs 0.3 s of every start
    except ImportError:
        raise BackupError("publishing to CloudWatch needs boto3: pip install boto3") from None
    client = boto3.session.Session(region_name=region).client(
        "cloudwatch", endpoint_url=endpoint_url)
    try:
        client.put_metric_data(Namespace=CLOUDWATCH_NAMESPACE, MetricData=[{
            "MetricName": FRESHNESS_METRIC,
            "Dimensions": [{"Name": "Kind", "Value": kind}],
            "Value": float(timestamp),
            "Unit": "Seconds",
        }])
    except Exception as error:  # noqa: BLE001 - every cause ends the same way
        raise BackupError(
            f"cannot publish {CLOUDWATCH_NAMESPACE}/{FRESHNESS_METRIC} for {kind}: {error}; "
            "check cloudwatch:PutMetricData on the host's role and the region"
        ) from None


def label_set(**labels: str) -> Mapping[str, str]:
    return {key: str(value) for key, value in labels.items() if value is not None}
