"""`KafkaConfig`: everything the Kafka edge needs, and `KafkaSecurity`, its TLS/SASL part.

Secrets: `KafkaSecurity.password` never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from aiokafka.helpers import create_ssl_context

from .topics import TopicNames

__all__ = ["KafkaConfig", "KafkaSecurity", "SaslMechanism", "SecurityProtocol"]

_ADDRESS = re.compile(r"^[^\s:,]+:\d{1,5}$")

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """TLS/SASL settings passed through to every aiokafka client. The password is never shown."""

    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        if self.security_protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ValueError(f"unknown security_protocol {self.security_protocol!r}")
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
                raise ValueError(
                    f"{self.security_protocol} needs sasl_mechanism PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                )
            if not self.username or not self.password:
                raise ValueError(f"{self.security_protocol} needs a username and a password")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together")

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name != "password"
        )
        return f"KafkaSecurity({shown}, password={'***' if self.password else None})"

    def client_kwargs(self) -> dict[str, Any]:
        """The aiokafka keyword arguments for these settings."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        if self.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.username
            kwargs["sasl_plain_password"] = self.password
        return kwargs


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """Everything the Kafka edge needs. Defaults suit real Kafka; brokers.py supplies emulator quirks.

    `fetch_max_wait_ms` is how long a fetch may wait on the broker for new data: tansu does not
    wake a waiting fetch when data arrives, so it needs ~20 ms there or every command waits 500 ms.
    `max_request_size` is the producer's limit on one record (aiokafka's default, 1 MiB); a record
    over it is refused before anything of its batch is sent (`ProduceFailed.refused`).
    """

    bootstrap: str
    topics: TopicNames = field(default_factory=TopicNames)
    group_id: str = "campaign-fsm"
    client_id: str = "campaign-fsm"
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    enable_idempotence: bool = True
    linger_ms: int = 0
    request_timeout_ms: int = 30_000
    fetch_max_wait_ms: int = 500
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    max_request_size: int = 1_048_576
    partitions: int = 6
    replication_factor: int = 1

    def __post_init__(self) -> None:
        addresses = [a.strip() for a in self.bootstrap.split(",")]
        if not self.bootstrap.strip() or not all(_ADDRESS.match(a) for a in addresses):
            raise ValueError(f"bootstrap must be host:port[,host:port], got {self.bootstrap!r}")
        for name in ("request_timeout_ms", "session_timeout_ms", "heartbeat_interval_ms",
                     "max_poll_interval_ms", "max_request_size", "partitions", "replication_factor"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("linger_ms", "fetch_max_wait_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.group_id:
            raise ValueError("group_id must not be empty")

    def client_kwargs(self) -> dict[str, Any]:
        """Settings shared by every aiokafka client built from this config."""
        return {
            "bootstrap_servers": self.bootstrap,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            **self.security.client_kwargs(),
        }
