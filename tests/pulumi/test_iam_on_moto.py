"""The program's IAM documents, exercised for real on moto's server (127.0.0.1 only).

What enforces what, honestly:

- IAM (moto, once its request authentication is switched on): trust policies'
  principals (who may assume which role) and identity policies' actions and
  resources, explicit Deny first. moto does NOT evaluate condition operators such
  as Bool or NumericLessThanEquals, so the MFA requirement of the people's roles
  is not tested here; tests/pulumi/test_access.py asserts it on the documents.
  moto also authorizes KMS calls against resource "*", so key policies are not
  exercised here either (test_keys.py covers them).
- S3 Object Lock (moto): a locked version cannot be deleted before its retention
  ends, whoever asks; in COMPLIANCE mode not even with BypassGovernanceRetention.
- The bucket policy is not installed: its deny of plain HTTP would (rightly)
  refuse moto's http:// endpoint.

The test proves each layer on its own: the writer is refused deleting a version
that is *not* locked (so IAM refused it), the maintenance role is allowed that
same delete (so the refusal was the writer's policy, not the server), and then
the maintenance role is refused deleting a *locked* version it is allowed to
delete by IAM (so the lock refused it).
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from contextlib import contextmanager

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.pulumi.harness import ACCOUNT_ID, StackRun, run_stack, stack_config

HOST_USER = "backup-host"
OPERATOR_USER = "sre-operator"
INTRUDER_USER = "someone-else"
BACKUP_ID = "20250406T020000Z-database-k3x9"


@pytest.fixture(scope="module")
def stack_for_moto() -> StackRun:
    """Prod, with trust given to IAM users that the test can create on moto."""
    config = {
        **stack_config("prod"),
        "cosmic-backup:backupHostPrincipals": [f"arn:aws:iam::{ACCOUNT_ID}:user/{HOST_USER}"],
        "cosmic-backup:operatorPrincipals": [f"arn:aws:iam::{ACCOUNT_ID}:user/{OPERATOR_USER}"],
    }
    return run_stack("prod", config)


def client(service: str, endpoint: str, region: str, credentials: dict | None = None):
    credentials = credentials or {
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        config=Config(retries={"max_attempts": 1}),
        **credentials,
    )


@contextmanager
def iam_enforced(endpoint: str):
    """Switch on moto's request authentication, and always switch it off again."""

    def post(body: str) -> dict:
        # A form content type would make the server parse (and lose) the body.
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=body.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    previous = post("0")["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]
    try:
        yield
    finally:
        post(previous)


def access_denied(call) -> ClientError:
    with pytest.raises(ClientError) as raised:
        call()
    assert raised.value.response["Error"]["Code"] in ("AccessDenied", "AccessDeniedException")
    return raised.value


def create_user(iam, name: str, assumable_role_arns: list[str]) -> dict:
    iam.create_user(UserName=name)
    if assumable_role_arns:
        iam.put_user_policy(
            UserName=name,
            PolicyName="assume-duty-roles",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "sts:AssumeRole",
                            "Resource": assumable_role_arns,
                        }
                    ],
                }
            ),
        )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {
        "aws_access_key_id": key["AccessKeyId"],
        "aws_secret_access_key": key["SecretAccessKey"],
    }


def assume(endpoint: str, region: str, user: dict, role_arn: str) -> dict:
    sts = client("sts", endpoint, region, user)
    found = sts.assume_role(RoleArn=role_arn, RoleSessionName=f"test-{uuid.uuid4().hex[:8]}")
    creds = found["Credentials"]
    return {
        "aws_access_key_id": creds["AccessKeyId"],
        "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["SessionToken"],
    }


def test_writer_credentials_cannot_delete_a_locked_backup(moto_server, stack_for_moto):
    run = stack_for_moto
    endpoint = moto_server.endpoint_url
    region = run.outputs["primary_region"]
    bucket = run.outputs["primary_bucket"]
    iam = client("iam", endpoint, region)
    s3_admin = client("s3", endpoint, region)

    # The roles, exactly as the program declares them: trust and inline policy.
    roles = {}
    for duty in ("backup-writer", "maintenance"):
        role = run.role(duty)
        created = iam.create_role(
            RoleName=role.inputs["name"],
            AssumeRolePolicyDocument=role.inputs["assumeRolePolicy"],
            MaxSessionDuration=int(role.inputs["maxSessionDuration"]),
        )
        iam.put_role_policy(
            RoleName=role.inputs["name"],
            PolicyName=f"{role.inputs['name']}-permissions",
            PolicyDocument=json.dumps(run.role_policy(duty)),
        )
        assert created["Role"]["Arn"] == role.state["arn"]
        roles[duty] = role.state["arn"]
    host = create_user(iam, HOST_USER, [roles["backup-writer"]])
    operator = create_user(iam, OPERATOR_USER, [roles["maintenance"]])
    intruder = create_user(iam, INTRUDER_USER, [roles["backup-writer"]])

    # The primary bucket as the program declares it: Object Lock on, no default
    # retention yet (it is applied below, so the first upload is unlocked).
    s3_admin.create_bucket(
        Bucket=bucket,
        CreateBucketConfiguration={"LocationConstraint": region},
        ObjectLockEnabledForBucket=True,
    )
    data_key = f"cosmic/backups/database/{BACKUP_ID}/data.0001"
    manifest_key = f"cosmic/backups/database/{BACKUP_ID}/manifest.json"

    with iam_enforced(endpoint):
        # Trust: the backup host may assume the writer; another user may not,
        # even with an identity policy that says it may.
        writer = client(
            "s3", endpoint, region, assume(endpoint, region, host, roles["backup-writer"])
        )
        access_denied(lambda: assume(endpoint, region, intruder, roles["backup-writer"]))
        # (moto ignores the MFA condition: the operator gets in without one here.)
        maintenance = client(
            "s3", endpoint, region, assume(endpoint, region, operator, roles["maintenance"])
        )

        # IAM alone: an unlocked version the writer wrote and may not delete.
        unlocked = writer.put_object(Bucket=bucket, Key=data_key, Body=b"first dump")["VersionId"]
        access_denied(lambda: writer.delete_object(Bucket=bucket, Key=data_key, VersionId=unlocked))
        access_denied(lambda: writer.delete_object(Bucket=bucket, Key=data_key))
        # Positive control: the pruning role is allowed that very delete.
        maintenance.delete_object(Bucket=bucket, Key=data_key, VersionId=unlocked)

        # Least privilege on the writer's other calls.
        writer.put_object(Bucket=bucket, Key=manifest_key, Body=b'{"kind": "database"}')
        assert (
            writer.get_object(Bucket=bucket, Key=manifest_key)["Body"].read()
            == b'{"kind": "database"}'
        )
        access_denied(
            lambda: writer.get_object(Bucket=bucket, Key=manifest_key.replace("manifest.json", "x"))
        )
        access_denied(lambda: writer.put_object(Bucket=bucket, Key="elsewhere/x", Body=b"x"))
        access_denied(
            lambda: writer.put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration={"Status": "Suspended"}
            )
        )
        access_denied(lambda: writer.put_bucket_policy(Bucket=bucket, Policy="{}"))
        access_denied(lambda: writer.delete_bucket_lifecycle(Bucket=bucket))
        listed = writer.list_objects_v2(Bucket=bucket, Prefix="cosmic/")
        assert [o["Key"] for o in listed["Contents"]] == [manifest_key]

    # Apply the program's default retention (COMPLIANCE, 30 days in prod). moto
    # accepts it only on an empty bucket, so clear out the unlocked first phase.
    versions = s3_admin.list_object_versions(Bucket=bucket)
    for version in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
        s3_admin.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
    (lock,) = [
        r
        for r in run.of_type("aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration")
        if r.inputs["bucket"] == bucket
    ]
    retention = lock.inputs["rule"]["defaultRetention"]
    assert retention == {"mode": "COMPLIANCE", "days": 30}
    days = int(retention["days"])
    s3_admin.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": retention["mode"], "Days": days}},
        },
    )

    with iam_enforced(endpoint):
        locked = writer.put_object(Bucket=bucket, Key=data_key, Body=b"second dump")["VersionId"]
        # The writer: refused by its policy (and the lock would refuse it too).
        access_denied(lambda: writer.delete_object(Bucket=bucket, Key=data_key, VersionId=locked))
        # The lock alone: the pruning role is allowed this delete by IAM, and refused.
        access_denied(
            lambda: maintenance.delete_object(Bucket=bucket, Key=data_key, VersionId=locked)
        )
        # Hiding it behind a delete marker is allowed (the version stays, locked).
        maintenance.delete_object(Bucket=bucket, Key=data_key)

    # Without IAM in the way, even the account's own keys with a governance bypass
    # cannot remove a COMPLIANCE-locked version.
    access_denied(
        lambda: s3_admin.delete_object(
            Bucket=bucket, Key=data_key, VersionId=locked, BypassGovernanceRetention=True
        )
    )
    kept = s3_admin.get_object(Bucket=bucket, Key=data_key, VersionId=locked)
    assert kept["Body"].read() == b"second dump"
    assert kept["ObjectLockMode"] == "COMPLIANCE"
