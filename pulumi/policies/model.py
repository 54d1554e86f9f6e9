"""What the policy suite sees: resources with their properties, as CrossGuard does.

`Resource.props` uses the engine's (camelCase) property names, inputs and the
outputs the provider computed (ARNs, names), like CrossGuard's
`ResourceValidationArgs.props`. `StackView` adds the lookups that stack-level
rules need: a bucket's companion resources, a role's inline policies, ARNs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

# Resource type -> property holding a JSON policy document.
POLICY_PROPERTIES = {
    "aws:iam/role:Role": "assumeRolePolicy",
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/policy:Policy": "policy",
    "aws:iam/userPolicy:UserPolicy": "policy",
    "aws:iam/groupPolicy:GroupPolicy": "policy",
    "aws:s3/bucketPolicy:BucketPolicy": "policy",
    "aws:kms/key:Key": "policy",
    "aws:kms/replicaKey:ReplicaKey": "policy",
    "aws:sns/topicPolicy:TopicPolicy": "policy",
}
IDENTITY_POLICY_TYPES = {
    "aws:iam/rolePolicy:RolePolicy",
    "aws:iam/policy:Policy",
    "aws:iam/userPolicy:UserPolicy",
    "aws:iam/groupPolicy:GroupPolicy",
}

BUCKET = "aws:s3/bucket:Bucket"
ROLE = "aws:iam/role:Role"
KEY = "aws:kms/key:Key"
REPLICA_KEY = "aws:kms/replicaKey:ReplicaKey"


@dataclass(frozen=True)
class Resource:
    """One resource of the stack: type, logical name, properties, provider."""

    type: str
    name: str
    props: dict[str, Any]
    urn: str = ""
    id: str = ""
    provider: str | None = None
    custom: bool = True

    @property
    def label(self) -> str:
        return f"{self.type} {self.name!r}"

    @property
    def tags(self) -> dict[str, str]:
        return self.props.get("tags") or {}

    def policy_document(self) -> dict[str, Any] | None:
        """The JSON policy document this resource carries, parsed (None if none)."""
        prop = POLICY_PROPERTIES.get(self.type)
        if prop is None:
            return None
        value = self.props.get(prop)
        if not value:
            return None
        return json.loads(value) if isinstance(value, str) else value


@dataclass
class StackView:
    """All resources of a stack, with the lookups stack-level rules need."""

    resources: list[Resource]
    _by_type: dict[str, list[Resource]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for resource in self.resources:
            self._by_type.setdefault(resource.type, []).append(resource)

    def of_type(self, typ: str) -> list[Resource]:
        return list(self._by_type.get(typ, []))

    def companions(self, typ: str, bucket: Resource) -> list[Resource]:
        """Resources of `typ` that configure this bucket (their `bucket` is its name)."""
        return [
            r
            for r in self.of_type(typ)
            if r.props.get("bucket") in {bucket.id, bucket.props.get("bucket")}
        ]

    def bucket_arn(self, bucket: Resource) -> str:
        return bucket.props.get("arn") or f"arn:aws:s3:::{bucket.props.get('bucket') or bucket.id}"

    def default_kms_key(self, bucket: Resource) -> str | None:
        """The KMS key a bucket encrypts new objects with by default."""
        sse_type = (
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
        )
        configs = self.companions(sse_type, bucket)
        if len(configs) != 1:
            return None
        rules = configs[0].props.get("rules") or [{}]
        return (rules[0].get("applyServerSideEncryptionByDefault") or {}).get("kmsMasterKeyId")

    def bucket_by_ref(self, ref: str) -> Resource | None:
        """A bucket by name or ARN."""
        for bucket in self.of_type(BUCKET):
            if ref in {bucket.id, bucket.props.get("bucket"), self.bucket_arn(bucket)}:
                return bucket
        return None

    def role_by_ref(self, ref: str) -> Resource | None:
        for role in self.of_type(ROLE):
            if ref in {role.id, role.props.get("name"), role.props.get("arn")}:
                return role
        return None

    def key_by_arn(self, arn: str) -> Resource | None:
        for key in [*self.of_type(KEY), *self.of_type(REPLICA_KEY)]:
            if arn in {key.props.get("arn"), key.id, key.props.get("keyId")}:
                return key
        return None

    def inline_policies(self, role: Resource) -> list[Resource]:
        refs = {role.id, role.props.get("name")}
        return [
            p for p in self.of_type("aws:iam/rolePolicy:RolePolicy") if p.props.get("role") in refs
        ]

    def identity_documents(self, role: Resource) -> Iterator[dict[str, Any]]:
        for policy in self.inline_policies(role):
            document = policy.policy_document()
            if document:
                yield document
        for inline in role.props.get("inlinePolicies") or []:
            if inline.get("policy"):
                yield json.loads(inline["policy"])


def statements(document: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not document:
        return []
    found = document.get("Statement", [])
    return [found] if isinstance(found, dict) else list(found)


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def principals(stmt: dict[str, Any], kind: str = "AWS") -> list[str]:
    principal = stmt.get("Principal")
    if principal == "*":
        return ["*"]
    if isinstance(principal, dict):
        return [str(p) for p in as_list(principal.get(kind))]
    return []


def allowed_actions(documents: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(action, statement) for every action an Allow statement grants."""
    return [
        (action, stmt)
        for document in documents
        for stmt in statements(document)
        if stmt.get("Effect") == "Allow"
        for action in as_list(stmt.get("Action"))
    ]
