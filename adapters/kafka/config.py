"""`KafkaSettings`: everything the Kafka edge needs, TLS/SASL included.

One model for both sides: it is the `kafka` section of the service's settings (so
docs/configuration.md is generated from it) and what every client of this package is built from.
Secrets: `sasl_password` is a `SecretStr`; it never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from aiokafka.helpers import create_ssl_context
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from .topics import TopicNames

__all__ = ["KafkaSettings", "SaslMechanism", "SecurityProtocol", "problem"]

_ADDRESS = re.compile(r"^[^\s:,]+:\d{1,5}$")

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(BaseModel):
    """Everything the Kafka edge needs. Defaults suit real Kafka; brokers.py supplies emulator quirks.

    `fetch_max_wait_ms` is how long a fetch may wait on the broker for new data: tansu does not
    wake a waiting fetch when data arrives, so it needs ~20 ms there or every command waits 500 ms.
    `max_request_size` is the producer's limit on one record (aiokafka's default, 1 MiB); a record
    over it is refused before anything of its batch is sent (`ProduceFailed.refused`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap: str = "127.0.0.1:9092"
    group_id: str = Field(default="campaign-fsm", min_length=1)
    client_id: str = "campaign-fsm"
    # 12, the service's documented default: room for up to 12 instances (docs/scale-out.md). Tests,
    # the demo and the benches ask for their own count.
    partitions: int = Field(default=12, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    enable_idempotence: bool = True
    linger_ms: int = Field(default=0, ge=0)
    request_timeout_ms: int = Field(default=30_000, ge=1)
    fetch_max_wait_ms: int = Field(default=500, ge=1)
    session_timeout_ms: int = Field(default=10_000, ge=1)
    heartbeat_interval_ms: int = Field(default=3_000, ge=1)
    max_poll_interval_ms: int = Field(default=300_000, ge=1)
    max_request_size: int = Field(default=1_048_576, ge=1)
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    topics: TopicNames = Field(default_factory=TopicNames)

    @field_validator("bootstrap")
    @classmethod
    def _addresses(cls, value: str) -> str:
        addresses = [a.strip() for a in value.split(",")]
        if not value.strip() or not all(_ADDRESS.match(a) for a in addresses):
            raise ValueError(f"bootstrap must be host:port[,host:port], got {value!r}")
        return value

    @model_validator(mode="after")
    def _security_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism (PLAIN, SCRAM-SHA-256 "
                             "or SCRAM-SHA-512), and a username and a password (sasl_username, sasl_password)")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        return self

    def but(self, **changes: Any) -> KafkaSettings:
        """These settings with `changes` on top, validated again."""
        if not changes:
            return self
        return KafkaSettings.model_validate({**dict(self), **changes})

    def client_kwargs(self) -> dict[str, Any]:
        """The aiokafka keyword arguments shared by every client built from these settings."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        if self.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        return kwargs


def problem(exc: ValueError) -> str:
    """What is wrong with Kafka settings (or topic names), in one line: a pydantic error's own text
    spans several lines and ends in a URL, which a command line must not print."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        where = ".".join(str(p) for p in error["loc"])
        parts.append(message if not where or where in message else f"{where}: {message}")
    return "; ".join(parts)
