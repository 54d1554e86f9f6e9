"""Freshness, alerts (a local webhook receiver and moto's SNS), CloudWatch's
freshness metric, run metrics and storage capacity."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from ansible_collections.cosmic.backup.plugins.module_utils import (
    alerts,
    capacity,
    errors,
    info,
    metrics,
    monitoring,
    verification,
)

from tests.integration.backdated import backup_at
from tests.receiver import Receiver

NOW = datetime.now(timezone.utc)


def test_stale_kind_is_reported_and_alerted_and_a_fresh_one_is_not(local_vault):
    backup_at(local_vault, "database", NOW - timedelta(hours=30))
    fresh = backup_at(local_vault, "files", NOW - timedelta(hours=2))
    verification.verify_backup(local_vault, local_vault.select(fresh), deep=False)
    limits = monitoring.parse_max_age({"database": "26h", "files": "26h"})
    result = info.report(local_vault, now=NOW, max_age=limits)
    assert result["stale"] == ["database"]
    assert result["kinds"]["files"]["stale"] is False
    assert result["kinds"]["files"]["newest_verified"] == fresh
    assert result["kinds"]["database"]["last_verified"] is None
    assert any(line.startswith("database  STALE") for line in result["summary"])

    with Receiver() as receiver:
        monitor = monitoring.Monitor(monitoring.MonitoringSettings(webhook_url=receiver.url))
        for alert in info.stale_alerts(result):
            assert all(d.ok for d in monitor.alert(alert))
    [post] = receiver.posts
    body = post["json"]
    assert post["headers"]["Content-Type"] == "application/json"
    assert body["kind"] == "database" and body["severity"] == "critical"
    assert "database backup is stale" in body["what"] and "30.0 h old" in body["what"]
    assert "limit is 26h" in body["what"]
    assert "primary (file://" in body["where"]
    assert "./scripts/backup.sh database" in body["next_step"]
    assert body["text"].startswith(body["what"])


def test_a_kind_with_no_backup_at_all_is_stale(local_vault):
    result = info.report(local_vault, now=NOW, max_age=monitoring.parse_max_age("guide"))
    assert result["stale"] == ["database", "wal", "files"]
    assert "there is no wal backup at all" in info.stale_alerts(result)[1].what


def test_report_shows_copies_sizes_window_and_audit(local_vault, local_settings):
    base = backup_at(local_vault, "database", NOW - timedelta(hours=5), {"d": b"x" * 5000})
    backup_at(local_vault, "wal", NOW - timedelta(hours=6), {"000000010000000000000001": b"w"})
    backup_at(local_vault, "wal", NOW - timedelta(hours=1), {"000000010000000000000002": b"w"})
    result = info.report(local_vault, now=NOW)
    [entry] = [b for b in result["backups"] if b["id"] == base]
    assert set(entry["copies"]) == {"primary", "secondary"} and entry["secondary_copy"]
    assert entry["bytes"] > 5000 // 100  # zstd compresses the zeros, the seal adds a header
    window = result["point_in_time"]
    assert window["earliest"] == local_vault.select(base).created.isoformat()
    # A database backup older than the oldest WAL cannot start a replay.
    backup_at(local_vault, "database", NOW - timedelta(hours=7))
    assert info.report(local_vault, now=NOW)["point_in_time"]["earliest"] == window["earliest"]
    later = backup_at(local_vault, "wal", NOW - timedelta(minutes=5),
                      {"000000010000000000000003": b"w"})
    window = info.report(local_vault, now=NOW)["point_in_time"]
    assert window["earliest"] == local_vault.select(base).created.isoformat()
    assert window["latest"] == local_vault.select(later).created.isoformat()
    usage = {(u["repository"], u["kind"]): u for u in result["usage"]}
    assert usage[("primary", "wal")]["backups"] == 2
    verification.verify_backup(local_vault, local_vault.select(base), deep=False)
    trail = info.audit_trail(local_vault, base)
    actions = [event["action"] for event in trail]
    assert actions.count("write") == 2 and "verification" in actions
    assert actions.count("verification record") == 1  # one record, kept in both repositories


def test_webhook_retries_server_errors_but_not_rejections():
    alert = alerts.failure_alert("verify", "files", "pack 3 fails authentication", "host-a")
    with Receiver(statuses=[503, 502, 200]) as receiver:
        delivery = alerts.send_webhook(alert, receiver.url + "?token=SECRET")
    assert delivery.ok and len(receiver.posts) == 3
    assert "SECRET" not in delivery.detail
    with Receiver(statuses=[400, 200]) as receiver:
        delivery = alerts.send_webhook(alert, receiver.url)
    assert not delivery.ok and delivery.detail.endswith("HTTP 400") and len(receiver.posts) == 1
    unreachable = alerts.send_webhook(alert, "http://127.0.0.1:9/x", attempts=1)
    assert not unreachable.ok and "127.0.0.1:9" in unreachable.detail


def test_sns_alert_reaches_a_subscriber(moto_server):
    sns = boto3.client("sns", endpoint_url=moto_server.endpoint_url, region_name="eu-west-1")
    sqs = boto3.client("sqs", endpoint_url=moto_server.endpoint_url, region_name="eu-west-1")
    topic = sns.create_topic(Name="cosmic-test-alerts")["TopicArn"]
    queue = sqs.create_queue(QueueName="cosmic-test-alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    alert = alerts.stale_alert("wal", 2.5 * 3600, "1h", "primary (s3://b/cosmic)",
                               "20250406T010000.000Z-wal-abcdef")
    [delivery] = alerts.deliver(alert, sns_topic_arn=topic,
                                sns_endpoint_url=moto_server.endpoint_url)
    assert delivery.ok, delivery.detail
    [message] = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2)["Messages"]
    envelope = json.loads(message["Body"])
    assert envelope["Subject"].startswith("[cosmic-backup critical] wal backup is stale")
    assert len(envelope["Subject"]) <= 100  # SNS's limit
    assert "pg_stat_archiver" in envelope["Message"]
    assert "Where: primary (s3://b/cosmic)" in envelope["Message"]


def test_monitor_run_writes_metrics_publishes_freshness_and_alerts_on_failure(
        moto_server, tmp_path):
    cloudwatch = boto3.client("cloudwatch", endpoint_url=moto_server.endpoint_url,
                              region_name="eu-west-1")
    with Receiver() as receiver:
        monitor = monitoring.Monitor(monitoring.MonitoringSettings.from_dict({
            "textfile_dir": str(tmp_path / "textfile"), "webhook_url": receiver.url,
            "cloudwatch": {"region": "eu-west-1", "endpoint_url": moto_server.endpoint_url}}))
        with monitor.run("backup", "files") as run:
            run.bytes = 12345
        assert run.ok and run.warnings == [] and receiver.posts == []
        with pytest.raises(errors.StorageError), monitor.run("backup", "database") as failed:
            raise errors.StorageError("repository s3://b is not reachable")
        assert not failed.ok
    [post] = receiver.posts
    assert post["json"]["what"] == ("backup of database failed: repository s3://b is not "
                                    "reachable")
    assert "./scripts/backup.sh database" in post["json"]["next_step"]

    files = metrics.read_textfile(str(tmp_path / "textfile" / "cosmic_backup_backup_files.prom"))
    assert {s.name: s.value for s in files}["last_run_bytes"] == 12345
    database = metrics.read_textfile(
        str(tmp_path / "textfile" / "cosmic_backup_backup_database.prom"))
    assert {s.name: s.value for s in database}["last_run_success"] == 0

    listed = cloudwatch.list_metrics(Namespace="CosmicBackup", MetricName="LastSuccessTimestamp")
    dimensions = [m["Dimensions"] for m in listed["Metrics"]]
    assert [{"Name": "Kind", "Value": "files"}] in dimensions
    assert [{"Name": "Kind", "Value": "database"}] not in dimensions  # failed: no datapoint
    stats = cloudwatch.get_metric_statistics(
        Namespace="CosmicBackup", MetricName="LastSuccessTimestamp",
        Dimensions=[{"Name": "Kind", "Value": "files"}], Statistics=["SampleCount", "Maximum"],
        StartTime=datetime.now(timezone.utc) - timedelta(minutes=10),
        EndTime=datetime.now(timezone.utc) + timedelta(minutes=10), Period=60)
    [point] = stats["Datapoints"]
    assert point["SampleCount"] == 1 and abs(point["Maximum"] - time.time()) < 120


def test_free_space_warns_below_the_threshold(tmp_path):
    [ok] = capacity.free_space([str(tmp_path)], min_free_percent=0)
    assert not ok.low and ok.free_bytes > 0
    [low] = capacity.free_space([str(tmp_path / "not" / "yet")], min_free_percent=0,
                                min_free_bytes=ok.total_bytes + 1)
    assert low.low and "below the warning threshold" in low.message
    assert "backup_prune" in low.message


def test_bad_monitoring_settings_name_the_setting():
    with pytest.raises(errors.ConfigError, match=r"unknown settings webhook: use "):
        monitoring.MonitoringSettings.from_dict({"webhook": "http://x"})
    with pytest.raises(errors.ConfigError, match=r"max_age\.wal is '1 hour'"):
        monitoring.MonitoringSettings.from_dict({"max_age": {"wal": "1 hour"}})


def test_every_backup_and_restore_run_writes_metrics(local_settings, tmp_path):
    """Backups report through the vault whoever takes them; restores too."""
    import subprocess
    from pathlib import Path

    import yaml

    textfiles = tmp_path / "textfiles"
    local_settings["monitoring"] = {"textfile_dir": str(textfiles)}
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(local_settings))
    cli = str(Path(__file__).resolve().parents[2] / "bin" / "cosmic-backup")
    subprocess.run([cli, "--config", str(config), "backup-stream", "database", "--name", "d"],
                   input=b"rows" * 1000, check=True, capture_output=True)
    subprocess.run([cli, "--config", str(config), "restore-stream", "latest", "--name", "d"],
                   check=True, capture_output=True)
    text = "".join(path.read_text() for path in textfiles.glob("*.prom"))
    for operation in ("backup", "restore"):
        assert f'operation="{operation}"' in text and 'kind="database"' in text
    assert "cosmic_backup_last_success_timestamp_seconds" in text


def test_monitored_engine_functions_report_their_runs(tmp_path):
    """database and point-in-time restores are reported through this decorator."""
    from types import SimpleNamespace

    import pytest
    from ansible_collections.cosmic.backup.plugins.module_utils.errors import BackupError
    from ansible_collections.cosmic.backup.plugins.module_utils.monitoring import (
        Monitor,
        MonitoringSettings,
        monitored,
    )

    textfiles = tmp_path / "textfiles"
    vault = SimpleNamespace(monitor=Monitor(MonitoringSettings(textfile_dir=str(textfiles))))

    @monitored("restore", "database")
    def restore(vault, fail=False):
        if fail:
            raise BackupError("the dump failed authentication")
        return SimpleNamespace(warnings=["kept the old database"])

    assert restore(vault).warnings == ["kept the old database"]
    with pytest.raises(BackupError):
        restore(vault, fail=True)
    text = "".join(path.read_text() for path in textfiles.glob("*.prom"))
    assert 'operation="restore"' in text and 'kind="database"' in text
