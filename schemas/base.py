"""Shared pydantic configuration and the one parsing error every message type raises.

Messages on the wire use camelCase; Python code uses snake_case. Inbound messages from our own
producers are parsed strictly (unknown fields refused), payloads from the platform tolerantly
(the platform is the truth and may grow fields we have not seen yet).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Self, TypeVar

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    GetJsonSchemaHandler,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

__all__ = [
    "TIMESTAMP_PATTERN",
    "ContractError",
    "OmittedWhenUnset",
    "PlatformModel",
    "StrictModel",
    "Timestamp",
    "decode",
    "encode",
    "stamp",
    "truncate_text",
]

M = TypeVar("M", bound=BaseModel)

# A contract error renders at most this many of its errors, each part cut to these lengths: a
# record with 40,000 unknown fields (or one field name of a megabyte) must not become a megabyte
# of log line, dead-letter header or result message. At most about 1,600 characters in all.
CONTRACT_ERRORS_SHOWN = 5
_FIELD_CHARS = 100
_REASON_CHARS = 200
_MARKER_RESERVE = 48  # room for the longest marker truncate_text writes


def truncate_text(text: str, limit: int) -> str:
    """`text` itself if it has at most `limit` characters; otherwise its head and a marker saying
    how long it was ("… [truncated, 1589400 characters in all]"), `limit` characters in all.

    The one bound every outgoing text goes through, so the marker reads the same everywhere.
    """
    if limit < _MARKER_RESERVE:
        raise ValueError(f"limit must be at least {_MARKER_RESERVE} characters, got {limit}")
    if len(text) <= limit:
        return text
    marker = f"… [truncated, {len(text)} characters in all]"
    return text[: limit - len(marker)] + marker


class StrictModel(BaseModel):
    """Our own messages: unknown fields are an error, values keep their declared types."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,  # a number is not a timestamp and 5 is not a priority
    )


# Every instant we write: RFC 3339, UTC, milliseconds, `Z` (what JavaScript's toISOString() gives).
TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"


def stamp(value: datetime) -> str:
    """`value` in the one timestamp format we write (TIMESTAMP_PATTERN); milliseconds are cut, not rounded."""
    utc = value.astimezone(UTC)
    return f"{utc.strftime('%Y-%m-%dT%H:%M:%S')}.{utc.microsecond // 1000:03d}Z"


class _TimestampSchema:
    """The published schema says the format we write, not only `date-time`."""

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        out = handler(schema)
        out["pattern"] = TIMESTAMP_PATTERN
        return out


# An instant in our output. Parsing stays tolerant (records written before the format was fixed
# still parse); serialising always gives TIMESTAMP_PATTERN.
Timestamp = Annotated[AwareDatetime, PlainSerializer(stamp, return_type=str, when_used="json"), _TimestampSchema()]


def _without_null(prop: dict[str, Any]) -> None:
    branches = prop.get("anyOf")
    if isinstance(branches, list):
        kept = [b for b in branches if b != {"type": "null"}]
        del prop["anyOf"]
        if len(kept) == 1:
            prop.update(kept[0])
        else:
            prop["anyOf"] = kept
    if "default" in prop and prop["default"] is None:
        del prop["default"]


def _absent_not_null_schema(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    properties = schema.get("properties", {})
    for name, info in cls.model_fields.items():
        prop = properties.get(info.alias or name)
        if prop is not None and not info.is_required():
            _without_null(prop)


class OmittedWhenUnset(StrictModel):
    """A message whose optional fields are absent when they have no value, never null (what
    `encode` writes): an explicit null on the wire is refused, and the JSON Schema has no null for
    them. A required field may still be nullable (an event's `from`). Built in Python, None stays
    the way to say "absent"."""

    model_config = ConfigDict(json_schema_extra=_absent_not_null_schema)

    # After the fields, from what was set: a field validator (before or wrap) would make strict
    # models refuse JSON strings for datetimes, which they take only while the input is still JSON.
    @model_validator(mode="after")
    def _no_null(self, info: ValidationInfo) -> Self:
        if info.mode == "json":
            fields = type(self).model_fields
            nulls = [fields[n].alias or n for n in sorted(self.model_fields_set)
                     if getattr(self, n) is None and not fields[n].is_required()]
            if nulls:
                raise ValueError(f"{', '.join(nulls)}: must be left out when there is no value, never null")
        return self


class PlatformModel(BaseModel):
    """A platform payload: unknown fields are ignored, never fatal."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class ContractError(ValueError):
    """A message that does not fit its schema. `errors` names each bad field by its wire path.

    The text names the first `CONTRACT_ERRORS_SHOWN` errors and counts the rest, so it stays short
    however hostile the input; `errors` keeps every one.
    """

    def __init__(self, model: str, errors: list[dict[str, str]]) -> None:
        self.model = model
        self.errors = errors
        shown = [f"{truncate_text(e['field'], _FIELD_CHARS)}: {truncate_text(e['message'], _REASON_CHARS)}"
                 for e in errors[:CONTRACT_ERRORS_SHOWN]]
        if len(errors) > CONTRACT_ERRORS_SHOWN:
            shown.append(f"and {len(errors) - CONTRACT_ERRORS_SHOWN} more")
        super().__init__(f"invalid {model}: {'; '.join(shown)}")

    @classmethod
    def from_validation(cls, model: str, exc: ValidationError) -> ContractError:
        errors = []
        for err in exc.errors(include_url=False, include_input=False):
            # Unknown field names are the sender's text: bounded here too, for whoever reads `errors`.
            field = truncate_text(".".join(str(p) for p in err["loc"]) or "(message)", _FIELD_CHARS)
            message = err["msg"]
            if err["type"] == "json_invalid":
                message = f"not JSON: {message}"
            elif err["type"] == "model_type":
                message = "expected a JSON object"
            errors.append({"field": field, "message": message, "type": err["type"]})
        return cls(model, errors)


def decode(model: type[M], raw: bytes | str) -> M:
    """Parse bytes into `model`, or raise ContractError naming the bad fields. Never anything else.

    Parsing goes straight from JSON (pydantic's own parser), so strict models still take RFC 3339
    strings for datetimes and UUIDs, as JSON has no other way to carry them.
    """
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise ContractError.from_validation(model.__name__, exc) from None
    except (UnicodeDecodeError, ValueError) as exc:  # bytes that are not text at all
        raise ContractError(model.__name__, [{"field": "(message)", "message": f"not JSON: {exc}",
                                             "type": "json_invalid"}]) from None


def encode(message: BaseModel) -> bytes:
    """Serialise with wire names; None fields are omitted so consumers see only what is set."""
    return orjson.dumps(message.model_dump(mode="json", by_alias=True, exclude_none=True))
