"""Every policy document the program emits, linted with parliament: nothing above LOW."""

from __future__ import annotations

import pytest

from tests.pulumi.harness import StackRun


def documents(run: StackRun):
    for resource in run.resources:
        document = resource.document()
        if document is not None:
            trust_for = resource.state["arn"] if resource.type == "aws:iam/role:Role" else None
            yield resource, document, trust_for


def test_every_kind_of_document_is_linted(stack):
    linted = {resource.type for resource, _, _ in documents(stack)}
    assert linted == {
        "aws:iam/role:Role",  # trust policies
        "aws:iam/rolePolicy:RolePolicy",
        "aws:s3/bucketPolicy:BucketPolicy",
        "aws:kms/key:Key",
        "aws:kms/replicaKey:ReplicaKey",
        "aws:sns/topicPolicy:TopicPolicy",
    }
    assert len(list(documents(stack))) == 5 + 5 + 3 + 5 + 1 + 1


def test_no_finding_above_low(stack, program):
    lint = program["policies"]
    problems = [
        f"{resource.type} {resource.name}: {finding}"
        for resource, document, trust_for in documents(stack)
        for finding in lint.blocking_findings(document, trust_for)
    ]
    assert problems == []


def test_every_accepted_finding_is_still_needed(prod, dev, program):
    """Each entry of the allowlist explains a finding that really occurs; none is stale."""
    lint = program["policies"]
    used = set()
    for run in (prod, dev):
        for _, document, trust_for in documents(run):
            for finding in lint.lint_document(document, trust_for):
                for accepted in lint.ACCEPTED:
                    if accepted.covers(finding):
                        used.add(accepted)
    assert used == set(lint.ACCEPTED)


WEAK = [
    # Deny with Bool MultiFactorAuthPresent=false does not enforce MFA (key may be absent).
    {
        "Sid": "WeakMfa",
        "Effect": "Deny",
        "Action": ["s3:DeleteObjectVersion"],
        "Resource": ["arn:aws:s3:::b/*"],
        "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "false"}},
    },
    # An object action on a bucket ARN matches nothing.
    {
        "Sid": "Mismatch",
        "Effect": "Allow",
        "Action": ["s3:GetObject"],
        "Resource": ["arn:aws:s3:::b"],
    },
    # The TLS exception is for its own statement only, not for a look-alike.
    {
        "Sid": "OtherTls",
        "Effect": "Deny",
        "Principal": "*",
        "Action": ["s3:*"],
        "Resource": ["arn:aws:s3:::b"],
        "Condition": {"NumericLessThan": {"s3:TlsVersion": "1.2"}},
    },
    # Privilege escalation (community auditor).
    {
        "Sid": "Escalate",
        "Effect": "Allow",
        "Action": ["iam:CreatePolicyVersion"],
        "Resource": ["arn:aws:iam::123456789012:policy/x"],
    },
]


@pytest.mark.parametrize("weak", WEAK, ids=[s["Sid"] for s in WEAK])
def test_the_lint_fails_on_a_weak_document(program, weak):
    findings = program["policies"].blocking_findings({"Version": "2012-10-17", "Statement": [weak]})
    assert findings, "parliament found nothing"
    assert all(f.sid == weak["Sid"] for f in findings if f.sid)
