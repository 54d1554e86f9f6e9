"""Settings: one document (a YAML file for the host CLI, module arguments for
Ansible) from which the engine's vault is built.

    repositories:                # the first is the primary
      - name: primary
        url: /var/lib/cosmic-backup/primary        # or s3://bucket/prefix
      - name: secondary
        url: s3://offsite-bucket/cosmic
        endpoint_url: https://s3.eu-central-1.amazonaws.com   # optional
        region: eu-central-1
        replicated: true   # filled by S3 replication: read, never written, by this tool
    keys:
      local_key_file: /etc/cosmic-backup/master.key   # lab and development
      # kms_key_arns: [arn:aws:kms:...primary, arn:aws:kms:...secondary]
      # kms_endpoint_url: https://kms.eu-west-1.amazonaws.com  # optional
    audit_log: /var/log/cosmic-backup/audit.jsonl
    compression: {level: 3, threads: 2}
    wal:                         # WAL archiving (wal.py)
      spool_dir: /var/lib/cosmic-backup/wal-spool   # where pushes wait when the repository fails
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .compression import Compression
from .errors import ConfigError

if TYPE_CHECKING:
    from .repository import Repository, Vault

# Every CLI start imports this module; the engine a vault is made of (the
# Encryption SDK, storage, monitoring) is imported by the builders below, so
# that `backup-stream` can start zstd before it is loaded (cli.py).

S3_OPTIONS = ("endpoint_url", "region", "profile", "part_size", "concurrency")


def build_keys(settings: dict[str, Any]):
    from .keys import KmsKeys, LocalKey

    keys = settings.get("keys") or {}
    if keys.get("kms_key_arns"):
        return KmsKeys(tuple(keys["kms_key_arns"]), keys.get("kms_endpoint_url"))
    if keys.get("local_key_file"):
        return LocalKey.load(keys["local_key_file"])
    raise ConfigError("no key configured: set keys.local_key_file or keys.kms_key_arns")


def build_repositories(settings: dict[str, Any]) -> list[Repository]:
    from .repository import Repository
    from .storage import open_storage

    entries = settings.get("repositories") or []
    if not entries:
        raise ConfigError("no repository configured: add a primary under `repositories`")
    repositories, names = [], set()
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("url"):
            raise ConfigError(f"repository #{position + 1} needs a url")
        name = entry.get("name") or ("primary" if position == 0 else f"secondary{position}")
        if name in names:
            raise ConfigError(f"two repositories are called {name!r}")
        names.add(name)
        options = {option: entry[option] for option in S3_OPTIONS if entry.get(option)}
        repositories.append(Repository(name, open_storage(entry["url"], **options),
                                       replicated=bool(entry.get("replicated"))))
    return repositories


def build_vault(settings: dict[str, Any], *, keys=None) -> Vault:
    from .audit import AuditLog
    from .monitoring import Monitor, MonitoringSettings
    from .repository import Vault

    return Vault(
        build_repositories(settings),
        keys if keys is not None else (lambda: build_keys(settings)),
        AuditLog(settings.get("audit_log")),
        Compression.from_settings(settings),
        Monitor(MonitoringSettings.from_dict(settings.get("monitoring"))),
    )
