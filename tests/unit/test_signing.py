"""The signer used by `send` and `schedule`, and key parsing: verified by the service's own authority."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from adapters.signing import (
    DEFAULT_KEY_ENV,
    DEFAULT_KEY_ID_ENV,
    Signer,
    SigningKeyError,
    load_keys,
    parse_key,
    signer_from_env,
)
from fsm.authorization import CommandAuthority
from schemas.base import encode
from schemas.commands import Command
from schemas.signed import SignedRecord, sign_record
from schemas.types import Action, ReasonCode

RAW = bytes(range(32))
NOW = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)


def command(**fields: object) -> Command:
    return Command(id=uuid.uuid4(), campaign_id="c-1", action=Action.START, requested_by="ops",
                   issued_at=NOW, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "base64:" + base64.b64encode(RAW).decode(),
        "base64:" + base64.urlsafe_b64encode(RAW).decode().rstrip("="),
        "hex:" + RAW.hex(),
        "hex:" + RAW.hex().upper(),
    ],
)
def test_parse_key_decodes_base64_and_hex(text: str) -> None:
    assert parse_key(text, source="test") == RAW


def test_parse_key_takes_other_text_as_utf8() -> None:
    assert parse_key("correct horse battery staple", source="t") == b"correct horse battery staple"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("short", "5 bytes; at least 16"),
        ("base64:!!!notbase64!!!", "not valid base64"),
        ("hex:xyz", "not valid hex"),
        ("hex:" + "ab" * 8 + "a", "not valid hex"),
        ("hex:" + "ab" * 15, "15 bytes"),
    ],
)
def test_parse_key_errors_name_the_source_never_the_key(text: str, message: str) -> None:
    with pytest.raises(SigningKeyError, match=message) as info:
        parse_key(text, source="environment variable K")
    assert str(info.value).startswith("environment variable K:")
    assert text.split(":")[-1] not in str(info.value)


def test_load_keys_maps_ids_to_bytes_and_names_the_bad_one() -> None:
    assert load_keys({"a": "hex:" + RAW.hex(), "b": "x" * 16}) == {"a": RAW, "b": b"x" * 16}
    with pytest.raises(SigningKeyError, match="key 'b'"):
        load_keys({"a": "hex:" + RAW.hex(), "b": "tiny"})


def test_signed_commands_pass_the_services_check_and_survive_the_wire() -> None:
    signer = Signer("ops-1", RAW)
    original = command()
    signed = signer.sign(original)
    record = signed.signed
    assert signed.key_id == "ops-1" and record is not None
    # What is produced is what was signed: the command's wire JSON, keyed by its campaign id.
    assert record.key == b"c-1" and record.value == encode(original)
    assert record.signature == sign_record(RAW, "ops-1", b"c-1", record.value)
    assert record.headers() == {"cfsm-key-id": "ops-1", "cfsm-signature": record.signature}
    # As the service reads it back off the topic: the bytes and headers only.
    on_the_wire = Command.from_record(SignedRecord.from_headers(
        record.key, record.value, [(k, v.encode()) for k, v in record.headers().items()]))
    authority = CommandAuthority({"ops-1": RAW})
    assert authority.check(on_the_wire, NOW.timestamp()).allowed


def test_signing_replaces_an_earlier_key_id_and_signature_and_leaves_the_original_alone() -> None:
    original = Signer("old", b"o" * 32).sign(command())
    resigned = Signer("new", RAW).sign(original)
    assert original.key_id == "old"
    assert resigned.key_id == "new" and resigned.signed != original.signed
    assert CommandAuthority({"new": RAW}).check(resigned, NOW.timestamp()).allowed
    assert CommandAuthority({"old": b"o" * 32}).check(resigned, NOW.timestamp()).reason is ReasonCode.BAD_SIGNATURE


def test_a_different_key_does_not_verify() -> None:
    signed = Signer("ops-1", b"z" * 32).sign(command())
    assert CommandAuthority({"ops-1": RAW}).check(signed, NOW.timestamp()).reason is ReasonCode.BAD_SIGNATURE


def test_signer_hides_its_key_and_checks_its_id() -> None:
    signer = Signer("ops-1", RAW)
    assert "ops-1" in repr(signer) and repr(RAW) not in repr(signer) and "key=" not in repr(signer)
    with pytest.raises(SigningKeyError, match="key id"):
        Signer("bad id/../", RAW)
    with pytest.raises(SigningKeyError, match="at least 16"):
        Signer("ops-1", b"short")


def test_signer_from_env_reads_the_named_variable() -> None:
    env = {"MY_KEY": "hex:" + RAW.hex(), DEFAULT_KEY_ID_ENV: "from-env"}
    signer = signer_from_env(None, "MY_KEY", env)
    assert (signer.key_id, signer.key) == ("from-env", RAW)
    assert signer_from_env("flag", "MY_KEY", env).key_id == "flag"
    assert signer_from_env("k", None, {DEFAULT_KEY_ENV: "y" * 20}).key == b"y" * 20


@pytest.mark.parametrize(
    ("key_id", "env", "message"),
    [
        (None, {DEFAULT_KEY_ENV: "y" * 20}, "no key id"),
        ("k", {}, f"{DEFAULT_KEY_ENV} is not set"),
        ("k", {DEFAULT_KEY_ENV: ""}, "is not set or empty"),
        ("k", {DEFAULT_KEY_ENV: "tiny-secret"}, "at least 16"),
    ],
)
def test_signer_from_env_errors_are_clear_and_secret_free(key_id: str | None, env: dict[str, str],
                                                          message: str) -> None:
    with pytest.raises(SigningKeyError, match=message) as info:
        signer_from_env(key_id, None, env)
    assert "tiny-secret" not in str(info.value)
