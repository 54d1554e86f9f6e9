"""Errors an operator reads: what failed, where, and what to do next."""

from __future__ import annotations


class BackupError(Exception):
    """A failure the operator must act on; the message is the whole story."""

    exit_code = 2


class ConfigError(BackupError):
    """The configuration or the command line asks for something impossible."""


class SelectorError(BackupError):
    """No backup matches what the operator asked for."""


class StorageError(BackupError):
    """A repository could not be read or written."""


class ObjectMissing(StorageError):
    """An object the catalog expects is not in the repository."""


class KeyUnavailable(BackupError):
    """The key that protects a backup cannot be loaded or cannot unwrap it."""


class IntegrityError(BackupError):
    """Stored data failed authentication or does not match its manifest."""


class ExternalCommandError(BackupError):
    """A tool the engine drives (pg_dump, git, ...) failed."""


class SwitchError(BackupError):
    """Traffic could not be switched to the recovered system (DNS, balancer)."""
