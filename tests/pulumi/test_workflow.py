"""The CI workflow: tests first, preview on pull requests, up on main (dev, then prod)."""

from __future__ import annotations

import pytest
import yaml

from tests.pulumi.harness import REPO

WORKFLOW = REPO / ".github" / "workflows" / "pulumi.yml"


@pytest.fixture(scope="module")
def workflow() -> dict:
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True)  # YAML 1.1 reads the bare key `on` as true
    return data


def pulumi_steps(job: dict) -> list[dict]:
    return [s for s in job["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@")]


def test_triggers(workflow):
    assert set(workflow["on"]) >= {"pull_request", "push"}
    assert workflow["on"]["push"]["branches"] == ["main"]
    for event in ("pull_request", "push"):
        assert {"Pulumi*.yaml", "pulumi/**", "tests/pulumi/**"} <= set(
            workflow["on"][event]["paths"]
        )


def test_offline_tests_gate_every_pulumi_command(workflow):
    jobs = workflow["jobs"]
    test_commands = " ".join(s.get("run", "") for s in jobs["test"]["steps"])
    assert "pytest tests/pulumi" in test_commands
    assert "ruff check pulumi tests/pulumi" in test_commands
    assert not pulumi_steps(jobs["test"])
    for name, job in jobs.items():
        if pulumi_steps(job):
            needs = job["needs"] if isinstance(job["needs"], list) else [job["needs"]]
            assert "test" in needs or "up-dev" in needs, name


def test_pull_requests_preview_both_stacks_and_never_apply(workflow):
    preview = workflow["jobs"]["preview"]
    assert "github.event_name == 'pull_request'" in preview["if"]
    assert preview["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    (step,) = pulumi_steps(preview)
    assert step["with"]["command"] == "preview"
    assert step["with"]["comment-on-pr"] is True
    for name, job in workflow["jobs"].items():
        for step in pulumi_steps(job):
            if step["with"]["command"] == "up":
                assert "push" in job.get("if", "") or "up-dev" in str(job.get("needs")), name


def test_main_applies_dev_then_prod_behind_an_approval(workflow):
    jobs = workflow["jobs"]
    dev, prod = jobs["up-dev"], jobs["up-prod"]
    assert "github.event_name == 'push'" in dev["if"] and "refs/heads/main" in dev["if"]
    assert prod["needs"] == "up-dev"
    assert prod["environment"] == "production"
    for job, stack in ((dev, "dev"), (prod, "prod")):
        (step,) = pulumi_steps(job)
        assert (step["with"]["command"], step["with"]["stack-name"]) == ("up", stack)
        commands = " ".join(s.get("run", "") for s in job["steps"])
        assert f"pulumi stack output --json --stack {stack}" in commands
        assert "pulumi/outputs_to_inventory.py" in commands


def test_credentials_are_short_lived_and_scoped(workflow):
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        if pulumi_steps(job):
            assert job["permissions"]["id-token"] == "write", name
            aws = [s for s in job["steps"] if "configure-aws-credentials" in str(s.get("uses"))]
            assert aws and "role-to-assume" in aws[0]["with"], name
        else:
            assert "permissions" not in job, name
