"""Configuration of `campaign-fsm run`, from environment variables and an optional file.

Precedence (highest first): environment (`CAMPAIGN_FSM_...`, nested with `__`, e.g.
`CAMPAIGN_FSM_PLATFORM__CLIENT_SECRET`), then the file given by `--config` or
`CAMPAIGN_FSM_CONFIG` (JSON or TOML), then the defaults below. Secrets are `SecretStr`: they never
appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from fsm.authorization import CommandAuthority, Policy, PolicyError
from fsm.backoff import Backoff
from fsm.campaign_cap import CapPolicy
from fsm.dialer_queue import DialerPolicy
from fsm.orchestrator import OrchestratorConfig
from fsm.preflight import PreflightPolicy
from fsm.windows import ToleranceWindows, WindowSpec
from schemas.commands import KeyId
from schemas.types import DialerType

from .kafka import KafkaSettings
from .service.http import HttpLimits
from .signing import load_keys

_KEY_ID: TypeAdapter[str] = TypeAdapter(KeyId)

__all__ = ["ConfigFileError", "KafkaSettings", "Settings", "load_settings"]

ENV_PREFIX = "CAMPAIGN_FSM_"
# Genesys help, "Limitations with outbound dialer": at most 50 voice campaigns run at once per organisation.
GENESYS_ACTIVE_CAMPAIGN_CAP = 50
CONFIG_ENV = "CAMPAIGN_FSM_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlatformSettings(_Section):
    profile: Literal["guide", "genesys"] = "guide"
    base_url: str | None = Field(default=None, description="e.g. http://127.0.0.1:8080 (the simulator)")
    region: str | None = Field(default=None, description="Genesys Cloud region, e.g. mypurecloud.ie: the API at "
                               "https://api.<region>, tokens from https://login.<region>")
    login_url: str | None = Field(default=None, description="where tokens come from (<login_url>/oauth/token). "
                                  "Default: genesys derives it from the API URL as its SDK does (api. -> login.), "
                                  "the guide uses the API URL; set it for test hosts and the simulator")
    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    read_limit_per_s: int = Field(default=10, ge=1, le=1000, description="guide: GETs per second for the tenant "
                                  "(only reads spend from the guide's budget)")
    request_limit: int = Field(default=300, ge=1, le=100_000, description="genesys: requests per "
                               "request_window_s per OAuth client, every method counted "
                               "(client.credentials.token.rate.per.minute)")
    request_window_s: float = Field(default=60.0, gt=0, le=3600, description="genesys: the budget's window")
    instances: int = Field(default=1, ge=1, description="instances sharing this OAuth client before the first "
                           "assignment; from then on each takes the share of its partitions of the commands topic")
    read_margin_s: float | None = Field(
        default=None, ge=0,
        description="extra time (clock seconds) past the platform's 1 s window before the read ten places "
                    "after an answered one is granted; covers clocks running at slightly different rates. "
                    "Default 0.05 s",
    )
    timeout_s: float = Field(default=10.0, gt=0)
    dialer_capacity: dict[str, int] = Field(default_factory=dict, description="genesys: licensed lines per dialer")
    genesys_status_via_put: bool = False
    notifications: bool = Field(default=True, description="follow the notification channel (else poll only)")
    max_channels: int = Field(
        default=0, ge=0, le=20,
        description="notification channels this instance may open. Genesys allows 20 per OAuth client and "
                    "silently removes the least recently used one when a 21st is created, so instances "
                    "sharing a client must stay within 20 together, each counting one more for the overlap "
                    "while a channel is renewed (there is no call to delete the old one). 0 (the default): "
                    "20 // instances - 1, at least 1",
    )

    @property
    def url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        if self.region:
            return f"https://api.{self.region.strip().strip('/')}"
        raise ValueError("platform.base_url or platform.region is required")

    @property
    def token_host(self) -> str | None:
        """The configured login URL; None lets the platform client derive it by profile."""
        return self.login_url.rstrip("/") if self.login_url else None

    def budget(self) -> tuple[int, float]:
        """The OAuth client's whole budget, (requests, window seconds), by profile."""
        if self.profile == "genesys":
            return self.request_limit, self.request_window_s
        return self.read_limit_per_s, 1.0


class WindowSettings(_Section):
    starting: float = Field(gt=0)
    pausing: float = Field(gt=0)
    stopping: float = Field(gt=0)


def _default_windows() -> dict[DialerType, WindowSettings]:
    from fsm.windows import DEFAULT_WINDOWS

    return {d: WindowSettings(starting=w.starting, pausing=w.pausing, stopping=w.stopping)
            for d, w in DEFAULT_WINDOWS.items()}


class DispatchSettings(_Section):
    max_in_flight_per_dialer: int = Field(default=2, ge=1)
    standard_spacing_s: float = Field(default=15.0, ge=0)
    capacity_ratio: float = Field(default=0.8, gt=0, le=1)
    deferral_ttl_s: float = Field(default=600.0, gt=0)
    poll_initial_s: float = Field(default=2.0, gt=0)
    poll_multiplier: float = Field(default=1.5, ge=1)
    poll_cap_s: float = Field(default=30.0, gt=0)
    poll_max_tries: int = Field(default=60, ge=1)
    poll_jitter: float = Field(default=0.2, ge=0, lt=1)
    safety_poll_s: float = Field(default=60.0, gt=0)
    preflight_fresh_for_s: float = Field(default=5.0, gt=0, description="at its POST, a command's contact-list "
                                         "and dialer-load facts are at most this old (read again if older)")
    not_before_horizon_s: float = Field(default=86_400.0, gt=0, description="how far ahead a command's "
                                        "notBefore may be (else REFUSED NOT_BEFORE_TOO_FAR)")
    max_scheduled_per_campaign: int = Field(default=16, ge=1, description="commands waiting for their notBefore "
                                            "per campaign (else REFUSED TOO_MANY_WAITING)")
    active_campaign_cap: int | None = Field(
        default=None, ge=0,
        description="campaigns the organisation may run at once: a start or resume past it is DEFERRED "
                    "ACTIVE_CAMPAIGN_CAP until a place frees. Default: 50 on genesys (its voice-campaign limit), "
                    "none on guide; 0 turns the gate off")
    active_campaign_ttl_s: float = Field(
        default=15.0, gt=0, description="how long one read of the organisation's campaigns (one GET per 100) "
                                        "is reused to count the active ones")


class AuthSettings(_Section):
    """Who may command a campaign. No keys: commands are not authenticated (a warning at start)."""

    keys: dict[str, SecretStr] = Field(default_factory=dict, description="key id -> shared HMAC key "
                                       "(base64:..., hex:... or text, >= 16 bytes)")
    policy: dict[str, Any] | None = Field(default=None, description="principal -> {campaigns, dialers, "
                                          "actions, keys} patterns")
    require_signature: bool = True
    max_age_s: float = Field(default=300.0, gt=0)
    future_skew_s: float = Field(default=30.0, ge=0)


_DEFAULT_HTTP_LIMITS = HttpLimits()


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=0, le=65535)
    max_connections: int = Field(
        default=_DEFAULT_HTTP_LIMITS.max_connections, ge=1,
        description="Connections open at once; one more is reset the moment it is accepted, so a flood of "
                    "sockets cannot use up the process's file descriptors.")
    request_timeout_s: float = Field(
        default=_DEFAULT_HTTP_LIMITS.request_timeout_s, gt=0,
        description="A request (head and body) must arrive whole within this many seconds of its first byte "
                    "(of the connection, for the first request), or the connection is closed.")
    keep_alive_timeout_s: float = Field(
        default=_DEFAULT_HTTP_LIMITS.keep_alive_timeout_s, gt=0,
        description="A connection idle this many seconds between requests is closed.")
    max_body_bytes: int = Field(
        default=_DEFAULT_HTTP_LIMITS.max_body_bytes, ge=0,
        description="Largest request body: a longer declared one is answered 400, a longer chunked one "
                    "closes the connection. The request head is limited to 16 KiB.")

    def limits(self) -> HttpLimits:
        return HttpLimits(max_connections=self.max_connections, request_timeout_s=self.request_timeout_s,
                          keep_alive_timeout_s=self.keep_alive_timeout_s, max_body_bytes=self.max_body_bytes)


class Settings(BaseSettings):
    """Everything `campaign-fsm run` needs. See docs/configuration.md for each field."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    platform: PlatformSettings = Field(default_factory=PlatformSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    windows: dict[DialerType, WindowSettings] = Field(default_factory=_default_windows)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    outbox_path: str = Field(default="campaign-fsm-outbox.sqlite3")
    time_scale: float = Field(default=1.0, gt=0, description="run clock time faster (simulations only)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("windows", mode="before")
    @classmethod
    def _merge_windows(cls, value: Any) -> Any:
        """One value may be set alone (CAMPAIGN_FSM_WINDOWS__PREDICTIVE__STOPPING=240): given
        values go over the defaults, and dialer types match whatever their case."""
        if not isinstance(value, dict):
            return value
        merged = {d.value: {"starting": w.starting, "pausing": w.pausing, "stopping": w.stopping}
                  for d, w in _default_windows().items()}
        for key, given in value.items():
            name = str(key).upper()
            if name not in merged:
                merged[name] = given  # an unknown dialer type: let validation name it
            elif isinstance(given, dict):
                merged[name] = {**merged[name], **{str(k).lower(): v for k, v in given.items()}}
            else:
                merged[name] = given
        return merged

    @field_validator("windows")
    @classmethod
    def _every_dialer_type(cls, value: dict[DialerType, WindowSettings]) -> dict[DialerType, WindowSettings]:
        missing = [d.value for d in DialerType if d not in value]
        if missing:
            raise ValueError(f"tolerance windows missing for dialer types: {', '.join(missing)}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file comes in as init kwargs (see load_settings); the environment overrides it.
        return env_settings, init_settings

    # --- translations into the core's policies -------------------------------------------------

    def request_share(self) -> int:
        """This instance's share of the OAuth client's budget until its first assignment says better."""
        return max(1, self.platform.budget()[0] // self.platform.instances)

    def notification_channels(self) -> int:
        """This instance's share of the 20 notification channels per OAuth client: instances x
        (channels + 1) <= 20, the one more being a channel renewed before its 24 h end, which stays
        on the platform (no delete call exists) until it expires."""
        if self.platform.max_channels:
            return self.platform.max_channels
        return max(1, 20 // self.platform.instances - 1)

    def read_margin(self) -> float:
        """Delays between our grant and the platform's count need no slack: the budget counts a request
        from its answer (see fsm/request_budget.py), whatever the time scale."""
        return 0.05 if self.platform.read_margin_s is None else self.platform.read_margin_s

    def command_authority(self) -> CommandAuthority | None:
        """The verifier of signed commands, or None when no key is configured."""
        if not self.auth.keys:
            return None
        # A key id no command could carry (schemas.commands.KeyId) is a configuration mistake. Said
        # here rather than in a field validator: a validation error would quote the keys themselves.
        bad = sorted(key_id for key_id in self.auth.keys if not _valid_key_id(key_id))
        if bad:
            raise PolicyError(f"auth.keys: key id(s) {bad} are not valid: letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit, at most 64 characters")
        keys = load_keys({k: v.get_secret_value() for k, v in self.auth.keys.items()})
        policy = Policy.from_config(self.auth.policy) if self.auth.policy else None
        return CommandAuthority(keys, policy, max_age_s=self.auth.max_age_s, future_skew_s=self.auth.future_skew_s,
                                require_signature=self.auth.require_signature)

    def tolerance_windows(self) -> ToleranceWindows:
        return ToleranceWindows({d: WindowSpec(w.starting, w.pausing, w.stopping) for d, w in self.windows.items()})

    def orchestrator_config(self) -> OrchestratorConfig:
        d = self.dispatch
        return OrchestratorConfig(
            poll=Backoff(d.poll_initial_s, d.poll_multiplier, d.poll_cap_s, d.poll_max_tries, d.poll_jitter),
            preflight=PreflightPolicy(capacity_ratio=d.capacity_ratio, deferral_ttl=d.deferral_ttl_s),
            dialer=DialerPolicy(d.max_in_flight_per_dialer, d.standard_spacing_s),
            safety_poll=d.safety_poll_s,
            preflight_fresh_for=d.preflight_fresh_for_s,
            not_before_horizon=d.not_before_horizon_s,
            max_scheduled=d.max_scheduled_per_campaign,
            cap=CapPolicy(self.active_campaign_cap(), d.active_campaign_ttl_s, instances=self.platform.instances),
        )

    def active_campaign_cap(self) -> int | None:
        """The cap in force: as configured (0: none), else the profile's own (genesys 50, guide none)."""
        configured = self.dispatch.active_campaign_cap
        if configured is None:
            return GENESYS_ACTIVE_CAMPAIGN_CAP if self.platform.profile == "genesys" else None
        return configured or None


class ConfigFileError(ValueError):
    """The configuration (file or environment) is unusable. The message says exactly what is wrong."""


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigFileError(f"cannot read configuration file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigFileError(f"{path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path} must hold an object at the top level")
    return data


def load_settings(path: str | Path | None = None) -> Settings:
    """Settings from the file (or $CAMPAIGN_FSM_CONFIG) and the environment, or a ConfigFileError."""
    file = path or os.environ.get(CONFIG_ENV)
    data = _read_file(Path(file)) if file else {}
    try:
        settings = Settings(**data)
        settings.tolerance_windows()
        settings.orchestrator_config()
        settings.command_authority()
        return settings
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {where}: {err['msg']}")
        raise ConfigFileError("invalid configuration:\n" + "\n".join(lines)) from None
    except ValueError as exc:
        raise ConfigFileError(f"invalid configuration: {exc}") from None


def _valid_key_id(key_id: str) -> bool:
    try:
        _KEY_ID.validate_python(key_id)
    except ValidationError:
        return False
    return True
