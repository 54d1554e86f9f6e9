"""Alerts: a failed or stale backup reaches a person through a webhook (JSON
POST) and/or an SNS topic. Every message says what failed, where, and what to
run next. Delivery problems are returned, never raised: an alert that cannot be
sent must not hide the failure it was about.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

WEBHOOK_ATTEMPTS = 3
WEBHOOK_TIMEOUT = 10

# What the operator runs next, per kind (the guide's commands).
NEXT_STEP = {
    "database": "check the backup host's timer and logs, then run ./scripts/backup.sh database",
    "wal": "check archive_command on the database host (pg_stat_archiver) and the host CLI's "
           "log",
    "files": "check the backup host's timer and logs, then run ./scripts/backup.sh files",
    "config": "run ./scripts/backup.sh config, then check the config path units",
    "code": "run ./scripts/backup.sh code after the release",
}


@dataclass
class Alert:
    what: str  # "database backup is stale", "verification of ... failed"
    where: str  # host, repository, backup id
    next_step: str
    severity: str = "critical"  # or "warning"
    kind: str | None = None
    operation: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    host: str = field(default_factory=socket.gethostname)
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(
        timespec="seconds"))

    @property
    def subject(self) -> str:
        return f"[cosmic-backup {self.severity}] {self.what}"[:100]  # SNS subject limit

    def text(self) -> str:
        return (f"{self.what}\nWhere: {self.where} (reported by {self.host} at {self.time})\n"
                f"Next: {self.next_step}")

    def payload(self) -> dict[str, Any]:
        # "text" makes the same POST readable by Slack/Mattermost-style incoming webhooks.
        return {"source": "cosmic-backup", "summary": self.subject, "text": self.text(),
                **asdict(self)}


@dataclass
class Delivery:
    channel: str
    ok: bool
    detail: str = ""


def stale_alert(kind: str, age_seconds: float | None, max_age: str, where: str,
                newest_id: str | None) -> Alert:
    if newest_id is None:
        what = f"there is no {kind} backup at all (limit {max_age})"
    else:
        what = (f"{kind} backup is stale: the newest ({newest_id}) is "
                f"{age_seconds / 3600:.1f} h old, the limit is {max_age}")
    return Alert(what, where, NEXT_STEP.get(kind, "check the backup host's timer and logs"),
                 kind=kind, operation="freshness",
                 details={"newest_backup": newest_id, "age_seconds": age_seconds,
                          "max_age": max_age})


def failure_alert(operation: str, kind: str | None, error: str, where: str,
                  next_step: str | None = None) -> Alert:
    what = f"{operation} of {kind or 'backups'} failed: {error}"
    step = next_step or {
        "verify": "run ./scripts/verify-backup.sh with the backup id to see the failing check; "
                  "restore reads the other repository's copy if one is damaged",
        "prune": "read the refusal: an Object Lock retention ends on its own; otherwise check "
                 "the maintenance role's permissions, then run backup_prune again",
    }.get(operation, NEXT_STEP.get(kind or "", "check the backup host's logs"))
    return Alert(what, where, step, kind=kind, operation=operation, details={"error": error})


def send_webhook(alert: Alert, url: str, *, attempts: int = WEBHOOK_ATTEMPTS,
                 timeout: float = WEBHOOK_TIMEOUT) -> Delivery:
    import urllib.error  # here, not at the top: only alerts need HTTP (0.03 s of each start)
    import urllib.request

    body = json.dumps(alert.payload(), sort_keys=True).encode()
    shown = url.split("?", 1)[0]  # webhook URLs may carry a token in the query
    last = ""
    for attempt in range(attempts):
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "cosmic-backup"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Delivery("webhook", True, f"{shown}: HTTP {response.status}")
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}"
            if error.code < 500:
                break  # the receiver rejects the message: retrying will not help
        except (urllib.error.URLError, OSError) as error:
            last = str(getattr(error, "reason", error))
        if attempt + 1 < attempts:
            time.sleep(0.5 * 2 ** attempt)
    return Delivery("webhook", False, f"{shown}: {last}")


def send_sns(alert: Alert, topic_arn: str, *, region: str | None = None,
             endpoint_url: str | None = None) -> Delivery:
    try:
        import boto3  # here, not at the top: it costs 0.3 s of every start
    except ImportError:
        return Delivery("sns", False, "boto3 is not installed: pip install boto3")
    region = region or (topic_arn.split(":")[3] if topic_arn.count(":") >= 5 else None)
    try:
        client = boto3.session.Session(region_name=region).client("sns",
                                                                  endpoint_url=endpoint_url)
        response = client.publish(
            TopicArn=topic_arn, Subject=alert.subject, Message=alert.text(),
            MessageAttributes={
                "severity": {"DataType": "String", "StringValue": alert.severity},
                "kind": {"DataType": "String", "StringValue": alert.kind or "none"},
            })
        return Delivery("sns", True, f"{topic_arn}: message {response.get('MessageId')}")
    except Exception as error:  # noqa: BLE001 - reported, the run goes on
        return Delivery("sns", False, f"{topic_arn}: {error}")


def deliver(alert: Alert, *, webhook_url: str | None = None, sns_topic_arn: str | None = None,
            sns_region: str | None = None, sns_endpoint_url: str | None = None) -> list[Delivery]:
    """Send ``alert`` to every configured channel; the deliveries say what worked."""
    deliveries = []
    if webhook_url:
        deliveries.append(send_webhook(alert, webhook_url))
    if sns_topic_arn:
        deliveries.append(send_sns(alert, sns_topic_arn, region=sns_region,
                                   endpoint_url=sns_endpoint_url))
    return deliveries
