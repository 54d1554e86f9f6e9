"""Short import paths for tests: the engine as Ansible and the CLI load it."""

from ansible_collections.cosmic.backup.plugins.module_utils import (  # noqa: F401
    audit,
    catalog,
    cli,
    compression,
    durability,
    errors,
    keys,
    kms_wrapping,
    message_format,
    pipes,
    postgres_cluster,
    repository,
    sealing,
    settings,
    storage,
    storage_s3,
)
