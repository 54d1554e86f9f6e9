# Monitoring options shared by the modules that run backups, verifications and prunes.

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  monitoring:
    description:
      - Where the run reports itself. Every option is optional; without any, nothing
        is written and no alert is sent.
      - Monitoring problems (an unwritable metrics directory, an unreachable webhook)
        are returned as warnings and never change the outcome of the run.
    type: dict
    suboptions:
      textfile_dir:
        description:
          - Directory of node_exporter's textfile collector. Each run atomically rewrites
            C(cosmic_backup_<operation>_<kind>.prom); C(backup_info) writes
            C(cosmic_backup_catalog.prom).
        type: path
      cloudwatch:
        description:
          - Publish C(CosmicBackup/LastSuccessTimestamp) (dimension C(Kind)) after each
            successful backup, the metric the Pulumi stack's freshness alarms watch.
        type: dict
        suboptions:
          region:
            description: CloudWatch region.
            type: str
          endpoint_url:
            description: CloudWatch endpoint, for a local test server.
            type: str
      webhook_url:
        description:
          - Alerts are POSTed here as JSON (with a C(text) field, so chat incoming
            webhooks show them). Server errors are retried twice; the query string is
            never logged.
        type: str
      sns_topic_arn:
        description: Alerts are published to this SNS topic.
        type: str
      sns_region:
        description: Region of the SNS topic (default the ARN's region).
        type: str
      sns_endpoint_url:
        description: SNS endpoint, for a local test server.
        type: str
      paths:
        description: Spool and staging directories whose free space is checked.
        type: list
        elements: path
        default: []
      min_free_percent:
        description: Warn when a checked file system has less free space than this.
        type: float
        default: 10
      min_free_bytes:
        description: Warn when a checked file system has fewer free bytes than this.
        type: int
        default: 0
"""
