"""Fixtures of the Pulumi program's tests: offline runs of the dev and prod stacks."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.pulumi.harness import StackRun, import_program_modules, run_stack


@pytest.fixture(scope="session")
def prod() -> StackRun:
    """pulumi/__main__.py run under mocks with Pulumi.prod.yaml."""
    return run_stack("prod")


@pytest.fixture(scope="session")
def dev() -> StackRun:
    """pulumi/__main__.py run under mocks with Pulumi.dev.yaml."""
    return run_stack("dev")


@pytest.fixture(scope="session", params=["dev", "prod"])
def stack(request, dev: StackRun, prod: StackRun) -> StackRun:
    """Each example stack in turn."""
    return {"dev": dev, "prod": prod}[request.param]


@pytest.fixture(scope="session")
def program() -> dict[str, ModuleType]:
    """The program's own modules, for the pure functions they define."""
    return import_program_modules(
        "stack_settings",
        "retention_lifecycle",
        "policy_documents",
        "monitoring",
        "outputs",
        "policies",
        "outputs_to_inventory",
    )
