"""Run the Pulumi program offline under Pulumi's mocks and record every resource.

The program runs exactly as `pulumi up` would run it (its `__main__.py`, with the
stack file's config), except that the engine is `pulumi.runtime.set_mocks`: each
resource registration lands in `RecordingMocks`, which answers with the outputs
AWS would compute (ARNs, names) so that documents naming them resolve.

The program's modules (`keys`, `audit`, `monitoring`, ...) are plain top-level
modules, as in any Pulumi Python program. `program_path()` puts them on sys.path
only while the program is imported and hides any same-named module of the rest
of the test session, so neither side sees the other's.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import runpy
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pulumi
import yaml
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

REPO = Path(__file__).resolve().parents[2]
PROGRAM_DIR = REPO / "pulumi"
PROJECT = "cosmic-backup"
ACCOUNT_ID = "123456789012"  # moto's default account, so documents also work there.

# Resource types whose properties are JSON policy documents.
POLICY_PROPERTIES = {
    "aws:iam/role:Role": "assumeRolePolicy",
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/policy:Policy": "policy",
    "aws:s3/bucketPolicy:BucketPolicy": "policy",
    "aws:kms/key:Key": "policy",
    "aws:kms/replicaKey:ReplicaKey": "policy",
    "aws:sns/topicPolicy:TopicPolicy": "policy",
}


def program_module_names() -> set[str]:
    names = {path.stem for path in PROGRAM_DIR.glob("*.py") if path.stem != "__main__"}
    names |= {path.name for path in PROGRAM_DIR.iterdir() if (path / "__init__.py").exists()}
    return names


@contextlib.contextmanager
def program_path() -> Iterator[None]:
    """The program's directory on sys.path, its module names private to this block."""
    names = program_module_names()

    def ours(module: str) -> bool:
        return module.split(".")[0] in names

    hidden = {name: module for name, module in sys.modules.items() if ours(name)}
    for name in hidden:
        del sys.modules[name]
    sys.path.insert(0, str(PROGRAM_DIR))
    try:
        yield
    finally:
        sys.path.remove(str(PROGRAM_DIR))
        for name in [name for name in sys.modules if ours(name)]:
            del sys.modules[name]
        sys.modules.update(hidden)


def import_program_modules(*names: str) -> dict[str, ModuleType]:
    """Import modules of the program (e.g. 'policies', 'outputs_to_inventory')."""
    import importlib

    with program_path():
        return {name: importlib.import_module(name) for name in names}


def stack_config(stack: str) -> dict[str, Any]:
    """The stack file's config block, as the CLI would hand it to the program."""
    data = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())
    return dict(data.get("config") or {})


def as_engine_config(values: dict[str, Any]) -> dict[str, str]:
    """Config values as the engine passes them: strings, JSON for structures."""
    result = {}
    for key, value in values.items():
        if isinstance(value, str):
            result[key] = value
        elif isinstance(value, bool):
            result[key] = "true" if value else "false"
        elif isinstance(value, int | float):
            result[key] = str(value)
        else:
            result[key] = json.dumps(value)
    return result


@dataclass
class Recorded:
    """One registered resource: what the program declared, and where."""

    type: str
    name: str
    inputs: dict[str, Any]
    state: dict[str, Any]
    id: str
    provider: str | None
    region: str | None
    custom: bool
    urn: str = ""
    dependencies: list[str] = field(default_factory=list)
    protect: bool = False

    @property
    def parent_type(self) -> str:
        """Type of the resource's parent (the mock monitor's URNs name only that one)."""
        qualified = self.urn.split("::")[2] if self.urn else ""
        return qualified.split("$")[-2] if "$" in qualified else ""

    def document(self) -> dict[str, Any] | None:
        prop = POLICY_PROPERTIES.get(self.type)
        if prop is None or not self.inputs.get(prop):
            return None
        return json.loads(self.inputs[prop])


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:7]


class RecordingMocks(pulumi.runtime.Mocks):
    """Pulumi mocks that record every resource and fake AWS's computed outputs."""

    def __init__(self, account_id: str = ACCOUNT_ID) -> None:
        self.account_id = account_id
        self.records: list[Recorded] = []
        self.provider_regions: dict[str, str] = {}
        self.calls: list[pulumi.runtime.MockCallArgs] = []

    def _region(self, provider: str | None) -> str | None:
        if not provider:
            return None
        return self.provider_regions.get(provider.rsplit("::", 1)[-1])

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        inputs = copy.deepcopy(args.inputs)
        state = dict(inputs)
        region = self._region(args.provider)
        account = self.account_id
        typ, name = args.typ, args.name
        resource_id = f"{name}-id"
        if typ == "pulumi:providers:aws":
            resource_id = f"provider-{name}"
            self.provider_regions[resource_id] = inputs.get("region")
            region = inputs.get("region")
        elif typ == "aws:s3/bucket:Bucket":
            bucket = inputs.get("bucket") or f"{name}-{_short_hash(name)}"
            resource_id = bucket
            state.update(bucket=bucket, arn=f"arn:aws:s3:::{bucket}", region=region)
        elif typ == "aws:kms/key:Key":
            key_id = ("mrk-" if inputs.get("multiRegion") else "") + _short_hash(name) * 4
            resource_id = key_id
            state.update(keyId=key_id, arn=f"arn:aws:kms:{region}:{account}:key/{key_id}")
        elif typ == "aws:kms/replicaKey:ReplicaKey":
            key_id = inputs["primaryKeyArn"].rsplit("/", 1)[-1]
            resource_id = key_id
            state.update(keyId=key_id, arn=f"arn:aws:kms:{region}:{account}:key/{key_id}")
        elif typ == "aws:iam/role:Role":
            role = inputs.get("name") or f"{name}-{_short_hash(name)}"
            resource_id = role
            state.update(
                name=role,
                arn=f"arn:aws:iam::{account}:role/{role}",
                uniqueId=f"AROA{_short_hash(role)}",
            )
        elif typ == "aws:sns/topic:Topic":
            topic = inputs.get("name") or f"{name}-{_short_hash(name)}"
            arn = f"arn:aws:sns:{region}:{account}:{topic}"
            resource_id = arn
            state.update(name=topic, arn=arn)
        elif typ == "aws:cloudtrail/trail:Trail":
            trail = inputs["name"]
            state.update(arn=f"arn:aws:cloudtrail:{region}:{account}:trail/{trail}")
        elif typ == "aws:cloudwatch/metricAlarm:MetricAlarm":
            state.update(
                arn=f"arn:aws:cloudwatch:{region}:{account}:alarm:{inputs.get('name', name)}"
            )
        self.records.append(
            Recorded(
                type=typ,
                name=name,
                inputs=inputs,
                state=state,
                id=resource_id,
                provider=args.provider,
                region=region,
                custom=bool(args.custom),
            )
        )
        return resource_id, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        self.calls.append(args)
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": self.account_id,
                "arn": f"arn:aws:iam::{self.account_id}:user/ci",
                "userId": "AIDACI",
                "id": self.account_id,
            }
        raise NotImplementedError(
            f"the program called {args.token}, which these mocks do not answer"
        )


class RecordingMonitor(MockMonitor):
    """The mock monitor, also keeping what mocks do not see: dependencies and protect."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.requests: dict[tuple[str, str], Any] = {}

    def RegisterResource(self, request):
        self.requests[(request.type, request.name)] = request
        return super().RegisterResource(request)


@dataclass
class StackRun:
    """Everything one offline run of the program declared and exported."""

    stack: str
    config: dict[str, Any]
    resources: list[Recorded]
    outputs: dict[str, Any]
    namespace: dict[str, Any] = field(repr=False)

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == typ]

    def named(self, name: str) -> Recorded:
        matches = [r for r in self.resources if r.name == name]
        assert len(matches) == 1, f"expected one resource named {name!r}, found {len(matches)}"
        return matches[0]

    def by_id(self, typ: str, resource_id: str) -> Recorded:
        matches = [r for r in self.of_type(typ) if r.id == resource_id]
        assert len(matches) == 1, (
            f"expected one {typ} with id {resource_id!r}, found {len(matches)}"
        )
        return matches[0]

    def attached_to(self, typ: str, bucket: Recorded) -> Recorded:
        """The one companion resource of `typ` whose `bucket` input is this bucket."""
        matches = [r for r in self.of_type(typ) if r.inputs.get("bucket") == bucket.id]
        assert len(matches) == 1, f"expected one {typ} on bucket {bucket.id}, found {len(matches)}"
        return matches[0]

    def role(self, duty: str) -> Recorded:
        matches = [
            r
            for r in self.of_type("aws:iam/role:Role")
            if r.inputs.get("tags", {}).get("Duty") == duty
        ]
        assert len(matches) == 1, f"expected one role with Duty={duty}, found {len(matches)}"
        return matches[0]

    def role_policy(self, duty: str) -> dict[str, Any]:
        role = self.role(duty)
        matches = [
            r
            for r in self.of_type("aws:iam/rolePolicy:RolePolicy")
            if r.inputs.get("role") == role.id
        ]
        assert len(matches) == 1, (
            f"expected one inline policy on the {duty} role, found {len(matches)}"
        )
        return json.loads(matches[0].inputs["policy"])


def run_stack(
    stack: str,
    config: dict[str, Any] | None = None,
    *,
    extend: Callable[[dict[str, Any]], None] | None = None,
) -> StackRun:
    """Run pulumi/__main__.py offline for `stack` with its stack file (or `config`).

    `extend(namespace)` runs inside the same program after __main__, with the
    program's globals: tests use it to declare extra resources.
    """
    values = stack_config(stack) if config is None else config
    mocks = RecordingMocks()
    monitor = RecordingMonitor(mocks)
    runtime_settings.set_root_resource(None)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(as_engine_config(values))
    namespace: dict[str, Any] = {}

    def program() -> None:
        namespace.update(runpy.run_path(str(PROGRAM_DIR / "__main__.py"), run_name="__main__"))
        if extend is not None:
            extend(namespace)

    with program_path(), warnings.catch_warnings():
        # pulumi_aws warns at import about deprecated *V2 types the program does not use.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pulumi_aws\.")
        _sync_await(run_pulumi_func(program))
        root = runtime_settings.get_root_resource()
        outputs = {
            name: _sync_await(pulumi.Output.from_input(value).future())
            for name, value in root.outputs.items()
        }

    urns = {}
    for urn in monitor.resources:
        qualified_type, name = urn.split("::")[2:4]
        urns[(qualified_type.split("$")[-1], name)] = urn
    for record in mocks.records:
        record.urn = urns.get((record.type, record.name), "")
        request = monitor.requests.get((record.type, record.name))
        if request is not None:
            record.dependencies = list(request.dependencies)
            record.protect = bool(request.protect)
    return StackRun(
        stack=stack, config=values, resources=mocks.records, outputs=outputs, namespace=namespace
    )
