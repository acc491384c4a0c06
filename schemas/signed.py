"""The signed record: what a command's signature covers, and the headers that carry it.

The rule (docs/signing.md, the one place it is written for producers): a command is the value of
one record on the commands topic, keyed by its `campaignId`, and signed with two record headers,

- ``cfsm-key-id``: the id of the shared key (1-64 of ``[A-Za-z0-9._-]``),
- ``cfsm-signature``: 64 hex digits, HMAC-SHA256 under that key over the bytes
  ``keyId + "\\n" + recordKey + "\\n" + value``, the value exactly as sent.

The signature covers bytes the producer controls, never a re-serialisation: any JSON the contract
accepts (milliseconds or not, ``Z`` or ``+00:00``, an upper-case id, any key order) verifies as
sent. The key id is bound in (a signature cannot be re-labelled as another key's, which the policy
would judge differently), and so is the record key, so a signature cannot be moved to another
campaign; neither a key id nor a campaign id can hold a newline, so the message is unambiguous.

`SignedRecord` is those bytes and headers as they came. A `Command` parsed from one keeps it
(`Command.from_record`, `Command.signed`), so the core verifies the producer's bytes and a held
command stored on `campaign.state` can be verified again after a restart (`StoredCommand`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["EXAMPLE", "KEY_ID_HEADER", "SIGNATURE_HEADER", "SignedRecord", "sign_record", "signed_message"]

KEY_ID_HEADER = "cfsm-key-id"
SIGNATURE_HEADER = "cfsm-signature"

# The worked example of docs/signing.md (and of the AsyncAPI document); a unit test checks its hex.
EXAMPLE = {
    "key": "example-key-0123456789abcdef",  # the key text; configured as is, its UTF-8 bytes are the key
    "keyId": "ops-1",
    "recordKey": "campaign-7",
    "value": '{"id":"5B0C3A4E-3F1D-4F7E-9A51-0C2D6F3B9E10","campaignId":"campaign-7","action":"pause",'
             '"priority":"HIGH","requestedBy":"shift-planner","issuedAt":"2024-05-01T09:30:12.000Z"}',
    "signature": "",  # filled in below, from the rule itself; the test pins the literal
}


def signed_message(key_id: str, record_key: bytes, value: bytes) -> bytes:
    """The bytes the HMAC covers: ``keyId \\n recordKey \\n value``."""
    return key_id.encode("utf-8") + b"\n" + record_key + b"\n" + value


def sign_record(key: bytes, key_id: str, record_key: bytes, value: bytes) -> str:
    """The `cfsm-signature` of a record: HMAC-SHA256 of `signed_message`, 64 lowercase hex digits."""
    return hmac.new(key, signed_message(key_id, record_key, value), hashlib.sha256).hexdigest()


EXAMPLE["signature"] = sign_record(EXAMPLE["key"].encode(), EXAMPLE["keyId"], EXAMPLE["recordKey"].encode(),
                                   EXAMPLE["value"].encode())


@dataclass(frozen=True, slots=True)
class SignedRecord:
    """One commands-topic record as it came: key and value bytes, the signing headers as text.

    `problem` names headers that cannot be used (repeated, or not UTF-8): such a record is refused
    BAD_SIGNATURE, whatever else it carries.
    """

    key: bytes | None
    value: bytes = field(repr=False)
    key_id: str | None = None
    signature: str | None = None
    problem: str | None = None

    @classmethod
    def from_headers(cls, key: bytes | None, value: bytes,
                     headers: Iterable[tuple[str, bytes]]) -> SignedRecord:
        """Read the signing headers of a record (others are ignored)."""
        found: dict[str, list[bytes]] = {KEY_ID_HEADER: [], SIGNATURE_HEADER: []}
        for name, raw in headers:
            if name in found:
                found[name].append(raw)
        texts: dict[str, str | None] = {}
        problem = None
        for name, values in found.items():
            if len(values) > 1:
                problem = f"header {name} appears {len(values)} times; exactly one is allowed"
            try:
                texts[name] = values[-1].decode("utf-8") if values else None
            except UnicodeDecodeError:
                texts[name] = None
                problem = problem or f"header {name} is not UTF-8"
        return cls(key, value, texts[KEY_ID_HEADER], texts[SIGNATURE_HEADER], problem)

    @property
    def has_signing_headers(self) -> bool:
        """Whether it carries any signing header at all (an unsigned record carries neither)."""
        return self.key_id is not None or self.signature is not None or self.problem is not None

    def message(self) -> bytes:
        """What the signature covers (`signed_message`); needs a key id."""
        assert self.key_id is not None
        return signed_message(self.key_id, self.key or b"", self.value)

    def headers(self) -> dict[str, str]:
        """The signing headers to produce the record with."""
        out: dict[str, str] = {}
        if self.key_id is not None:
            out[KEY_ID_HEADER] = self.key_id
        if self.signature is not None:
            out[SIGNATURE_HEADER] = self.signature
        return out
