"""A policy suite in the spirit of Pulumi CrossGuard, as plain Python.

It walks every resource of a stack (as recorded by a preview or by Pulumi's
mocks) and reports violations, so a bucket, key or role added later cannot skip
encryption, locking, TLS, least privilege or alarms. Usage:

    from policies import PolicyConfig, Resource, check
    violations = check(resources, PolicyConfig(required_lock_mode="COMPLIANCE"))
"""

from .iam_lint import ACCEPTED, Finding, blocking_findings, lint_document
from .model import Resource, StackView
from .rules import POLICIES, Policy, PolicyConfig, Violation, check

__all__ = [
    "ACCEPTED",
    "POLICIES",
    "Finding",
    "Policy",
    "PolicyConfig",
    "Resource",
    "StackView",
    "Violation",
    "blocking_findings",
    "check",
    "lint_document",
]
