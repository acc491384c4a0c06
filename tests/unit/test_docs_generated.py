"""The AsyncAPI document and the configuration reference are generated, current, and tell the truth.

Stale files fail (regenerated in memory and compared); the AsyncAPI examples must parse with the
models the service uses, its channels must be the topics the adapter creates, and the state-record
schema must accept what the orchestrator really writes. Every environment variable in the
configuration reference must be one `Settings` actually reads, and its example file must load.
"""

from __future__ import annotations

import enum
import json
import re
import tomllib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import orjson
import pytest
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from adapters import config_doc, kafka
from adapters.cli import main
from adapters.cli.docs import ASYNCAPI_DOC, kafka_contract, render_asyncapi_doc
from adapters.config_doc import CONFIG_DOC, config_rows, render_configuration_doc
from adapters.kafka import TopicNames
from adapters.settings import ENV_PREFIX, KafkaSettings, Settings, load_settings
from fsm.machine import CampaignMachine
from fsm.orchestrator import Orchestrator, OrchestratorConfig
from fsm.ports import ContactListSnapshot
from fsm.testing import FakeClock
from schemas import decode
from schemas.commands import Command, CommandResult
from schemas.events import STATE_CHANGED_TYPE, CampaignStateChangedEvent
from schemas.state import CampaignStateRecord, StoredCommand
from schemas.types import Action, CampaignState, Priority
from tests.fakes import FakeCampaign, FakePlatform, MemorySink

DOCS = Path(__file__).resolve().parents[2] / "docs"
_PAYLOADS: dict[str, type[BaseModel]] = {
    "Command": Command,
    "CommandResult": CommandResult,
    "CampaignStateChanged": CampaignStateChangedEvent,
    "CampaignStateRecord": CampaignStateRecord,
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    return monkeypatch


# --- staleness -----------------------------------------------------------------------------------


def test_asyncapi_document_is_current() -> None:
    assert (DOCS / ASYNCAPI_DOC).read_bytes() == render_asyncapi_doc(), "stale: run `campaign-fsm docs`"


def test_configuration_reference_is_current() -> None:
    assert (DOCS / CONFIG_DOC).read_text() == render_configuration_doc(), "stale: run `campaign-fsm docs`"


def test_docs_command_writes_every_generated_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["docs", "--out", str(tmp_path)]) == 0
    for name in (ASYNCAPI_DOC, CONFIG_DOC, "state-diagram.md", "schemas/command.json", "schemas/campaign-state.json"):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / ASYNCAPI_DOC).read_bytes() == render_asyncapi_doc()
    assert main(["schema", "--out", str(tmp_path / "x" / "schemas")]) == 0
    assert (tmp_path / "x" / ASYNCAPI_DOC).read_bytes() == render_asyncapi_doc()


# --- the AsyncAPI document -----------------------------------------------------------------------


def _asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((DOCS / ASYNCAPI_DOC).read_text())
    return document


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"external or malformed $ref {ref!r}"
    node: Any = document
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"$ref {ref!r} does not resolve"
        node = node[part]
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_asyncapi_has_one_channel_per_topic_as_the_adapter_creates_it() -> None:
    document = _asyncapi()
    assert document["asyncapi"] == "3.1.0", "the latest 3.x @asyncapi/parser 3.6 knows (issue 13)"
    kafka = KafkaSettings()
    names = TopicNames()
    specs = {s.name: s for s in names.specs(kafka.partitions, kafka.replication_factor)}
    channels = {c["address"]: c for c in document["channels"].values()}
    assert set(channels) == set(names.all())
    for name, spec in specs.items():
        binding = channels[name]["bindings"]["kafka"]
        assert binding["topic"] == name and binding["partitions"] == spec.partitions
        assert binding["replicas"] == kafka.replication_factor
    assert channels[names.state]["bindings"]["kafka"]["topicConfiguration"] == {"cleanup.policy": ["compact"]}
    assert "topicConfiguration" not in channels[names.events]["bindings"]["kafka"], "the audit log is not compacted"


def test_asyncapi_refs_resolve_and_operations_face_the_right_way() -> None:
    document = _asyncapi()
    for ref in _refs(document):
        _resolve(document, ref)
    actions = {op["channel"]["$ref"].rsplit("/", 1)[1]: op["action"] for op in document["operations"].values()}
    assert actions == {"commands": "receive", "commandResults": "send", "campaignEvents": "send",
                       "campaignState": "send", "deadLetters": "send"}
    for op in document["operations"].values():
        channel = _resolve(document, op["channel"]["$ref"])
        for message in op["messages"]:
            assert message["$ref"].startswith(op["channel"]["$ref"] + "/messages/")
            assert _resolve(document, message["$ref"]) in channel["messages"].values()


def test_asyncapi_payloads_are_the_models_schemas() -> None:
    document = _asyncapi()
    messages = document["components"]["messages"]
    schemas = document["components"]["schemas"]
    for name, model in _PAYLOADS.items():
        payload = _resolve(document, messages[name]["payload"]["$ref"])
        generated = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        generated.pop("$defs", None)
        assert payload == generated, name
        assert set(_refs(payload)) <= {f"#/components/schemas/{s}" for s in schemas}


def _check_headers(schema: dict[str, Any], headers: dict[str, str], where: str) -> None:
    for name in schema.get("required", []):
        assert name in headers, f"{where}: required header {name} missing from the example"
    for name, value in headers.items():
        spec = schema["properties"][name]
        if "const" in spec:
            assert value == spec["const"], f"{where}: header {name}"
        if "pattern" in spec:
            assert re.match(spec["pattern"], value), f"{where}: header {name}={value!r}"


def test_asyncapi_examples_parse_with_the_services_models() -> None:
    document = _asyncapi()
    seen = 0
    for name, message in document["components"]["messages"].items():
        assert message["examples"], f"{name} has no example"
        for example in message["examples"]:
            _check_headers(message["headers"], example["headers"], f"{name}/{example['name']}")
            if name in _PAYLOADS:
                decode(_PAYLOADS[name], orjson.dumps(example["payload"]))
                seen += 1
            else:  # the dead letter: bytes the service could not parse as a Command
                with pytest.raises(ValueError, match=re.escape(example["headers"]["error"])):
                    decode(Command, example["payload"].encode())
    assert seen >= 4


def test_asyncapi_wire_constants_are_those_the_sinks_write() -> None:
    contract = kafka_contract()
    assert contract.result_type == kafka.RESULT_TYPE
    assert contract.state_type == kafka.STATE_TYPE
    assert contract.event_type == STATE_CHANGED_TYPE
    assert contract.event_content_type == kafka.EVENT_CONTENT_TYPE
    messages = _asyncapi()["components"]["messages"]
    # Since issue 13 the event's type and id headers are not `ce_`-prefixed (that marks binary mode).
    headers = messages["CampaignStateChanged"]["headers"]["properties"]
    assert headers[kafka.EVENT_TYPE_HEADER]["const"] == STATE_CHANGED_TYPE and kafka.EVENT_ID_HEADER in headers
    assert not [name for name in headers if name.startswith("ce_")]
    assert messages["CampaignStateChanged"]["contentType"] == "application/cloudevents+json"


def test_asyncapi_describes_the_contract_the_guide_asks_for() -> None:
    text = (DOCS / ASYNCAPI_DOC).read_text()
    for needle in ("HMAC-SHA256", "keyId", "requestedBy", "acks=all", "per-campaign order", "MALFORMED_COMMAND",
                   "source-offset", "compacted"):
        assert needle in text, needle


# --- the campaign.state record -------------------------------------------------------------------


async def test_state_record_schema_accepts_what_the_orchestrator_writes() -> None:
    clock = FakeClock(auto_advance=True)
    platform = FakePlatform(clock, [FakeCampaign("held", CampaignState.STOPPED, contact_list_id="list-locked"),
                                    FakeCampaign("moving", CampaignState.RUNNING)])
    platform.lists["list-locked"] = ContactListSnapshot("list-locked", False, False, "LOCKED/COMPLETED")
    sink = MemorySink()
    orch = Orchestrator(machine=CampaignMachine(), platform=platform, sink=sink, clock=clock,
                        config=OrchestratorConfig(seed=1))
    await orch.start()
    for campaign_id, action in (("held", Action.START), ("moving", Action.STOP)):
        await orch.submit(Command(id=uuid.uuid4(), campaign_id=campaign_id, action=action, priority=Priority.HIGH,
                                  requested_by="test", issued_at=datetime.now(UTC)))
    try:
        await clock.sleep(1)
        held, moving = sink.state["held"], sink.state["moving"]
        assert held["heldCommand"] is not None and moving["commandId"] is not None and moving["deadline"] is not None
        aliases = {f.alias for f in CampaignStateRecord.model_fields.values()}
        for record in (held, moving):
            assert set(record) == aliases, "the schema has exactly the keys the orchestrator writes"
            parsed = decode(CampaignStateRecord, orjson.dumps(record))
            assert parsed.campaign_id == record["campaignId"]
        # Stored as the producer sent it (value and signing headers), so a restore can verify it again.
        assert StoredCommand.model_validate(held["heldCommand"]).command("held").campaign_id == "held"
    finally:
        await orch.close()


# --- the configuration reference -----------------------------------------------------------------


def test_every_setting_has_a_description_and_a_type() -> None:
    rows = config_rows()
    assert len(rows) > 40
    undescribed = [r.path for r in rows if not r.description.strip()]
    assert not undescribed, f"describe these in Settings (Field(description=...)) or adapters/config_doc.py: " \
                            f"{undescribed}"
    assert all(r.type for r in rows)
    secrets = {r.path for r in rows if r.secret}
    assert {"platform.client_secret", "kafka.sasl_password", "auth.keys"} <= secrets
    assert "platform.client_id" not in secrets


def test_fallback_descriptions_name_real_settings() -> None:
    paths = [r.path.split(".") for r in config_rows()]
    for key in config_doc.described_paths():
        parts = key.split(".")
        assert any(len(p) == len(parts) and all(a in ("*", b) for a, b in zip(parts, p, strict=True))
                   for p in paths), f"adapters/config_doc.py describes {key}, which is not a setting"


def _field(path: str) -> tuple[FieldInfo, Any]:
    model: type[BaseModel] = Settings
    default: Any = None
    info: FieldInfo | None = None
    for part in path.split("."):
        info = model.model_fields[part]
        annotation = info.annotation
        default = getattr(default, part) if isinstance(default, BaseModel) else (
            info.default_factory() if info.default_factory else info.default)  # type: ignore[call-arg]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    assert info is not None
    return info, default


def _non_null(annotation: Any) -> list[Any]:
    if get_origin(annotation) in (Union, type(int | None)):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _candidates(annotation: Any, default: Any) -> Iterator[Any]:
    """Values unlike the default that the field may accept."""
    for kind in _non_null(annotation):
        origin = get_origin(kind)
        if kind is bool:
            yield not default
        elif origin is Literal:
            yield from (a for a in get_args(kind) if a != default)
        elif isinstance(kind, type) and issubclass(kind, enum.Enum):
            yield from (m.value for m in kind if m != default)
        elif kind is int:
            yield 1 if default is None else default + 1
        elif kind is float:
            base = default if isinstance(default, float) else 1.0
            yield from (base / 2, base + 0.5, base * 1.5)
        elif kind in (str, SecretStr):
            yield "x-test-value"
            yield "x-test-value:9092"  # a field that wants host:port (kafka.bootstrap)
        elif origin is dict:
            _, value = get_args(kind)
            if isinstance(value, type) and issubclass(value, BaseModel):
                changed = json.loads(json.dumps(default))
                first = next(iter(changed.values()))
                first[next(iter(first))] += 1
                yield changed
            elif value is int:
                yield {"d-1": 3}
            elif value is SecretStr:
                yield {"k-1": "0123456789abcdef0123"}
            else:
                yield {"p-1": {"campaigns": ["*"]}}


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


# Settings valid only together with another one: that one is set too while the first is tried.
_PARTNERS = {"kafka.ssl_certfile": "kafka.ssl_keyfile", "kafka.ssl_keyfile": "kafka.ssl_certfile"}


def test_every_documented_environment_variable_is_read(clean_env: pytest.MonkeyPatch) -> None:
    checked = 0
    envs = {row.path: row.env for row in config_rows()}
    for row in config_rows():
        if row.env is None:
            continue
        info, default = _field(row.path)
        picked = False
        partner = envs.get(_PARTNERS.get(row.path, ""))
        for candidate in _candidates(info.annotation, _plain(default)):
            clean_env.setenv(row.env, candidate if isinstance(candidate, str) else json.dumps(candidate))
            if partner:
                clean_env.setenv(partner, "x-partner-value")
            try:
                settings = Settings()
            except ValueError:
                continue
            finally:
                clean_env.delenv(row.env)
                if partner:
                    clean_env.delenv(partner)
            value: Any = settings
            for part in row.path.split("."):
                value = getattr(value, part)
            if _plain(value) == candidate:
                picked = True
                break
        assert picked, f"{row.env} (documented for {row.path}) did not reach Settings"
        checked += 1
    assert checked > 40


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_the_example_configuration_loads_and_passes_config_check(
        clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = render_configuration_doc()
    (json_text,), (toml_text,) = _blocks(text, "json"), _blocks(text, "toml")
    assert json.loads(json_text) == tomllib.loads(toml_text) == config_doc.EXAMPLE_CONFIG
    for name, value in config_doc.example_secrets_env().items():
        assert f"export {name}='{value}'" in text
        clean_env.setenv(name, value)
    (tmp_path / "c.json").write_text(json_text)
    (tmp_path / "c.toml").write_text(toml_text)
    from_json, from_toml = load_settings(tmp_path / "c.json"), load_settings(tmp_path / "c.toml")
    assert from_json == from_toml
    assert from_json.platform.client_secret.get_secret_value() == "change-me"
    assert from_json.kafka.topics.events == "prod.campaign.events"
    assert main(["config", "check", "--config", str(tmp_path / "c.toml")]) == 0
    assert "configuration ok" in capsys.readouterr().out


# --- the architecture page -----------------------------------------------------------------------


def test_architecture_page_names_only_files_that_exist() -> None:
    text = (DOCS / "architecture.md").read_text()
    assert "```mermaid\nflowchart" in text
    root = DOCS.parent
    named = set(re.findall(r"(?<![\w/])((?:fsm|adapters|schemas|tests|docs)/[\w./-]*)", text))
    assert len(named) > 30
    missing = sorted(n for n in named if not (root / n.rstrip(".,")).exists())
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"
    for topic in TopicNames().all():
        assert topic in text, topic


# --- the container's health check ----------------------------------------------------------------


def _healthcheck_argv() -> list[str]:
    text = (DOCS.parent / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, flags=re.M)
    assert match, "the Dockerfile has no exec-form HEALTHCHECK"
    argv: list[str] = json.loads(match.group(1))
    return argv


@pytest.mark.integration  # a real loopback server and a real subprocess
@pytest.mark.parametrize("alive", [True, False])
async def test_the_dockerfile_healthcheck_asks_healthz(alive: bool) -> None:
    import asyncio
    import os
    import sys

    from adapters.service.http import build_app, serve_asgi

    argv = _healthcheck_argv()
    assert argv[0] == "python"
    app = build_app(alive=lambda: alive, ready=lambda: False, metrics={})
    async with serve_asgi(app, host="127.0.0.1", port=0, name="healthcheck-test") as url:
        port = url.rsplit(":", 1)[1].rstrip("/")
        env = {**os.environ, "CAMPAIGN_FSM_HTTP__PORT": port}
        proc = await asyncio.create_subprocess_exec(sys.executable, *argv[1:], env=env,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        code = await asyncio.wait_for(proc.wait(), timeout=30)
    assert (code == 0) is alive
