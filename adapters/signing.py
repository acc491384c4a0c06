"""Signing commands on the way out, and reading signing keys from the environment or configuration.

A signature is an HMAC-SHA256 over the record as it is produced: ``keyId \n recordKey \n value``
(docs/signing.md), carried in the headers `cfsm-key-id` and `cfsm-signature`. `Signer.sign`
encodes the command once (its wire JSON), signs those very bytes with the campaign id as the
record key, and returns the command holding that record (`Command.signed`): what is produced is
what was signed. The HMAC comes from `fsm.authorization` (`sign_record`), so the signer here and
the verifier in the service cannot drift apart.

Key text (an environment variable or a configuration value) is the secret itself:

- ``base64:<data>`` — standard or URL-safe base64 of the key bytes;
- ``hex:<digits>`` — the key bytes in hex;
- anything else — the UTF-8 bytes of the text.

A key must be at least 16 bytes (32 random bytes recommended: ``python -c "import secrets;
print('base64:' + __import__('base64').b64encode(secrets.token_bytes(32)).decode())"``).

The command-line tools take a key only from the environment, never from argv (argv is visible to
every user of the machine in the process list): ``--key-env VAR`` names the variable, default
``CAMPAIGN_FSM_SIGNING_KEY``; the key id comes from ``--key-id`` or ``CAMPAIGN_FSM_SIGNING_KEY_ID``.
Key material never appears in a repr, a log line or an error message; errors name the variable.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import TypeAdapter, ValidationError

from fsm.authorization import sign_record
from schemas.base import encode
from schemas.commands import Command, KeyId
from schemas.signed import SignedRecord

__all__ = [
    "DEFAULT_KEY_ENV",
    "DEFAULT_KEY_ID_ENV",
    "Signer",
    "SigningKeyError",
    "load_keys",
    "parse_key",
    "signer_from_env",
]

DEFAULT_KEY_ENV = "CAMPAIGN_FSM_SIGNING_KEY"
DEFAULT_KEY_ID_ENV = "CAMPAIGN_FSM_SIGNING_KEY_ID"
_MIN_KEY_BYTES = 16
_KEY_ID: TypeAdapter[str] = TypeAdapter(KeyId)


class SigningKeyError(ValueError):
    """A signing key that is missing or unusable. The message names where, never the key."""


def parse_key(text: str, *, source: str) -> bytes:
    """Key bytes from key text (see the module docstring). `source` names it in errors."""
    if text.startswith("base64:"):
        # URL-safe and unpadded forms are common in secret stores: accept them too.
        data = text[len("base64:"):].strip().replace("-", "+").replace("_", "/").rstrip("=")
        try:
            key = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise SigningKeyError(f"{source}: 'base64:' key is not valid base64") from None
    elif text.startswith("hex:"):
        try:
            key = bytes.fromhex(text[len("hex:"):].strip())
        except ValueError:
            raise SigningKeyError(f"{source}: 'hex:' key is not valid hex") from None
    else:
        key = text.encode("utf-8")
    if len(key) < _MIN_KEY_BYTES:
        raise SigningKeyError(f"{source}: key is {len(key)} bytes; at least {_MIN_KEY_BYTES} are required")
    return key


def load_keys(config: Mapping[str, str]) -> dict[str, bytes]:
    """Key id -> key bytes from configuration text values (the service's verifying keys)."""
    return {key_id: parse_key(text, source=f"key {key_id!r}") for key_id, text in config.items()}


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs commands with one key. The key is never shown."""

    key_id: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) < _MIN_KEY_BYTES:
            raise SigningKeyError(f"key {self.key_id!r}: at least {_MIN_KEY_BYTES} bytes are required")
        try:
            _KEY_ID.validate_python(self.key_id)
        except ValidationError:
            raise SigningKeyError(f"key id {self.key_id!r} must be 1-64 of [A-Za-z0-9._-], starting with a "
                                  "letter or digit") from None

    def sign(self, command: Command) -> Command:
        """`command` as a signed record under this key: its wire JSON, keyed by its campaign id."""
        return Command.from_record(self.record(command.campaign_id.encode(), encode(command)))

    def record(self, key: bytes, value: bytes) -> SignedRecord:
        """The record with this key and value, signed (its headers: `SignedRecord.headers()`)."""
        return SignedRecord(key, value, self.key_id, sign_record(self.key, self.key_id, key, value))


def signer_from_env(key_id: str | None, key_env: str | None = None,
                    environ: Mapping[str, str] | None = None) -> Signer:
    """A signer whose key is in the environment variable `key_env` (default CAMPAIGN_FSM_SIGNING_KEY)."""
    env = os.environ if environ is None else environ
    variable = key_env or DEFAULT_KEY_ENV
    key_id = key_id or env.get(DEFAULT_KEY_ID_ENV)
    if not key_id:
        raise SigningKeyError(f"no key id: pass --key-id or set {DEFAULT_KEY_ID_ENV}")
    text = env.get(variable)
    if not text:
        raise SigningKeyError(f"no signing key: environment variable {variable} is not set or empty")
    return Signer(key_id, parse_key(text, source=f"environment variable {variable}"))
