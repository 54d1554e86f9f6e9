"""Where the host CLI's settings file is, and reading it (PyYAML only, so that the
CLI's fast paths can read it without loading the engine)."""

from __future__ import annotations

import os

from .errors import ConfigError

DEFAULT_CONFIG = "/etc/cosmic-backup/config.yml"


def load_settings(path: str | None) -> dict[str, object]:  # not Any: no typing import
    """Read the settings file: ``path``, $COSMIC_BACKUP_CONFIG, or the default."""
    path = path or os.environ.get("COSMIC_BACKUP_CONFIG") or DEFAULT_CONFIG
    try:
        import yaml
    except ImportError:
        raise ConfigError("reading settings needs PyYAML: pip install pyyaml") from None
    try:
        with open(path, encoding="utf-8") as handle:
            settings = yaml.safe_load(handle) or {}
    except FileNotFoundError:
        raise ConfigError(
            f"settings file {path} does not exist: pass --config or set COSMIC_BACKUP_CONFIG"
        ) from None
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"settings file {path} is unreadable: {error}") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"settings file {path} must hold a mapping")
    settings.setdefault("_source", path)
    return settings
