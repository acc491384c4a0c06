"""`campaign-fsm send` and `schedule --once` against the real broker, with a fake service answering.

The fake service (`Responder`) reads the commands topic as a consumer group, verifies each
command with the real `CommandAuthority`, and publishes scripted results to the results topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from adapters.cli.send import COMMAND_TYPE, exit_code, send_and_follow, send_config
from adapters.kafka import CommandConsumer, KafkaSettings, Producer, ensure_topics, open_admin
from adapters.signing import Signer
from fsm.authorization import AuthDecision, CommandAuthority, Policy
from schemas.commands import Command, CommandResult
from schemas.signed import SignedRecord
from schemas.types import Action, CampaignState, Outcome, Priority, ReasonCode

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KEY_HEX = "5f" * 32
KEY = bytes.fromhex(KEY_HEX)

Script = Callable[[Command, AuthDecision], Sequence[CommandResult]]


def result(command: Command, outcome: Outcome, reason: ReasonCode | None = None, message: str = "",
           state: CampaignState | None = CampaignState.STOPPED) -> CommandResult:
    return CommandResult(command_id=command.id, campaign_id=command.campaign_id, outcome=outcome, reason=reason,
                         message=message or outcome.value.lower(), state=state, at=datetime.now(UTC))


def service_script(command: Command, decision: AuthDecision) -> list[CommandResult]:
    """What the service would answer: a refusal with the authority's reason, or accepted then completed."""
    if not decision.allowed:
        return [result(command, Outcome.REFUSED, decision.reason, decision.detail)]
    return [result(command, Outcome.ACCEPTED, message="start accepted; pre-flight next"),
            result(command, Outcome.COMPLETED, message="reached RUNNING", state=CampaignState.RUNNING)]


class Responder:
    def __init__(self, config: KafkaSettings, authority: CommandAuthority, script: Script) -> None:
        self.config = config
        self.authority = authority
        self.script = script
        self.received: list[tuple[Command, dict[str, str | None], AuthDecision]] = []
        self.got_one = asyncio.Event()

    async def run(self) -> None:
        async with CommandConsumer(self.config) as consumer, Producer(self.config) as producer:
            while True:
                for record in await consumer.fetch(timeout_s=0.2):
                    # As the service reads it: the value's bytes and the signing headers.
                    command = Command.from_record(SignedRecord.from_headers(record.raw_key, record.value or b"",
                                                                            record.headers))
                    assert record.key == command.campaign_id
                    decision = self.authority.check(command, datetime.now(UTC).timestamp())
                    headers = {name: record.header(name) for name in ("ce_type", "ce_id", "cfsm-key-id")}
                    self.received.append((command, headers, decision))
                    self.got_one.set()
                    for answer in self.script(command, decision):
                        await producer.send(self.config.topics.results, command.campaign_id, answer)


@contextlib.asynccontextmanager
async def responding(config: KafkaSettings, script: Script = service_script,
                     policy: Policy | None = None) -> AsyncIterator[Responder]:
    responder = Responder(config, CommandAuthority({"ops-1": KEY}, policy), script)
    task = asyncio.create_task(responder.run(), name="fake-service")
    try:
        yield responder
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def topics_ready(config: KafkaSettings) -> None:
    async with open_admin(config) as admin:
        await ensure_topics(admin, config.topics, config.partitions)


def prefix_of(config: KafkaSettings) -> str:
    return config.topics.commands[: -len("campaign.commands")]


async def run_cli(*args: str, env: dict[str, str], timeout_s: float = 60.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters.cli", *args, cwd=REPO, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def signed_command(**fields: object) -> Command:
    base: dict[str, object] = {"id": uuid.uuid4(), "campaign_id": "camp-1", "action": Action.START,
                               "requested_by": "alice", "issued_at": datetime.now(UTC)}
    return Signer("ops-1", KEY).sign(Command(**{**base, **fields}))  # type: ignore[arg-type]


async def test_send_reads_only_results_published_after_it_started_and_only_its_own(kafka_config: KafkaSettings) -> None:
    await topics_ready(kafka_config)
    command = signed_command()
    other = signed_command()
    # Already on the topic before `send` starts: a stale COMPLETED for the very same id must not count.
    async with Producer(kafka_config) as producer:
        await producer.send(kafka_config.topics.results, command.campaign_id, result(command, Outcome.COMPLETED))

    def script(received: Command, decision: AuthDecision) -> list[CommandResult]:
        assert decision.allowed
        return [result(other, Outcome.COMPLETED),  # someone else's command on the same campaign
                result(received, Outcome.ACCEPTED),
                result(received, Outcome.DEFERRED, ReasonCode.DIALER_OVER_CAPACITY, "dialer at 85 %"),
                result(received, Outcome.FAILED, ReasonCode.TOLERANCE_EXCEEDED, "no RUNNING within 30 s",
                       CampaignState.FAILED)]

    out, err = io.StringIO(), io.StringIO()
    async with responding(kafka_config, script) as responder:
        code = await send_and_follow(send_config(kafka_config.bootstrap, kafka_config.topics, "test-send"),
                                     command, timeout_s=30, out=out, err=err)
    assert code == 1
    lines = out.getvalue().splitlines()
    assert [line.split("  ")[1:3] for line in lines] == [
        ["ACCEPTED", "state=STOPPED"], ["DEFERRED", "DIALER_OVER_CAPACITY"], ["FAILED", "TOLERANCE_EXCEEDED"]]
    assert lines[2].endswith("no RUNNING within 30 s")
    assert f"as command {command.id}" in err.getvalue()
    ((received, headers, _),) = responder.received
    assert received == command
    assert headers == {"ce_type": COMMAND_TYPE, "ce_id": str(command.id), "cfsm-key-id": "ops-1"}


async def test_send_cli_publishes_a_verifiable_signed_command_and_exits_0_on_completed(
    kafka_config: KafkaSettings,
) -> None:
    await topics_ready(kafka_config)
    env = {"TEST_SEND_KEY": f"hex:{KEY_HEX}", "CAMPAIGN_FSM_SIGNING_KEY_ID": "ops-1"}
    async with responding(kafka_config) as responder:
        code, out, err = await run_cli(
            "send", "start", "camp-7", "--priority", "HIGH", "--expected-state", "STOPPED",
            "--requested-by", "alice", "--key-env", "TEST_SEND_KEY", "--bootstrap", kafka_config.bootstrap,
            "--topic-prefix", prefix_of(kafka_config), "--timeout", "45", env=env)
    assert code == 0, err
    ((command, _, decision),) = responder.received
    assert decision.allowed, decision
    assert (command.campaign_id, command.action, command.priority, command.expected_state, command.requested_by,
            command.key_id) == ("camp-7", Action.START, Priority.HIGH, CampaignState.STOPPED, "alice", "ops-1")
    lines = out.splitlines()
    assert [line.split("  ")[1] for line in lines] == ["ACCEPTED", "COMPLETED"]
    assert KEY_HEX not in out + err


async def test_send_cli_exits_1_on_a_refusal_and_prints_the_reason(kafka_config: KafkaSettings) -> None:
    await topics_ready(kafka_config)
    policy = Policy.from_config({"alice": {"campaigns": ["uk-*"]}})
    env = {"CAMPAIGN_FSM_SIGNING_KEY": f"hex:{KEY_HEX}"}
    async with responding(kafka_config, policy=policy) as responder:
        code, out, _ = await run_cli(
            "send", "stop", "us-1", "--requested-by", "alice", "--key-id", "ops-1",
            "--bootstrap", kafka_config.bootstrap, "--topic-prefix", prefix_of(kafka_config), "--json", env=env)
    assert code == 1
    (line,) = out.splitlines()
    answer = json.loads(line)
    assert (answer["outcome"], answer["reason"]) == ("REFUSED", "NOT_AUTHORISED")
    assert answer["commandId"] == str(responder.received[0][0].id)


async def test_send_cli_exits_3_when_no_final_result_arrives(kafka_config: KafkaSettings) -> None:
    await topics_ready(kafka_config)
    env = {"CAMPAIGN_FSM_SIGNING_KEY": f"hex:{KEY_HEX}"}

    def only_accepted(command: Command, decision: AuthDecision) -> list[CommandResult]:
        return [result(command, Outcome.ACCEPTED)]

    async with responding(kafka_config, only_accepted):
        code, out, err = await run_cli(
            "send", "pause", "camp-2", "--key-id", "ops-1", "--bootstrap", kafka_config.bootstrap,
            "--topic-prefix", prefix_of(kafka_config), "--timeout", "3", env=env)
    assert code == 3
    assert [line.split("  ")[1] for line in out.splitlines()] == ["ACCEPTED"]
    assert "no final result" in err


async def test_send_cli_exits_2_when_the_topics_do_not_exist(kafka_config: KafkaSettings) -> None:
    env = {"CAMPAIGN_FSM_SIGNING_KEY": f"hex:{KEY_HEX}"}
    code, _, err = await run_cli("send", "start", "camp-1", "--key-id", "ops-1", "--bootstrap",
                                 kafka_config.bootstrap, "--topic-prefix", "no-such-prefix.", "--timeout", "20",
                                 env=env)
    assert code == 2
    assert "do not exist" in err and KEY_HEX not in err


async def test_schedule_once_publishes_the_next_occurrence_signed_with_not_before(
    kafka_config: KafkaSettings, tmp_path: Path
) -> None:
    await topics_ready(kafka_config)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"requested_by": "shift-planner", "entries": [
        {"campaign": "uk-sales-1", "action": "start", "time": "08:00", "timezone": "Europe/London",
         "recurrence": "daily", "priority": "HIGH"}]}))
    env = {"CAMPAIGN_FSM_SIGNING_KEY": f"hex:{KEY_HEX}", "CAMPAIGN_FSM_SIGNING_KEY_ID": "ops-1"}
    async with responding(kafka_config, lambda c, d: []) as responder:
        # A lead longer than a day makes the next daily occurrence due at once.
        code, out, err = await run_cli("schedule", str(plan), "--once", "--lead", "90000",
                                       "--bootstrap", kafka_config.bootstrap,
                                       "--topic-prefix", prefix_of(kafka_config), env=env)
        assert code == 0, err
        await asyncio.wait_for(responder.got_one.wait(), 30)
    ((command, _, decision),) = responder.received
    assert decision.allowed, decision
    assert command.not_before is not None
    local = command.not_before.astimezone(ZoneInfo("Europe/London"))
    assert (local.hour, local.minute) == (8, 0)
    assert timedelta(0) < command.not_before - datetime.now(UTC) <= timedelta(days=1)
    assert (command.campaign_id, command.priority, command.requested_by) == ("uk-sales-1", Priority.HIGH,
                                                                             "shift-planner")
    assert out.startswith(f"published {command.id}")


def test_exit_codes_follow_the_outcome_and_a_replay_of_our_own_send_is_not_final() -> None:
    c = signed_command()
    assert exit_code(result(c, Outcome.ACCEPTED)) is None
    assert exit_code(result(c, Outcome.DEFERRED, ReasonCode.SCHEDULED)) is None
    assert exit_code(result(c, Outcome.COMPLETED, ReasonCode.ALREADY_IN_STATE)) == 0
    assert exit_code(result(c, Outcome.REFUSED, ReasonCode.BAD_SIGNATURE)) == 1
    assert exit_code(result(c, Outcome.FAILED, ReasonCode.PLATFORM_ERROR)) == 1
    # Only a duplicate delivery of this very send can carry its fresh id: the first answer decides.
    assert exit_code(result(c, Outcome.REFUSED, ReasonCode.REPLAYED)) is None
