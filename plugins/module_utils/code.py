"""Application code: the git repository as a bundle of all refs, the deployment
configuration and the environment variables, in one backup of kind ``code``.

Objects of a code backup:

- ``repository.bundle``: ``git bundle create --all``, checked with
  ``git bundle verify`` before it is stored; the manifest names the release
  (tag), the commit and the number of refs.
- ``deploy/index``: a file snapshot of the deployment configuration (its
  content in the kind's shared packs, like any snapshot).
- ``environment``: the environment variables as JSON. Values are sealed like
  everything else and never printed; the manifest lists only their names.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from typing import Any

from . import config_files, files
from .errors import ConfigError, ExternalCommandError

KIND = "code"
BUNDLE = "repository.bundle"
DEPLOY_INDEX = "deploy/index"
ENVIRONMENT = "environment"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def git(*args: str, cwd: str | None = None, repository: str | None = None) -> str:
    command = ["git"]
    if repository:  # a repository owned by the deploy user is still ours to read
        command += ["-c", f"safe.directory={repository}", "-C", repository]
    command += list(args)
    try:
        result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=False,
                                timeout=3600)
    except FileNotFoundError:
        raise ExternalCommandError("git is not installed: apt-get install git") from None
    if result.returncode != 0:
        raise ExternalCommandError(f"`git {' '.join(args[:3])}` failed ({result.returncode}): "
                                   f"{result.stderr.strip()[-500:]}")
    return result.stdout


def parse_dotenv(text: str) -> dict[str, str]:
    """NAME=VALUE lines (``export`` allowed, quotes removed, comments skipped)."""
    problem = config_files._dotenv_problem(text)
    if problem:
        raise ConfigError(f"environment file: {problem}")
    values: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, value = stripped.split("=", 1)
        name = re.sub(r"^export\s+", "", name).strip()
        value = value.strip()
        if value[:1] in ("'", '"'):
            quote, body = value[0], value[1:]
            while quote not in body:
                body += "\n" + next(lines)
            value = body[:body.rindex(quote)]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[name] = value
    return values


def backup_code(vault, *, repository: str | None = None, release: str | None = None,
                deploy_paths: Iterable[str] = (), env_file: str | None = None,
                environment: dict[str, str] | None = None, label: str = "app",
                state_dir: str | None = None) -> dict[str, Any]:
    """One code backup: bundle, deployment configuration and environment, as given."""
    deploy_paths = list(deploy_paths)
    variables = dict(parse_dotenv(open(env_file, encoding="utf-8").read())  # noqa: SIM115
                     if env_file else {})
    variables.update(environment or {})
    for name in variables:
        if not ENV_NAME.match(name):
            raise ConfigError(f"environment variable name {name!r} is not valid")
    if not (repository or deploy_paths or variables):
        raise ConfigError("nothing to back up: give a repository, deployment paths or "
                          "environment variables")
    meta: dict[str, Any] = {"label": files.check_label(label)}
    outcome: dict[str, Any] = {"label": label}
    scratch = tempfile.mkdtemp(prefix="cosmic-code-")
    try:
        if repository:
            meta.update(_bundle(repository, release, scratch))
        # ``later`` is left after the backup's block: the cache learns of the deploy
        # snapshot's packs only once the manifest exists.
        with contextlib.ExitStack() as later, vault.new_backup(KIND, meta) as backup:
            if repository:
                with open(os.path.join(scratch, BUNDLE), "rb") as bundle:
                    outcome["bundle"] = backup.add_stream(BUNDLE, bundle)
            if deploy_paths:
                snapshot = later.enter_context(files.snapshot_into(
                    vault, backup, deploy_paths, label=f"{label}-deploy",
                    index_name=DEPLOY_INDEX, state_dir=state_dir))
                backup.meta["deploy"] = {"files": snapshot.stats.files,
                                         "paths": sorted(deploy_paths)}
                outcome["deploy"] = {"files": snapshot.stats.files,
                                     "bytes": snapshot.stats.bytes,
                                     "warnings": snapshot.warnings}
            if variables:
                backup.add_bytes(ENVIRONMENT, json.dumps(variables, sort_keys=True).encode())
                backup.meta["environment"] = sorted(variables)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    outcome.update(backup_id=backup.id, release=meta.get("release"), commit=meta.get("commit"),
                   environment=sorted(variables), warnings=backup.warnings)
    return outcome


def _bundle(repository: str, release: str | None, scratch: str) -> dict[str, Any]:
    repository = os.path.abspath(repository)
    if not os.path.isdir(repository):
        raise ConfigError(f"{repository} is not a directory: name the application's git "
                          "repository")
    git("rev-parse", "--git-dir", repository=repository)
    path = os.path.join(scratch, BUNDLE)
    git("bundle", "create", path, "--all", repository=repository)
    git("bundle", "verify", path, repository=repository)
    commit = git("rev-parse", "HEAD", repository=repository).strip()
    if not release:
        try:
            release = git("describe", "--tags", "--always", repository=repository).strip()
        except ExternalCommandError:
            release = commit[:12]
    refs = git("for-each-ref", "--format=%(refname)", repository=repository).split()
    return {"release": release, "commit": commit, "refs": len(refs),
            "repository": repository}


def restore_code(vault, selector: str = "latest", *, target: str,
                 label: str | None = None) -> dict[str, Any]:
    """A working clone (``target/repository``), the deployment files (``target/deploy``)
    and the environment (``target/environment.env``, mode 0600), from one code backup."""
    ref = files.select_snapshot(vault, selector, KIND, label)
    manifest = vault.manifest(ref)
    names = {entry["name"] for entry in manifest["objects"]}
    target = os.path.abspath(target)
    if os.path.exists(target) and os.listdir(target):
        raise ConfigError(f"{target} is not empty: restore code into a new directory")
    os.makedirs(target, mode=0o750, exist_ok=True)
    outcome: dict[str, Any] = {"backup_id": ref.id, "target": target,
                               "release": manifest["meta"].get("release")}
    if BUNDLE in names:
        bundle = os.path.join(target, ".repository.bundle")
        with vault.open_object(ref, BUNDLE, manifest) as plain, open(bundle, "wb") as out:
            shutil.copyfileobj(plain, out, 4 << 20)
        try:
            clone = os.path.join(target, "repository")
            git("clone", "--quiet", bundle, clone)
            # every branch and tag of the bundle as a local one, not a remote of a temp file
            git("fetch", "--quiet", "--update-head-ok", bundle, "refs/heads/*:refs/heads/*",
                "refs/tags/*:refs/tags/*", repository=clone)
            git("remote", "remove", "origin", repository=clone)
            commit = manifest["meta"].get("commit")
            if commit and git("rev-parse", "HEAD", repository=clone).strip() != commit:
                git("checkout", "--quiet", commit, repository=clone)
        finally:
            os.unlink(bundle)
        outcome["repository"] = clone
    if DEPLOY_INDEX in names:
        deploy = files.restore_snapshot(vault, ref=ref, kind=KIND, index_name=DEPLOY_INDEX,
                                        target=os.path.join(target, "deploy"),
                                        safety_backup=False)
        outcome["deploy"] = {"target": deploy.targets[0], "files": deploy.files}
    if ENVIRONMENT in names:
        with vault.open_object(ref, ENVIRONMENT, manifest) as plain:
            variables = json.loads(plain.read())
        path = os.path.join(target, "environment.env")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for name, value in sorted(variables.items()):
                escaped = value.replace("\\", "\\\\").replace('"', '\\"')
                handle.write(f'{name}="{escaped}"\n')
        outcome["environment"] = {"file": path, "names": sorted(variables)}
    vault.audit.record("restore", backup_id=ref.id, result="ok", kind=KIND, target=target)
    return outcome


def verify_code(vault, ref, manifest: dict | None = None) -> list:
    """The code check of the verification registry: ``git bundle verify`` on the stored
    bundle, and the deployment files by checksum."""
    from .verification import Check

    manifest = manifest or vault.manifest(ref)
    names = {entry["name"] for entry in manifest["objects"]}
    checks = []
    if BUNDLE in names:
        scratch = tempfile.mkdtemp(prefix="cosmic-code-verify-")
        try:
            bundle = os.path.join(scratch, BUNDLE)
            with vault.open_object(ref, BUNDLE, manifest) as plain, open(bundle, "wb") as out:
                shutil.copyfileobj(plain, out, 4 << 20)
            git("init", "--quiet", scratch)
            git("bundle", "verify", bundle, cwd=scratch)
            checks.append(Check("git bundle verify", True,
                                f"release {manifest['meta'].get('release')}"))
        except ExternalCommandError as error:
            checks.append(Check("git bundle verify", False, str(error)))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    if DEPLOY_INDEX in names:
        checks += files.verify_snapshot(vault, ref, manifest, DEPLOY_INDEX)
    return checks


def _register() -> None:
    from . import verification

    verification.register(KIND, verify_code)


_register()
