"""Configuration files: snapshots on change, checked by syntax before they are stored
and after they are restored.

Formats: YAML, JSON, TOML, INI and dotenv by parsing; nginx, PostgreSQL and
sshd through the program's own checker when it is installed. Messages carry
the file, the format and the line, never the content: configuration holds
secrets, and a parser's message can quote the offending line.
"""

from __future__ import annotations

import configparser
import fnmatch
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import files
from .errors import ConfigError

try:
    import yaml
except ImportError:  # checked when a YAML file is met
    yaml = None
try:
    import tomllib
except ImportError:  # Python < 3.11
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

KIND = "config"
FORMATS = ("yaml", "json", "toml", "ini", "dotenv", "nginx", "postgresql", "sshd", "none")
DOTENV_LINE = re.compile(r"^\s*(export\s+)?[A-Za-z_][A-Za-z0-9_.]*\s*=")
EXTERNAL = {
    "nginx": (("nginx",), lambda path: ["nginx", "-t", "-q", "-c", path]),
    "sshd": (("sshd", "/usr/sbin/sshd"),
             lambda path: [_which("sshd", "/usr/sbin/sshd"), "-t", "-f", path]),
    "postgresql": (("postgres",),
                   lambda path: ["postgres", f"--config-file={path}", "-C", "data_directory"]),
}


def _which(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK)
                                       else None)
        if found:
            return found
    return None


def detect_format(path: str, overrides: dict[str, str] | None = None) -> str:
    """The format of a configuration file from ``overrides`` (glob -> format) or its name."""
    for pattern, fmt in (overrides or {}).items():
        if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(os.path.basename(path),
                                                                     pattern):
            if fmt not in FORMATS:
                raise ConfigError(f"unknown format {fmt!r} for {pattern}: use one of "
                                  + ", ".join(FORMATS))
            return fmt
    name = os.path.basename(path).lower()
    extension = os.path.splitext(name)[1]
    if extension in (".yml", ".yaml"):
        return "yaml"
    if extension == ".json":
        return "json"
    if extension == ".toml":
        return "toml"
    if extension in (".ini", ".cfg"):
        return "ini"
    if name == ".env" or name.startswith(".env.") or extension == ".env":
        return "dotenv"
    if name == "nginx.conf":  # the main file: fragments cannot be checked on their own
        return "nginx"
    if name in ("postgresql.conf", "postgresql.auto.conf"):
        return "postgresql"
    if name == "sshd_config":
        return "sshd"
    return "none"


def _scrub(text: str) -> str:
    """A checker's message without quoted text or values (they may be secrets)."""
    text = re.sub(r"\"[^\"]*\"|'[^']*'|`[^`]*`", "'…'", text)
    text = re.sub(r"=\s*\S+", "=…", text)
    return " ".join(text.split())[:300]


def check_syntax(path: str, fmt: str, source: str | None = None) -> str | None:
    """None when ``path`` (or the file ``source`` staged for it) parses; else what is
    wrong and where, without quoting the file."""
    source = source or path
    if fmt == "none":
        return None
    if fmt in EXTERNAL:
        return _external(fmt, source)
    with open(source, "rb") as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"{fmt} file is not UTF-8 (byte {error.start})"
    try:
        if fmt == "yaml":
            if yaml is None:
                return None
            list(yaml.safe_load_all(text))
        elif fmt == "json":
            json.loads(text)
        elif fmt == "toml":
            if tomllib is None:
                return None
            tomllib.loads(text)
        elif fmt == "ini":
            configparser.ConfigParser(interpolation=None, strict=True).read_string(text)
        elif fmt == "dotenv":
            return _dotenv_problem(text)
    except Exception as error:  # noqa: BLE001 - every parser has its own error classes
        return _describe_error(fmt, error)
    return None


def _describe_error(fmt: str, error: Exception) -> str:
    line = column = None
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        line, column = mark.line + 1, mark.column + 1
    elif isinstance(error, json.JSONDecodeError):
        line, column = error.lineno, error.colno
    elif getattr(error, "lineno", None):
        line = error.lineno
    elif isinstance(error, configparser.ParsingError) and error.errors:
        line = error.errors[0][0]
    elif fmt == "toml":
        found = re.search(r"line (\d+), column (\d+)", str(error))
        if found:
            line, column = int(found[1]), int(found[2])
    what = {
        "yaml": getattr(error, "problem", None) or type(error).__name__,
        "json": getattr(error, "msg", type(error).__name__),
        "toml": str(error).split(" (at ", maxsplit=1)[0],
    }.get(fmt, type(error).__name__)
    where = f" at line {line}" + (f", column {column}" if column else "") if line else ""
    return f"{fmt.upper()} syntax error{where}: {_scrub(str(what))}"


def _dotenv_problem(text: str) -> str | None:
    quote = None
    for number, line in enumerate(text.splitlines(), 1):
        if quote:  # inside a quoted value that spans lines
            if line.rstrip().endswith(quote):
                quote = None
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not DOTENV_LINE.match(line):
            return f"DOTENV syntax error at line {number}: not NAME=VALUE"
        value = line.split("=", 1)[1].strip()
        if value[:1] in ("'", '"'):
            body = value[1:]
            if value[0] not in body:
                quote = value[0]  # continues on the next lines
    if quote:
        return "DOTENV syntax error: a quoted value is never closed"
    return None


def _external(fmt: str, path: str) -> str | None:
    names, command = EXTERNAL[fmt]
    if not _which(*names):
        return None  # not installed here: nothing to check with
    try:
        result = subprocess.run(command(path), capture_output=True, text=True, timeout=60,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{fmt} check could not run: {error}"
    if result.returncode == 0:
        return None
    message = _scrub((result.stderr or result.stdout).strip().splitlines()[-1]
                     if (result.stderr or result.stdout).strip() else "")
    return f"{fmt} check failed (exit {result.returncode}): {message}"


def installed_checkers() -> dict[str, bool]:
    return {fmt: bool(_which(*names)) for fmt, (names, _command) in EXTERNAL.items()}


def expand(patterns: Iterable[str]) -> list[str]:
    """Files named by path or glob (``**`` spans directories); a plain path must exist."""
    found: list[str] = []
    for pattern in patterns:
        if not os.path.isabs(pattern):
            raise ConfigError(f"{pattern!r}: name configuration by absolute path or glob")
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
        elif os.path.lexists(pattern):
            matches = [pattern]
        else:
            raise ConfigError(f"{pattern} does not exist: correct the path, or use a glob "
                              "for files that may be absent")
        for match in matches:
            if os.path.isdir(match) and not os.path.islink(match):
                for directory, _dirs, names in os.walk(match):
                    found += [os.path.join(directory, name) for name in names]
            else:
                found.append(match)
    unique = sorted({os.path.normpath(path) for path in found})
    if not unique:
        raise ConfigError("no configuration file matches " + ", ".join(patterns))
    return unique


@dataclass
class SyntaxReport:
    checked: dict[str, str] = field(default_factory=dict)  # path -> format
    failures: dict[str, str] = field(default_factory=dict)  # path -> problem

    def message(self) -> str:
        return "; ".join(f"{path}: {problem}" for path, problem in sorted(self.failures.items()))


def check_files(paths: Iterable[str], overrides: dict[str, str] | None = None,
                sources: dict[str, str] | None = None) -> SyntaxReport:
    """Check each file by its format; ``sources`` maps a path to the staged file to read."""
    report = SyntaxReport()
    for path in paths:
        fmt = detect_format(path, overrides)
        source = (sources or {}).get(path, path)
        if os.path.islink(source) or not os.path.isfile(source):
            continue
        report.checked[path] = fmt
        problem = check_syntax(path, fmt, source)
        if problem:
            report.failures[path] = problem
    return report


def backup_config(vault, patterns: Iterable[str], *, label: str = "config",
                  state_dir: str | None = None, formats: dict[str, str] | None = None,
                  on_syntax_error: str = "fail", check_mode: bool = False,
                  force: bool = False) -> dict[str, Any]:
    """Snapshot configuration files when they changed (or ``force``), after checking them."""
    if on_syntax_error not in ("fail", "warn"):
        raise ConfigError("on_syntax_error must be fail or warn")
    paths = expand(patterns)
    report = check_files(paths, formats)
    warnings = []
    if report.failures:
        if on_syntax_error == "fail":
            raise ConfigError(f"{len(report.failures)} configuration file(s) fail their "
                              f"syntax check, nothing was stored: {report.message()}; fix "
                              "them, or set on_syntax_error=warn to keep them as they are")
        warnings.append(f"stored despite syntax errors: {report.message()}")
    previous = files.SnapshotCache(state_dir or files.default_state_dir(), vault,
                                   KIND).previous(label)
    result = files.take_snapshot(
        vault, paths, label=label, kind=KIND, state_dir=state_dir, check_mode=check_mode,
        only_if_changed=not force,
        meta={"formats": report.checked, "syntax_failures": sorted(report.failures)})
    outcome = result.to_dict()
    outcome.update(paths=paths, formats=report.checked, warnings=warnings + result.warnings,
                   changed_files=_changed_files(result.entries, previous))
    return outcome


def _changed_files(entries: list[dict], previous: dict | None) -> list[str]:
    """Which files differ from the last snapshot, by name only (never a content diff)."""
    before = {entry["path"]: entry for entry in (previous or {}).get("entries", [])}
    changed = []
    for entry in entries:
        old = before.pop(entry["path"], None)
        if old is None or any(old.get(key) != entry.get(key)
                              for key in ("type", "blobs", "mode", "uid", "gid", "target")):
            changed.append("/" + entry["path"])
    changed += ["/" + path for path in before]
    return sorted(changed)


def restore_config(vault, selector: str = "latest", *, label: str | None = "config",
                   paths: Iterable[str] | None = None, target: str | None = None,
                   formats: dict[str, str] | None = None, check: bool = True,
                   safety_backup: bool = True, keep_previous: bool = True,
                   state_dir: str | None = None, check_mode: bool = False) -> dict[str, Any]:
    """Restore configuration files; with ``check``, a restored file that fails its syntax
    check stops the restore before anything is replaced."""
    checked: dict[str, str] = {}

    def check_staged(sources: dict[str, str]) -> None:
        report = check_files(list(sources), formats, sources)
        checked.update(report.checked)
        if report.failures:
            raise ConfigError(f"restored configuration fails its syntax check, nothing was "
                              f"replaced: {report.message()}")

    result = files.restore_snapshot(
        vault, selector, kind=KIND, label=label, paths=paths, target=target,
        safety_backup=safety_backup, keep_previous=keep_previous, state_dir=state_dir,
        check_mode=check_mode, after_staging=check_staged if check else None)
    outcome = result.to_dict()
    outcome["formats"] = checked
    return outcome


def verify_config(vault, ref, manifest: dict | None = None) -> list:
    """The config check of the verification registry: checksums, then every file's syntax
    after a restore into a scratch directory."""
    from .verification import Check

    checks = files.verify_snapshot(vault, ref)
    if not all(check.ok for check in checks):
        return checks
    scratch = tempfile.mkdtemp(prefix="cosmic-config-verify-")
    try:
        target = os.path.join(scratch, "restored")
        files.restore_snapshot(vault, ref=ref, kind=KIND, target=target, safety_backup=False,
                               restore_owners=False)
        index = files.load_index(vault, ref)
        sources = {"/" + entry["path"]: os.path.join(target, entry["path"])
                   for entry in index["entries"] if entry.get("type") == "f"}
        report = check_files(list(sources), (manifest or {}).get("meta", {}).get("overrides"),
                             sources)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    checks.append(Check("configuration syntax", not report.failures,
                        report.message() or f"{len(report.checked)} files parse"))
    return checks


def _register() -> None:
    from . import verification

    verification.register(KIND, verify_config)


_register()
