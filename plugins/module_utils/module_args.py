"""Argument spec shared by every module that touches a vault (the Ansible side
of settings.py); no Ansible import, so the engine stays plain Python."""

from __future__ import annotations

from typing import Any

SETTINGS_OPTIONS = ("repositories", "keys", "audit_log", "compression")


def vault_argument_spec() -> dict[str, Any]:
    """Options documented by the ``cosmic.backup.vault`` doc fragment."""
    return {
        "repositories": {
            "type": "list", "elements": "dict", "required": True,
            "options": {
                "name": {"type": "str"},
                "url": {"type": "str", "required": True},
                "endpoint_url": {"type": "str"},
                "region": {"type": "str"},
                "profile": {"type": "str"},
                "replicated": {"type": "bool", "default": False},
            },
        },
        "keys": {  # paths and ARNs, never key material
            "type": "dict", "required": True, "no_log": False,
            "options": {
                "local_key_file": {"type": "path"},
                "kms_key_arns": {"type": "list", "elements": "str", "no_log": False},
                "kms_endpoint_url": {"type": "str"},
            },
            "required_one_of": [["local_key_file", "kms_key_arns"]],
            "mutually_exclusive": [["local_key_file", "kms_key_arns"]],
        },
        "audit_log": {"type": "path"},
        "compression": {
            "type": "dict",
            "options": {"level": {"type": "int", "default": 3},
                        "threads": {"type": "int", "default": 2}},
        },
    }


def settings_from_params(params: dict[str, Any]) -> dict[str, Any]:
    """The settings document (see settings.py) from module parameters."""
    settings = {name: params.get(name) for name in SETTINGS_OPTIONS if params.get(name)}
    settings["repositories"] = [
        {key: value for key, value in repository.items() if value is not None}
        for repository in params["repositories"]
    ]
    settings["keys"] = {key: value for key, value in params["keys"].items() if value}
    return settings
