"""Alerts: an encrypted SNS topic and the alarms that page through it.

- Freshness, one alarm per scheduled kind: backup runs publish
  CosmicBackup/LastSuccessTimestamp (dimension Kind) on every success. The alarm
  counts those datapoints and treats a window without any as breaching, so it
  fires when no run has succeeded for the kind's threshold (WAL 1 h for the
  database RPO; daily kinds 26 h), including when hosts stop reporting at all.
- Replication: any failed operation, and latency beyond the configured minutes
  (the secondary copy's own RPO).
- Storage growth: the primary bucket growing by more than N GiB in a day (S3
  storage metrics are daily). The secondary mirrors it through replication, whose
  health the replication alarms watch.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from access import DutyRoles
from keys import customer_key
from policy_documents import FRESHNESS_METRIC, METRIC_NAMESPACE, alerts_key_policy, topic_policy
from stack_context import StackContext, render
from vaults import REPLICATION_RULE_ID, BackupVaults

GIB = 1024**3

# What the operator runs next, per kind (the guide's commands).
NEXT_STEP = {
    "database": "check the backup host's timer and logs, then run ./scripts/backup.sh database",
    "wal": "check archive_command on the database host (pg_stat_archiver) and the host CLI's log",
    "files": "check the backup host's timer and logs, then run ./scripts/backup.sh files",
    "config": "check the backup host's timer and logs, then run ./scripts/backup.sh config",
    "code": "run ./scripts/backup.sh code after the release",
}

# BucketSizeBytes storage types of the classes backups may move to.
STORAGE_TYPES = {
    "STANDARD_IA": "StandardIAStorage",
    "GLACIER_IR": "GlacierInstantRetrievalStorage",
    "INTELLIGENT_TIERING": "IntelligentTieringFAStorage",
}


def freshness_window(hours: int) -> tuple[int, int]:
    """(period seconds, periods): 5-minute periods up to a day, hourly beyond.

    CloudWatch allows at most one day of sub-hourly periods and seven days of
    hourly ones; finer periods raise the alarm sooner after the threshold passes.
    """
    if hours <= 24:
        return 300, hours * 12
    return 3600, hours


class Monitoring(pulumi.ComponentResource):
    """The alert topic, its subscribers, and every alarm of the stack."""

    topic: aws.sns.Topic
    alarms: dict[str, aws.cloudwatch.MetricAlarm]

    def __init__(
        self,
        name: str,
        ctx: StackContext,
        roles: DutyRoles,
        vaults: BackupVaults,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("cosmic-backup:monitoring:Monitoring", name, None, opts)
        settings = ctx.settings
        region = settings.primary_region
        publishers = pulumi.Output.all(roles.writer.arn, roles.restore.arn, roles.maintenance.arn)

        # CloudWatch cannot publish to a topic encrypted with the AWS-managed SNS key.
        self.key = customer_key(
            f"{name}-key",
            ctx,
            self,
            region="primary",
            purpose="alerts",
            description=f"{settings.name}: encrypts backup alerts",
            policy=render(
                lambda admins, publishers: alerts_key_policy(admins, region, publishers),
                admins=ctx.key_administrators(),
                publishers=publishers,
            ),
        )
        self.topic = aws.sns.Topic(
            f"{name}-alerts",
            name=f"{settings.name}-alerts",
            kms_master_key_id=self.key.arn,
            tags={"Purpose": "alerts"},
            opts=ctx.child(self),
        )
        aws.sns.TopicPolicy(
            f"{name}-alerts-policy",
            arn=self.topic.arn,
            policy=render(
                lambda topic, account, publishers: topic_policy(topic, account, region, publishers),
                topic=self.topic.arn,
                account=ctx.account_id,
                publishers=publishers,
            ),
            opts=ctx.child(self),
        )
        for index, email in enumerate(settings.alert_emails):
            aws.sns.TopicSubscription(
                f"{name}-alerts-email-{index}",
                topic=self.topic.arn,
                protocol="email",
                endpoint=email,
                opts=ctx.child(self),
            )

        self.alarms = {}
        for kind, hours in sorted(settings.freshness_hours.items()):
            period, periods = freshness_window(hours)
            self.alarms[f"{kind}-stale"] = self._alarm(
                ctx,
                f"{name}-{kind}-stale",
                name=f"{settings.name}-{kind}-backup-stale",
                alarm_description=(
                    f"No successful {kind} backup for {hours} h "
                    f"({METRIC_NAMESPACE}/{FRESHNESS_METRIC}, Kind={kind}): {NEXT_STEP[kind]}."
                ),
                namespace=METRIC_NAMESPACE,
                metric_name=FRESHNESS_METRIC,
                dimensions={"Kind": kind},
                statistic="SampleCount",
                period=period,
                evaluation_periods=periods,
                datapoints_to_alarm=periods,
                comparison_operator="LessThanThreshold",
                threshold=1,
                # No datapoint at all is the failure this alarm exists for.
                treat_missing_data="breaching",
            )

        replication_dimensions = {
            "SourceBucket": vaults.primary.bucket.id,
            "DestinationBucket": vaults.secondary.bucket.id,
            "RuleId": REPLICATION_RULE_ID,
        }
        self.alarms["replication-failed"] = self._alarm(
            ctx,
            f"{name}-replication-failed",
            name=f"{settings.name}-replication-failed",
            alarm_description=(
                "Objects failed to replicate to the secondary (offsite) bucket: check the "
                "replication "
                "role's permissions and both storage keys, then list the primary's failed objects."
            ),
            namespace="AWS/S3",
            metric_name="OperationsFailedReplication",
            dimensions=replication_dimensions,
            statistic="Sum",
            period=300,
            evaluation_periods=1,
            comparison_operator="GreaterThanThreshold",
            threshold=0,
            treat_missing_data="notBreaching",
        )
        self.alarms["replication-latency"] = self._alarm(
            ctx,
            f"{name}-replication-latency",
            name=f"{settings.name}-replication-latency",
            alarm_description=(
                "Replication to the secondary bucket is more than "
                f"{settings.replication_latency_alarm_minutes} "
                "minutes behind: the offsite copy misses its RPO."
            ),
            namespace="AWS/S3",
            metric_name="ReplicationLatency",
            dimensions=replication_dimensions,
            statistic="Maximum",
            period=300,
            evaluation_periods=3,
            datapoints_to_alarm=3,
            comparison_operator="GreaterThanThreshold",
            threshold=settings.replication_latency_alarm_minutes * 60,
            treat_missing_data="notBreaching",
        )

        cold_type = STORAGE_TYPES[settings.cold_storage_class]
        self.alarms["growth"] = self._alarm(
            ctx,
            f"{name}-primary-growth",
            name=f"{settings.name}-primary-bucket-growth",
            alarm_description=(
                "The primary backup bucket grew by more than "
                f"{settings.bucket_growth_alarm_gib} GiB in a day: "
                "check for runaway backups, failed pruning, or unexpected data."
            ),
            metric_queries=[
                _size_query("standard", vaults.primary.bucket.id, "StandardStorage"),
                _size_query("cold", vaults.primary.bucket.id, cold_type),
                {
                    "id": "growth",
                    "label": "Bytes added in a day",
                    "expression": "DIFF(FILL(standard, 0) + FILL(cold, 0))",
                    "return_data": True,
                },
            ],
            # DIFF needs the day before to compare with.
            evaluation_periods=2,
            datapoints_to_alarm=1,
            comparison_operator="GreaterThanThreshold",
            threshold=settings.bucket_growth_alarm_gib * GIB,
            treat_missing_data="notBreaching",
        )
        self.register_outputs({"alert_topic_arn": self.topic.arn})

    def _alarm(self, ctx: StackContext, resource_name: str, **args) -> aws.cloudwatch.MetricAlarm:
        return aws.cloudwatch.MetricAlarm(
            resource_name,
            alarm_actions=[self.topic.arn],
            ok_actions=[self.topic.arn],
            opts=ctx.child(self),
            **args,
        )


def _size_query(query_id: str, bucket: pulumi.Input[str], storage_type: str) -> dict:
    return {
        "id": query_id,
        "return_data": False,
        "metric": {
            "namespace": "AWS/S3",
            "metric_name": "BucketSizeBytes",
            "dimensions": {"BucketName": bucket, "StorageType": storage_type},
            "stat": "Average",
            "period": 86400,
        },
    }
