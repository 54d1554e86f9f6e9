"""The keys that wrap each object's data key: a local master key or AWS KMS.

Every object gets a fresh AES-256 data key. These classes make it, wrap it for
the message header (message_format) and unwrap it again. A local key is for
the lab and development; production wraps with one KMS key per region so that
either region alone can decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import struct
from dataclasses import dataclass

from .atomic_file import atomic_file
from .errors import ConfigError, KeyUnavailable
from .message_format import (
    IV_BYTES,
    KEY_BYTES,
    TAG_BYTES,
    EncryptedDataKey,
    Header,
    MessageError,
    serialize_context,
)

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError:  # reported by sealing.py
    AESGCM = None

LOCAL_PROVIDER_ID = "cosmic-backup-local"
KEY_FILE_FORMAT = "cosmic-backup local master key"
RECOVERY_CHECKSUM_BYTES = 4


def local_key_id(key: bytes) -> str:
    """A stable, public name for a key: never enough to recover it."""
    return "local-" + hashlib.sha256(b"cosmic-backup key id\0" + key).hexdigest()[:16]


@dataclass(frozen=True)
class LocalKey:
    """A 256-bit master key kept in a file only its owner can read."""

    key: bytes

    @property
    def key_id(self) -> str:
        return local_key_id(self.key)

    @property
    def key_ids(self) -> list[str]:
        return [self.key_id]

    @classmethod
    def generate(cls) -> LocalKey:
        return cls(secrets.token_bytes(32))

    @classmethod
    def load(cls, path: str) -> LocalKey:
        try:
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
            key = base64.b64decode(document["key"], validate=True)
        except FileNotFoundError:
            raise KeyUnavailable(
                f"local master key {path} does not exist: restore it from safekeeping with "
                "`cosmic-backup key import` and the printed recovery code"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise KeyUnavailable(f"local master key {path} is unreadable: {error}") from None
        if len(key) != 32 or document.get("key_id") != local_key_id(key):
            raise KeyUnavailable(f"local master key {path} is damaged: its key id does not match")
        return cls(key)

    def save(self, path: str, *, overwrite: bool = False) -> None:
        """Write the key file with mode 0600, atomically; never replaces another key silently."""
        if os.path.exists(path) and not overwrite:
            existing = LocalKey.load(path)
            if existing.key != self.key:
                raise KeyUnavailable(
                    f"{path} already holds another key ({existing.key_id}); move it away first"
                )
            return
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        document = {
            "format": KEY_FILE_FORMAT,
            "version": 1,
            "key_id": self.key_id,
            "key": base64.b64encode(self.key).decode(),
        }
        with atomic_file(path, "w", permissions=0o600) as handle:
            json.dump(document, handle)
            handle.write("\n")

    def recovery_code(self) -> str:
        """The key as printable groups with a checksum, for paper or a password safe."""
        checksum = hashlib.sha256(self.key).digest()[:RECOVERY_CHECKSUM_BYTES]
        text = base64.b32encode(self.key + checksum).decode().rstrip("=")
        return "-".join(text[i : i + 4] for i in range(0, len(text), 4))

    @classmethod
    def from_recovery_code(cls, code: str) -> LocalKey:
        text = "".join(code.split()).replace("-", "").upper()
        text = text.replace("0", "O").replace("1", "I").replace("8", "B")  # read-back slips
        try:
            raw = base64.b32decode(text + "=" * (-len(text) % 8))
        except ValueError:
            raise KeyUnavailable(
                "the recovery code has characters that are not in it: use A-Z and 2-7"
            ) from None
        key, checksum = raw[:-RECOVERY_CHECKSUM_BYTES], raw[-RECOVERY_CHECKSUM_BYTES:]
        if len(key) != 32 or hashlib.sha256(key).digest()[:RECOVERY_CHECKSUM_BYTES] != checksum:
            raise KeyUnavailable(
                "the recovery code does not check out: a group is mistyped or missing"
            )
        return cls(key)

    def _key_info_prefix(self) -> bytes:
        # The SDK's raw AES keyring: key name, tag length in bits, IV length; the IV follows.
        return self.key_id.encode() + struct.pack(">II", TAG_BYTES * 8, IV_BYTES)

    def new_data_key(self, context) -> tuple[bytes, list[EncryptedDataKey]]:
        """A fresh data key, and its copy wrapped by this key for the message header."""
        data_key = secrets.token_bytes(KEY_BYTES)
        iv = secrets.token_bytes(IV_BYTES)
        wrapped = AESGCM(self.key).encrypt(iv, data_key, serialize_context(context))
        return data_key, [EncryptedDataKey(LOCAL_PROVIDER_ID.encode(),
                                           self._key_info_prefix() + iv, wrapped)]

    def unwrap(self, header: Header) -> bytes:
        """The data key of a message sealed for this key."""
        prefix = self._key_info_prefix()
        for wrapped in header.encrypted_data_keys:
            if (wrapped.provider_id == LOCAL_PROVIDER_ID.encode()
                    and wrapped.key_info.startswith(prefix)
                    and len(wrapped.key_info) == len(prefix) + IV_BYTES):
                try:
                    return AESGCM(self.key).decrypt(
                        wrapped.key_info[len(prefix):], wrapped.ciphertext,
                        serialize_context(header.encryption_context))
                except InvalidTag:
                    raise MessageError("its wrapped data key failed authentication") from None
        raise KeyUnavailable(f"it was not sealed for {self.key_id}")


@dataclass(frozen=True)
class KmsKeys:
    """KMS keys by ARN, the primary region's first; each wraps every data key."""

    key_arns: tuple[str, ...]
    endpoint_url: str | None = None

    def __post_init__(self):
        if not self.key_arns:
            raise ConfigError("no KMS key ARNs configured: set keys.kms_key_arns")
        for arn in self.key_arns:
            if not arn.startswith("arn:") or ":kms:" not in arn:
                raise ConfigError(
                    f"{arn!r} is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)"
                )

    @property
    def key_ids(self) -> list[str]:
        return list(self.key_arns)

    # The AWS Encryption SDK is imported only here: importing it (with boto3)
    # costs 0.4 s of every start that commands without KMS keys save.
    def new_data_key(self, context) -> tuple[bytes, list[EncryptedDataKey]]:
        """A data key from the first KMS key, wrapped by every configured key."""
        from . import kms_wrapping

        return kms_wrapping.new_data_key(self, context)

    def unwrap(self, header: Header) -> bytes:
        """The data key, unwrapped by whichever configured KMS key can."""
        from . import kms_wrapping

        return kms_wrapping.unwrap(self, header)
