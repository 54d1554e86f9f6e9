"""Alerts: an encrypted topic, and alarms for stale backups, replication and growth."""

from __future__ import annotations

import pytest

from tests.pulumi.harness import StackRun

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def alarms(run: StackRun) -> dict[str, dict]:
    return {a.inputs["name"]: a.inputs for a in run.of_type(ALARM)}


def test_alert_topic_is_encrypted_with_the_alerts_key_and_mails_the_stacks_addresses(stack):
    (topic,) = stack.of_type("aws:sns/topic:Topic")
    (key,) = [
        k for k in stack.of_type("aws:kms/key:Key") if k.inputs["tags"]["Purpose"] == "alerts"
    ]
    assert topic.inputs["kmsMasterKeyId"] == key.state["arn"]
    assert stack.outputs["alert_topic_arn"] == topic.state["arn"]
    subscriptions = stack.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert [(s.inputs["protocol"], s.inputs["endpoint"]) for s in subscriptions] == [
        ("email", email) for email in stack.config["cosmic-backup:alertEmails"]
    ]
    assert all(s.inputs["topic"] == topic.state["arn"] for s in subscriptions)


def test_every_alarm_notifies_the_topic_when_raised_and_cleared(stack):
    topic = stack.outputs["alert_topic_arn"]
    for name, alarm in alarms(stack).items():
        assert alarm["alarmActions"] == [topic], name
        assert alarm["okActions"] == [topic], name


@pytest.mark.parametrize(
    ("kind", "period", "periods"),
    [("wal", 300, 12), ("database", 3600, 26), ("files", 3600, 26), ("config", 3600, 26)],
)
def test_freshness_alarm_per_kind(prod, kind, period, periods):
    alarm = alarms(prod)[f"cosmic-backup-prod-{kind}-backup-stale"]
    assert alarm["namespace"] == "CosmicBackup"
    assert alarm["metricName"] == "LastSuccessTimestamp"
    assert alarm["dimensions"] == {"Kind": kind}
    assert alarm["statistic"] == "SampleCount"
    assert (alarm["period"], alarm["evaluationPeriods"], alarm["datapointsToAlarm"]) == (
        period,
        periods,
        periods,
    )
    # Stale means: not one successful run in the whole window (wal 1 h, daily kinds 26 h).
    assert period * periods == {"wal": 3600}.get(kind, 26 * 3600)
    assert alarm["comparisonOperator"] == "LessThanThreshold"
    assert alarm["threshold"] == 1
    assert alarm["treatMissingData"] == "breaching"
    assert kind in alarm["alarmDescription"]


def test_code_has_no_freshness_alarm(stack):
    """Code is backed up on release: no schedule to be late against."""
    assert not [a for a in alarms(stack).values() if a.get("dimensions") == {"Kind": "code"}]


def test_freshness_windows_stay_within_cloudwatch_limits(stack, program):
    window = program["monitoring"].freshness_window
    assert window(24) == (300, 288)
    assert window(25) == (3600, 25)
    for hours in range(1, 169):
        period, periods = window(hours)
        assert period * periods == hours * 3600
        assert period * periods <= (86400 if period < 3600 else 7 * 86400)
    for alarm in alarms(stack).values():
        if alarm.get("namespace") == "CosmicBackup":
            total = alarm["period"] * alarm["evaluationPeriods"]
            assert total <= (86400 if alarm["period"] < 3600 else 7 * 86400)


def test_replication_alarms_watch_the_replication_rule(stack):
    found = alarms(stack)
    failed = found[f"cosmic-backup-{stack.stack}-replication-failed"]
    latency = found[f"cosmic-backup-{stack.stack}-replication-latency"]
    dimensions = {
        "SourceBucket": stack.outputs["primary_bucket"],
        "DestinationBucket": stack.outputs["secondary_bucket"],
        "RuleId": "repository-to-secondary",
    }
    for alarm in (failed, latency):
        assert alarm["namespace"] == "AWS/S3"
        assert alarm["dimensions"] == dimensions
    assert (failed["metricName"], failed["statistic"], failed["threshold"]) == (
        "OperationsFailedReplication",
        "Sum",
        0,
    )
    assert failed["comparisonOperator"] == "GreaterThanThreshold"
    assert latency["metricName"] == "ReplicationLatency"
    assert latency["threshold"] == 30 * 60


def test_growth_alarm_sums_hot_and_cold_storage_day_over_day(prod):
    alarm = alarms(prod)["cosmic-backup-prod-primary-bucket-growth"]
    queries = {q["id"]: q for q in alarm["metricQueries"]}
    assert queries["growth"]["expression"] == "DIFF(FILL(standard, 0) + FILL(cold, 0))"
    assert queries["growth"]["returnData"] is True
    for query_id, storage_type in (
        ("standard", "StandardStorage"),
        ("cold", "GlacierInstantRetrievalStorage"),
    ):
        metric = queries[query_id]["metric"]
        assert metric["metricName"] == "BucketSizeBytes"
        assert metric["period"] == 86400
        assert metric["dimensions"] == {
            "BucketName": prod.outputs["primary_bucket"],
            "StorageType": storage_type,
        }
    assert alarm["threshold"] == 50 * 1024**3


def test_alerts_topic_accepts_only_this_accounts_alarms_and_the_backup_roles(stack):
    import json

    (policy,) = stack.of_type("aws:sns/topicPolicy:TopicPolicy")
    document = json.loads(policy.inputs["policy"])
    by_sid = {s["Sid"]: s for s in document["Statement"]}
    alarms_stmt = by_sid["CloudWatchAlarmsPublish"]
    assert alarms_stmt["Condition"]["ArnLike"]["aws:SourceArn"].endswith(":alarm:*")
    assert sorted(by_sid["BackupRolesPublish"]["Principal"]["AWS"]) == sorted(
        stack.role(d).state["arn"] for d in ("backup-writer", "restore", "maintenance")
    )
    assert by_sid["DenyInsecureTransport"]["Effect"] == "Deny"
