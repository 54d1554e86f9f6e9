"""What every component needs: settings, one provider per region, the account."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from stack_settings import StackSettings, principal_arns

PROJECT_TAG = "cosmic-backup"


@dataclass(frozen=True)
class StackContext:
    settings: StackSettings
    primary: aws.Provider
    secondary: aws.Provider
    account_id: pulumi.Output[str]

    @classmethod
    def create(cls, settings: StackSettings) -> StackContext:
        """Two explicit providers: nothing in this stack runs in an ambient region."""
        tags = {
            "project": PROJECT_TAG,
            "stack": settings.stack,
            "managed-by": "pulumi",
            **settings.tags,
        }
        allowed = [settings.account_id] if settings.account_id else None
        primary = aws.Provider(
            "primary",
            region=settings.primary_region,
            default_tags={"tags": tags},
            allowed_account_ids=allowed,
        )
        secondary = aws.Provider(
            "secondary",
            region=settings.secondary_region,
            default_tags={"tags": tags},
            allowed_account_ids=allowed,
        )
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(provider=primary))
        return cls(
            settings=settings, primary=primary, secondary=secondary, account_id=identity.account_id
        )

    def provider(self, region: str) -> aws.Provider:
        return self.primary if region == "primary" else self.secondary

    def region_name(self, region: str) -> str:
        return (
            self.settings.primary_region if region == "primary" else self.settings.secondary_region
        )

    def child(
        self,
        parent: pulumi.Resource,
        region: str = "primary",
        *,
        protect: bool = False,
        depends_on: list[pulumi.Resource] | None = None,
    ) -> pulumi.ResourceOptions:
        """Options of a component's child: parented, pinned to a region's provider."""
        return pulumi.ResourceOptions(
            parent=parent,
            provider=self.provider(region),
            protect=protect and self.settings.protect,
            depends_on=depends_on,
        )

    def principals(self, configured: tuple[str, ...]) -> pulumi.Output[list[str]]:
        return self.account_id.apply(lambda account: principal_arns(configured, account))

    def key_administrators(self) -> pulumi.Output[list[str]]:
        return self.principals(self.settings.key_administrators)


def render(build: Callable[..., dict[str, Any]], **inputs: Any) -> pulumi.Output[str]:
    """A policy document as JSON, once every ARN it names is known."""
    return pulumi.Output.all(**inputs).apply(lambda values: json.dumps(build(**values)))
