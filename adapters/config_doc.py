"""The configuration reference, `docs/configuration.md`, generated from the `Settings` model.

Every setting of `campaign-fsm run` is a field of `adapters.settings.Settings`; this module walks the
model and writes one table row per field: its key in a configuration file, its environment variable,
its type and constraints, its default, whether it is a secret, and what it does. A field's
description comes from the model (`Field(description=...)`) and from `_DESCRIPTIONS` below (which
leads when both have one); a test fails when a field has neither, when `_DESCRIPTIONS` names a field that no longer
exists, and when the committed file differs from what this module renders, so the reference
cannot go stale. Defaults are read from the model, never from the environment of whoever renders.
"""

from __future__ import annotations

import enum
import json
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .cli.send import BOOTSTRAP_ENV, PRINCIPAL_ENV
from .settings import CONFIG_ENV, ENV_PREFIX, Settings
from .signing import DEFAULT_KEY_ENV, DEFAULT_KEY_ID_ENV

__all__ = [
    "CONFIG_DOC",
    "EXAMPLE_CONFIG",
    "ConfigRow",
    "config_rows",
    "described_paths",
    "example_secrets_env",
    "example_with_secrets",
    "render_configuration_doc",
]

CONFIG_DOC = "configuration.md"

# Descriptions of fields whose model declares none. Keys are file paths; `*` stands for a mapping key.
_DESCRIPTIONS: dict[str, str] = {
    "platform.profile": "Which platform API to speak: `guide` (the design guide's API) or `genesys` "
                        "(Genesys Cloud). See docs/platform-profiles.md.",
    "platform.base_url": "Base URL of the platform API; when set, `region` is ignored.",
    "platform.region": "Genesys Cloud region: the API is `https://api.<region>`. One of `base_url` and "
                       "`region` is required.",
    "platform.client_id": "OAuth client id (client-credentials grant).",
    "platform.client_secret": "OAuth client secret. Never logged, never shown in errors.",
    "platform.timeout_s": "Timeout of one platform HTTP request, seconds.",
    "platform.genesys_status_via_put": "genesys: change a campaign by `PUT` of its `campaignStatus` (with "
                                       "`version`) instead of the `/start` and `/stop` routes.",
    "kafka.bootstrap": "Kafka bootstrap servers, `host:port[,host:port...]`.",
    "kafka.group_id": "Consumer group of the commands topic; instances in one group share its partitions.",
    "kafka.client_id": "Client id the service shows to the brokers.",
    "kafka.partitions": "Partitions of the topics the service creates when they do not exist "
                        "(the dead-letter topic gets one).",
    "kafka.replication_factor": "Replication factor of the topics the service creates.",
    "kafka.enable_idempotence": "Idempotent producer (set false for brokers without InitProducerId, e.g. tansu).",
    "kafka.fetch_max_wait_ms": "Longest a fetch waits on the broker for new commands, ms.",
    "kafka.session_timeout_ms": "Consumer group session timeout, ms: how soon a dead instance's partitions move.",
    "kafka.heartbeat_interval_ms": "Consumer group heartbeat interval, ms.",
    "kafka.max_poll_interval_ms": "Longest the service may go between two fetches of commands before the group "
                                  "gives its partitions to another instance, ms.",
    "kafka.linger_ms": "How long the producer waits to batch records before sending, ms (0: at once).",
    "kafka.request_timeout_ms": "Timeout of one request to a broker, ms.",
    "kafka.max_request_size": "Largest record the producer sends, bytes; a larger one is refused and a stand-in "
                              "goes to the dead-letter topic instead.",
    "kafka.security_protocol": "How to reach the brokers: plain, TLS, SASL, or SASL over TLS.",
    "kafka.sasl_mechanism": "SASL mechanism; required with a SASL security protocol.",
    "kafka.sasl_username": "SASL user; required with a SASL security protocol.",
    "kafka.sasl_password": "SASL password; required with a SASL security protocol. Never logged.",
    "kafka.ssl_cafile": "CA bundle (PEM) to verify the brokers, for SSL and SASL_SSL.",
    "kafka.ssl_certfile": "Client certificate (PEM) for mutual TLS.",
    "kafka.ssl_keyfile": "Client private key (PEM) for mutual TLS.",
    "kafka.topics.commands": "Topic the commands are consumed from.",
    "kafka.topics.results": "Topic every command result is published to.",
    "kafka.topics.events": "Topic every CampaignStateChanged event is published to (the audit log).",
    "kafka.topics.state": "Compacted topic of each campaign's latest state (restored on start-up).",
    "kafka.topics.dead_letters": "Topic for command records that name no usable command or campaign.",
    "windows": "Tolerance windows per dialer type: how long a campaign may stay STARTING, PAUSING or "
               "STOPPING before the platform's errors and the contact list are examined. Values given "
               "go over the defaults, so one may be set alone (e.g. "
               "CAMPAIGN_FSM_WINDOWS__PREDICTIVE__STOPPING=240); dialer types match in any case.",
    "windows.*.starting": "Seconds a campaign of this dialer type may stay STARTING.",
    "windows.*.pausing": "Seconds a campaign of this dialer type may stay PAUSING.",
    "windows.*.stopping": "Seconds a campaign of this dialer type may stay STOPPING.",
    "dispatch.max_in_flight_per_dialer": "Transitions in flight at once per dialer instance (the guide: two).",
    "dispatch.standard_spacing_s": "Spacing between STANDARD commands on one dialer, seconds (HIGH goes at once).",
    "dispatch.capacity_ratio": "Share of licensed capacity in active calls above which STANDARD commands are "
                               "deferred (DIALER_OVER_CAPACITY).",
    "dispatch.deferral_ttl_s": "A command deferred longer than this is REFUSED (DEFERRAL_EXPIRED), seconds.",
    "dispatch.poll_initial_s": "First fallback poll delay, seconds.",
    "dispatch.poll_multiplier": "Growth of the fallback poll delay per try.",
    "dispatch.poll_cap_s": "Largest fallback poll delay, seconds.",
    "dispatch.poll_max_tries": "Fallback polls per transition before it is judged.",
    "dispatch.poll_jitter": "Random spread applied to every poll interval (0.2 = ±20 %).",
    "dispatch.safety_poll_s": "While notifications are up, a tracked campaign is still read about this often "
                              "(jittered), in case a notification was dropped, seconds.",
    "auth.keys": "Keys that sign commands, by key id; a command record names its key in the header "
                 "`cfsm-key-id` (docs/signing.md).",
    "auth.policy": "Who may command what; no policy lets every authenticated command through.",
    "auth.require_signature": "Refuse commands without a signature (UNSIGNED) when keys are configured.",
    "auth.max_age_s": "A command issued longer ago than this is REFUSED (STALE_COMMAND); command ids are "
                      "remembered this long against replays (REPLAYED), seconds.",
    "auth.future_skew_s": "A command issued further ahead of the service's clock than this is REFUSED "
                          "(STALE_COMMAND), seconds.",
    "http.host": "Address of the operator endpoint (`/healthz`, `/readyz`, `/metrics`).",
    "http.port": "Port of the operator endpoint (0: any free port).",
    "outbox_path": "SQLite file of the durable local outbox: events, results and state records are kept there "
                   "until the broker acknowledges them. One instance per file.",
    "log_level": "Level of the JSON log lines on stderr.",
}

# A complete, valid configuration file for the reference's example (validated on every render).
EXAMPLE_CONFIG: dict[str, Any] = {
    "platform": {
        "profile": "genesys",
        "region": "mypurecloud.ie",
        "client_id": "3f0c8a52-campaign-fsm",
        "read_limit_per_s": 10,
        "dialer_capacity": {"edge-group-eu-1": 240},
    },
    "kafka": {
        "bootstrap": "kafka-1.internal:9093,kafka-2.internal:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "campaign-fsm",
        "ssl_cafile": "/etc/campaign-fsm/ca.pem",
        "replication_factor": 3,
        "topics": {"events": "prod.campaign.events"},
    },
    "dispatch": {"deferral_ttl_s": 900},
    "auth": {"policy": {"shift-planner": {"campaigns": ["*"], "actions": ["start", "stop"], "keys": ["planner-*"]},
                        "ops-*": {"campaigns": ["*"]}}},
    "http": {"host": "0.0.0.0", "port": 8081},
    "outbox_path": "/var/lib/campaign-fsm/outbox.sqlite3",
}
# Secrets of the example, given through the environment rather than the file.
_EXAMPLE_SECRETS: dict[str, Any] = {
    "platform.client_secret": "change-me",
    "kafka.sasl_password": "change-me",
    "auth.keys": {"planner-2024": "replace-me-with-a-random-32-byte-key"},
}


@dataclass(frozen=True, slots=True)
class ConfigRow:
    """One setting: where it is written, how it is typed and what it does."""

    path: str  # dotted key in a configuration file
    env: str | None  # environment variable, None when only a file (or the whole-mapping variable) sets it
    type: str
    default: str
    secret: bool
    description: str


def config_rows() -> list[ConfigRow]:
    """One row per setting, in the model's order."""
    return list(_walk(Settings, ()))


def _walk(model: type[BaseModel], prefix: tuple[str, ...], *, env: bool = True,
          defaults: BaseModel | None = None) -> Iterator[ConfigRow]:
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        annotation = info.annotation
        default = getattr(defaults, name) if defaults is not None else _default(info)
        section = _model_of(annotation)
        if section is not None:
            yield from _walk(section, path, env=env, defaults=default if isinstance(default, BaseModel) else None)
            continue
        yield _row(path, info, default, env=env)
        mapping = _mapping_of(annotation)
        if mapping is not None and isinstance(default, dict):
            key_type, value_model = mapping
            for key in _keys(key_type, default):
                value = default.get(key)
                yield from _walk(value_model, (*path, str(getattr(key, "value", key))), env=False,
                                 defaults=value if isinstance(value, BaseModel) else None)


def _row(path: tuple[str, ...], info: FieldInfo, default: Any, *, env: bool) -> ConfigRow:
    dotted = ".".join(path)
    return ConfigRow(
        path=dotted,
        env=ENV_PREFIX + "__".join(path).upper() if env else None,
        type=_type_text(info.annotation) + _constraints(info),
        default=_default_text(default),
        secret=_is_secret(info.annotation),
        description=" ".join(t for t in (_fallback(path), info.description) if t),
    )


def _fallback(path: tuple[str, ...]) -> str | None:
    """`_DESCRIPTIONS` entry for `path`, where a `*` matches any mapping key."""
    for key, text in _DESCRIPTIONS.items():
        parts = key.split(".")
        if len(parts) == len(path) and all(p in ("*", q) for p, q in zip(parts, path, strict=True)):
            return text
    return None


def described_paths() -> set[str]:
    """The `_DESCRIPTIONS` keys (a test checks each still names a field)."""
    return set(_DESCRIPTIONS)


# --- reading the model ---------------------------------------------------------------------------

_REQUIRED = object()


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    if info.default is PydanticUndefined:
        return _REQUIRED
    return info.default


def _non_null(annotation: Any) -> list[Any]:
    if get_origin(annotation) in (Union, types.UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    inner = _non_null(annotation)
    if len(inner) == 1 and isinstance(inner[0], type) and issubclass(inner[0], BaseModel):
        return inner[0]
    return None


def _mapping_of(annotation: Any) -> tuple[Any, type[BaseModel]] | None:
    if get_origin(annotation) is dict:
        key, value = get_args(annotation)
        if isinstance(value, type) and issubclass(value, BaseModel):
            return key, value
    return None


def _keys(key_type: Any, default: dict[Any, Any]) -> list[Any]:
    if isinstance(key_type, type) and issubclass(key_type, enum.Enum):
        return list(key_type)
    return sorted(default)


def _is_secret(annotation: Any) -> bool:
    """A SecretStr, or a container of them (e.g. signing keys by id)."""
    return any(a is SecretStr or _is_secret_container(a) for a in _non_null(annotation))


def _is_secret_container(annotation: Any) -> bool:
    return get_origin(annotation) in (dict, list) and any(_is_secret(a) for a in get_args(annotation))


def _type_text(annotation: Any) -> str:
    args = get_args(annotation)
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [_type_text(a) for a in args if a is not type(None)]
        text = " or ".join(inner)
        return f"{text} or null" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is dict:
        key, value = args
        return f"object: {_type_text(key)} → {_type_text(value)} (JSON in the environment)"
    if origin is list:
        return f"list of {_type_text(args[0])} (JSON in the environment)"
    if annotation is Any:
        return "any JSON value"
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
        if issubclass(annotation, BaseModel):
            return "object"
        return {str: "string", int: "integer", float: "number", bool: "boolean", SecretStr: "string, secret"}.get(
            annotation, annotation.__name__)
    return str(annotation)


_BOUNDS = ((annotated_types.Ge, "≥", "ge"), (annotated_types.Gt, ">", "gt"),
           (annotated_types.Le, "≤", "le"), (annotated_types.Lt, "<", "lt"))


def _constraints(info: FieldInfo) -> str:
    found = []
    for item in info.metadata:
        for kind, sign, attr in _BOUNDS:
            if isinstance(item, kind):
                found.append(f"{sign} {_number(getattr(item, attr))}")
    return f", {' and '.join(found)}" if found else ""


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _default_text(value: Any) -> str:
    if value is _REQUIRED:
        return "required"
    if isinstance(value, SecretStr):
        return "empty" if not value.get_secret_value() else "(set)"
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, dict):
        if value and all(isinstance(v, BaseModel) for v in value.values()):
            return "see below"
        return f"`{json.dumps(value)}`"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, float):
        return f"`{_number(value)}`"
    return f"`{json.dumps(value)}`"


# --- the document --------------------------------------------------------------------------------


def render_configuration_doc() -> str:
    _check_example()
    rows = config_rows()
    sections: dict[str, list[ConfigRow]] = {}
    heads = {row.path.split(".")[0] for row in rows if "." in row.path}
    for row in rows:
        head = row.path.split(".")[0]
        sections.setdefault(head if head in heads else "", []).append(row)
    top = sections.pop("", [])
    out = [_INTRO.format(prefix=ENV_PREFIX, config_env=CONFIG_ENV)]
    for head, section in [*sections.items(), ("", top)]:
        if not section:
            continue
        out.append(f"\n## {f'`{head}`' if head else 'Top level'}\n\n"
                   "| key | environment variable | type | default | secret | what it does |\n"
                   "|---|---|---|---|---|---|\n")
        for row in section:
            env = f"`{row.env}`" if row.env else "—"
            out.append(f"| `{row.path}` | {env} | {_cell(row.type)} | {_cell(row.default)} | "
                       f"{'**yes**' if row.secret else 'no'} | {_cell(row.description)} |\n")
    out.append(_other_variables())
    out.append(_examples())
    return "".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _check_example() -> None:
    """The example must be a valid configuration: rendering fails rather than publish a broken one."""
    Settings.model_validate(example_with_secrets())


def example_secrets_env() -> dict[str, str]:
    """The environment variables the example sets for its secrets."""
    return {ENV_PREFIX + path.replace(".", "__").upper(): value if isinstance(value, str) else json.dumps(value)
            for path, value in _EXAMPLE_SECRETS.items()}


def example_with_secrets() -> dict[str, Any]:
    """`EXAMPLE_CONFIG` with the secrets the example sets through the environment filled in."""
    data: dict[str, Any] = json.loads(json.dumps(EXAMPLE_CONFIG))
    for path, value in _EXAMPLE_SECRETS.items():
        *parents, leaf = path.split(".")
        node = data
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return data


_INTRO = """# Configuration reference

Generated by `campaign-fsm docs` from the `Settings` model in `adapters/settings.py`; a test fails
when this file is stale. Do not edit it by hand.

`campaign-fsm run` reads its configuration from, highest precedence first:

1. environment variables `{prefix}<SECTION>__<KEY>`: the file key in upper case, `.` written as `__`
   (e.g. `platform.client_secret` is `{prefix}PLATFORM__CLIENT_SECRET`); objects and lists are JSON;
2. a JSON or TOML file given by `--config FILE` or `{config_env}` (`.toml` is read as TOML,
   anything else as JSON), with the keys below nested as objects (tables);
3. the defaults below.

Unknown keys are refused. Secrets (**yes** below) are never shown: not in logs, reprs or error
messages. Give them through the environment (or a secret-mounted file) rather than a committed file.

Check a configuration before deploying it: `campaign-fsm config check [--config FILE]` loads it
exactly as `run` would and says what is wrong, naming each bad key (exit code 0 when it is usable,
1 otherwise). The container image (`Dockerfile`) sets `{prefix}HTTP__HOST=0.0.0.0` so that the
operator endpoint is reachable from outside the container.
"""


def _other_variables() -> str:
    return (
        "\n## Other environment variables\n\n"
        "Read by the command-line tools, not part of `Settings`:\n\n"
        "| variable | read by | what it does |\n"
        "|---|---|---|\n"
        f"| `{CONFIG_ENV}` | `run`, `config check` | the configuration file when `--config` is not given |\n"
        f"| `{DEFAULT_KEY_ENV}` | `send`, `schedule` | the signing key (`base64:…`, `hex:…` or text), **secret**; "
        "`--key-env` names another variable |\n"
        f"| `{DEFAULT_KEY_ID_ENV}` | `send`, `schedule` | the key id sent in the header `cfsm-key-id` "
        "(or `--key-id`; docs/signing.md) |\n"
        f"| `{PRINCIPAL_ENV}` | `send` | the principal written into `requestedBy` |\n"
        f"| `{BOOTSTRAP_ENV}` | `send`, `schedule`, `replay`, `audit` | default of `--bootstrap` |\n"
    )


def _examples() -> str:
    lines = ["\n## Example\n\n",
             "A production file for the `genesys` profile; the secrets come from the environment (below):\n\n",
             "```json\n", json.dumps(EXAMPLE_CONFIG, indent=2, ensure_ascii=False), "\n```\n\n",
             "The same as TOML:\n\n", "```toml\n", _toml(EXAMPLE_CONFIG), "```\n\n",
             "```sh\n"]
    for name, value in example_secrets_env().items():
        lines.append(f"export {name}='{value}'\n")
    lines.append("campaign-fsm config check --config /etc/campaign-fsm/config.toml\n"
                 "campaign-fsm run --config /etc/campaign-fsm/config.toml\n```\n")
    return "".join(lines)


def _toml(data: dict[str, Any]) -> str:
    """A small TOML writer for the example: scalars first, then one table per nested object."""
    out: list[str] = []

    def table(obj: dict[str, Any], name: tuple[str, ...]) -> None:
        scalars = {k: v for k, v in obj.items() if not isinstance(v, dict)}
        nested = {k: v for k, v in obj.items() if isinstance(v, dict)}
        if name and scalars:
            out.append(f"\n[{'.'.join(_toml_key(n) for n in name)}]\n")
        for key, value in scalars.items():
            out.append(f"{_toml_key(key)} = {json.dumps(value, ensure_ascii=False)}\n")
        for key, value in nested.items():
            table(value, (*name, key))

    table(data, ())
    return "".join(out).lstrip("\n")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)
