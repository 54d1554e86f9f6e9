"""A small IAM evaluator for asserting what a policy document allows.

It matches Action and Resource (with * and ? wildcards) and, when asked, the
Principal; an explicit Deny wins over any Allow. Conditions are not evaluated:
the matching statements are returned so a test can assert on their conditions.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _match(pattern: str, value: str, *, case_sensitive: bool) -> bool:
    if case_sensitive:
        return fnmatch.fnmatchcase(value, pattern)
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def statement_principals(stmt: dict[str, Any]) -> list[str]:
    principal = stmt.get("Principal")
    if principal == "*":
        return ["*"]
    if isinstance(principal, dict):
        return [p for values in principal.values() for p in _list(values)]
    return []


@dataclass
class Decision:
    effect: str  # "Allow", "Deny" (explicit) or "Implicit"
    statements: list[dict[str, Any]]

    @property
    def allowed(self) -> bool:
        return self.effect == "Allow"

    @property
    def explicitly_denied(self) -> bool:
        return self.effect == "Deny"

    @property
    def sids(self) -> list[str]:
        return [s.get("Sid", "") for s in self.statements]

    def conditions(self) -> list[dict[str, Any]]:
        return [s.get("Condition", {}) for s in self.statements]


def evaluate(
    documents: dict[str, Any] | Iterable[dict[str, Any]],
    action: str,
    resource: str = "*",
    principal: str | None = None,
) -> Decision:
    """What these documents decide for one request (conditions not evaluated)."""
    if isinstance(documents, dict):
        documents = [documents]
    allows, denies = [], []
    for document in documents:
        for stmt in _list(document.get("Statement")):
            if principal is not None:
                named = statement_principals(stmt)
                if "*" not in named and principal not in named:
                    continue
            if not any(_match(a, action, case_sensitive=False) for a in _list(stmt.get("Action"))):
                continue
            resources = _list(stmt.get("Resource"))
            if resources and not any(_match(r, resource, case_sensitive=True) for r in resources):
                continue
            (denies if stmt.get("Effect") == "Deny" else allows).append(stmt)
    if denies:
        return Decision("Deny", denies)
    if allows:
        return Decision("Allow", allows)
    return Decision("Implicit", [])
