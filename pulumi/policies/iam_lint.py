"""Lint policy documents with parliament (Duo Labs' IAM policy linter).

Parliament runs with its default and community auditors. Each statement is also
linted on its own so every finding names the statement (Sid) it came from;
findings that only appear for the whole document (combinations of statements,
such as privilege escalation) are kept too, without a Sid.

Trust policies have no Resource element (the resource is the role itself), which
parliament, written for identity policies, reports as malformed; they are linted
with the role's ARN as their Resource, which is what they govern.

`ACCEPTED` lists the findings that are parliament's limits rather than faults
of the document. Each names the issue, the statement and a reason; anything else
at MEDIUM or above is a violation.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import parliament

SEVERITY_ORDER = ("INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL")


@dataclass(frozen=True)
class Finding:
    issue: str
    severity: str
    sid: str | None
    detail: str
    in_trust_policy: bool = False

    def above(self, severity: str) -> bool:
        return SEVERITY_ORDER.index(self.severity) > SEVERITY_ORDER.index(severity)

    def __str__(self) -> str:
        where = f" in {self.sid}" if self.sid else ""
        return f"{self.severity} {self.issue}{where}: {self.detail}"


@dataclass(frozen=True)
class Accepted:
    """A finding explained away: issue, where (statement Sid or trust policies), why."""

    issue: str
    reason: str
    sid: str | None = None
    detail_contains: str = ""
    trust_policies_only: bool = False

    def covers(self, finding: Finding) -> bool:
        return (
            finding.issue == self.issue
            and (self.sid is None or finding.sid == self.sid)
            and self.detail_contains.lower() in finding.detail.lower()
            and (finding.in_trust_policy or not self.trust_policies_only)
        )


ACCEPTED = (
    Accepted(
        "MISMATCHED_TYPE",
        "parliament's Number type matches whole numbers only; AWS documents s3:TlsVersion as 1.2",
        sid="DenyTlsOlderThan12",
        detail_contains="s3:TlsVersion",
    ),
    Accepted(
        "UNKNOWN_CONDITION_FOR_ACTION",
        "the deny covers s3:*; a request without a TLS version does not match it, and the "
        "aws:SecureTransport deny already refuses plain HTTP",
        sid="DenyTlsOlderThan12",
        detail_contains="s3:TlsVersion",
    ),
    Accepted(
        "PERMISSIONS_MANAGEMENT_ACTIONS",
        "key administrators exist to manage the key policy; the statement grants them no "
        "cryptographic use of the key",
        sid="KeyAdministration",
    ),
    Accepted(
        "CREDENTIALS_EXPOSURE",
        "a trust policy exists to let its principals call sts:AssumeRole on this one role; "
        "who may is what the other rules check (MFA for people)",
        detail_contains="sts:assumerole",
        trust_policies_only=True,
    ),
)


@cache
def _load_community_config() -> None:
    community = Path(parliament.__file__).parent / "community_auditors" / "config_override.yaml"
    parliament.override_config(str(community))


@cache
def _analyze(document_json: str) -> tuple[tuple[str, str, str], ...]:
    _load_community_config()
    policy = parliament.analyze_policy_string(document_json, include_community_auditors=True)
    results = []
    for finding in policy.findings:
        finding = parliament.enhance_finding(finding)
        detail = finding.detail if finding.detail else json.dumps(finding.location, default=str)
        results.append((finding.issue, finding.severity, str(detail)))
    return tuple(results)


def lint_document(document: dict[str, Any], trust_for: str | None = None) -> list[Finding]:
    """Every parliament finding of one document; trust_for: the role ARN of a trust policy."""
    document = copy.deepcopy(document)
    statements = document.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    if trust_for is not None:
        for stmt in statements:
            stmt.setdefault("Resource", trust_for)
    document["Statement"] = statements

    trust = trust_for is not None
    findings: list[Finding] = []
    per_statement_issues: set[str] = set()
    for stmt in statements:
        single = {"Version": document.get("Version", "2012-10-17"), "Statement": [stmt]}
        for issue, severity, detail in _analyze(json.dumps(single, sort_keys=True)):
            findings.append(Finding(issue, severity, stmt.get("Sid"), detail, trust))
            per_statement_issues.add(issue)
    # What only the whole document shows: combinations across statements.
    for issue, severity, detail in _analyze(json.dumps(document, sort_keys=True)):
        if issue not in per_statement_issues:
            findings.append(Finding(issue, severity, None, detail, trust))
    return findings


def accepted_reason(finding: Finding) -> str | None:
    for accepted in ACCEPTED:
        if accepted.covers(finding):
            return accepted.reason
    return None


def blocking_findings(
    document: dict[str, Any], trust_for: str | None = None, above: str = "LOW"
) -> list[Finding]:
    """Findings above `above` that no ACCEPTED entry explains."""
    return [
        finding
        for finding in lint_document(document, trust_for)
        if finding.above(above) and accepted_reason(finding) is None
    ]
