"""The command intake against a fake consumer: one record's failure is its own, offsets never pass a
record without its outcome, routing is checked before the core, and the task is supervised."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import pytest

from adapters.kafka import Delivery, KafkaEdgeError, Partition, Record, partition_of
from adapters.outbox import OutboxError
from adapters.service.intake import DEAD_LETTER_CONTENT_TYPE, CommandIntake
from fsm import CampaignMachine
from fsm.backoff import Backoff
from fsm.orchestrator import Orchestrator, OrchestratorConfig
from fsm.testing import FakeClock
from schemas.base import encode
from schemas.commands import Command, CommandResult
from schemas.types import Action, CampaignState, Outcome, ReasonCode
from tests.fakes import FakeCampaign, FakePlatform, MemorySink

TOPIC = "campaign.commands"
PARTITIONS = 3
FAST = Backoff(initial=0.01, multiplier=2.0, cap=0.05, jitter=0.0)


class FakeConsumer:
    """A consumer over an in-memory log: positions, commits and seeks as aiokafka keeps them."""

    def __init__(self, partitions: int = PARTITIONS) -> None:
        self.log: dict[Partition, list[Record]] = {Partition(TOPIC, p): [] for p in range(partitions)}
        self.assignment = frozenset(self.log)
        self.generation: int | None = 1
        self.position: dict[Partition, int] = dict.fromkeys(self.log, 0)
        self.commits: list[dict[Partition, int]] = []
        self.group_committed: dict[Partition, int] = {}
        self.seeks: list[tuple[Partition, int]] = []
        self.fail_fetch: Callable[[], BaseException | None] = lambda: None
        self.fail_commit: Callable[[], Exception | None] = lambda: None
        self.fetches = 0

    def add(self, value: bytes, *, key: str | bytes | None = None, partition: int | None = None,
            campaign_id: str = "c1") -> Record:
        raw_key = key.encode() if isinstance(key, str) else key
        if partition is None:
            partition = partition_of(campaign_id, len(self.log))
        tp = Partition(TOPIC, partition)
        records = self.log[tp]
        record = Record(TOPIC, partition, len(records), None if raw_key is None else raw_key.decode("utf-8", "replace"),
                        value, (), 0, raw_key)
        records.append(record)
        return record

    def partition_count(self) -> int:
        return len(self.log)

    async def fetch(self, timeout_s: float = 1.0, max_records: int | None = None) -> list[Record]:
        self.fetches += 1
        error = self.fail_fetch()
        if error is not None:
            raise error
        out: list[Record] = []
        for tp in sorted(self.assignment):
            records = self.log[tp][self.position[tp]:]
            if max_records is not None:
                records = records[:max_records - len(out)]
            out.extend(records)
            self.position[tp] += len(records)
        if not out:
            await asyncio.sleep(0.005)
        return out

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        error = self.fail_commit()
        if error is not None:
            raise error
        self.commits.append(dict(offsets))
        self.group_committed.update(offsets)

    async def committed(self, partition: Partition) -> int | None:
        return self.group_committed.get(partition)

    def seek(self, partition: Partition, offset: int) -> bool:
        if partition not in self.assignment:
            return False
        self.seeks.append((partition, offset))
        self.position[partition] = offset
        return True

    def end(self, tp: Partition) -> int:
        return len(self.log[tp])


class FakeCore:
    """The orchestrator's two entry points. Results are built as the real core builds them (so a
    value no result can carry fails here as it does there) and each is 'durable' when appended."""

    def __init__(self) -> None:
        self.results: list[CommandResult] = []
        self.submitted: list[tuple[Command, str | None]] = []
        self.raise_in_future: set[UUID] = set()  # handling fails inside the core: the future carries it
        self.raise_on_submit: set[UUID] = set()
        self.sink_down = False
        self._answered: set[str | None] = set()

    def submit(self, command: Command, origin: str | None = None) -> asyncio.Future[CommandResult]:
        self.submitted.append((command, origin))
        if command.id in self.raise_on_submit:
            raise RuntimeError("a defect in submit")
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        if command.id in self.raise_in_future:
            future.set_exception(ValueError("handling this command blew up"))
        elif origin in self._answered:
            future.set_result(self._result(command.id, command.campaign_id, Outcome.REFUSED,
                                           ReasonCode.REPLAYED, "redelivery"))  # not published again
        else:
            if self.sink_down:
                future.set_exception(OutboxError("outbox write failed"))
                return future
            result = self._result(command.id, command.campaign_id, Outcome.ACCEPTED, None, "accepted")
            self.results.append(result)
            self._answered.add(origin)
            future.set_result(result)
        return future

    async def refuse_record(self, command_id: UUID, campaign_id: str, reason: ReasonCode,
                            detail: str) -> CommandResult:
        result = self._result(command_id, campaign_id, Outcome.REFUSED, reason, detail)
        if self.sink_down:
            raise OutboxError("outbox write failed")
        self.results.append(result)
        return result

    def _result(self, command_id: UUID, campaign_id: str, outcome: Outcome, reason: ReasonCode | None,
                message: str) -> CommandResult:
        return CommandResult(command_id=command_id, campaign_id=campaign_id, outcome=outcome, reason=reason,
                             message=message, at=datetime.now(UTC))

    def answers(self, command_id: UUID) -> list[tuple[str, str | None]]:
        return [(r.outcome.value, r.reason.value if r.reason else None) for r in self.results
                if r.command_id == command_id]


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None, object, dict[str, str | bytes]]] = []
        self.down = False

    async def send(self, topic: str, key: str | None, value: object, *,
                   headers: Mapping[str, str | bytes] | None = None,
                   content_type: str = "application/json") -> Delivery:
        if self.down:
            raise KafkaEdgeError("broker away")
        assert content_type == DEAD_LETTER_CONTENT_TYPE
        self.sent.append((topic, key, value, dict(headers or {})))
        return Delivery(0, len(self.sent) - 1)


def command(campaign_id: str = "c1", action: Action = Action.START) -> Command:
    return Command(id=uuid.uuid4(), campaign_id=campaign_id, action=action, requested_by="test",
                   issued_at=datetime.now(UTC))


def put(consumer: FakeConsumer, cmd: Command) -> Record:
    return consumer.add(encode(cmd), key=cmd.campaign_id, campaign_id=cmd.campaign_id)


def newline_record(consumer: FakeConsumer, campaign_id: str = "c1") -> tuple[UUID, Record]:
    """A command whose campaignId ends in a newline: `re.match` with `$` took it for a campaign id."""
    command_id = uuid.uuid4()
    body = orjson.loads(encode(command(campaign_id)))
    body["id"], body["campaignId"] = str(command_id), campaign_id + "\n"
    return command_id, consumer.add(orjson.dumps(body), key=campaign_id, campaign_id=campaign_id)


async def until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:  # noqa: ASYNC109  # a polling wait with its own message
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.005)


def all_committed(consumer: FakeConsumer) -> bool:
    return all(consumer.group_committed.get(tp, 0) == consumer.end(tp) for tp in consumer.log)


Parts = tuple[FakeConsumer, FakeCore, FakeProducer, CommandIntake]


@pytest.fixture
async def parts() -> AsyncIterator[Parts]:
    consumer, core, producer = FakeConsumer(), FakeCore(), FakeProducer()
    intake = CommandIntake(consumer, core, producer, "dlq", sink_errors=(OutboxError,), fetch_timeout_s=0.01,
                           retry=FAST, seed=1, check_every_s=0.01)
    yield consumer, core, producer, intake
    await intake.stop()


async def test_a_campaign_id_with_a_trailing_newline_loses_nothing_after_it(parts: Parts) -> None:
    consumer, core, producer, intake = parts
    first = command("c1")
    put(consumer, first)
    bad_id, bad = newline_record(consumer, "c1")
    rest = [command("c1"), command("c1")]
    for cmd in rest:
        put(consumer, cmd)
    intake.start()
    await until(lambda: all_committed(consumer), what="the whole batch committed")
    for cmd in (first, *rest):
        assert core.answers(cmd.id) == [("ACCEPTED", None)]
    # No usable campaign id: dead-lettered (no result could carry it), with the error in its headers.
    assert core.answers(bad_id) == []
    assert [(topic, value) for topic, _, value, _ in producer.sent] == [("dlq", bad.value)]
    assert producer.sent[0][3]["source-offset"] == str(bad.offset)
    assert intake.malformed == 1 and intake.dead_lettered == 1 and intake.healthy


async def test_a_record_whose_handling_raises_affects_only_itself(parts: Parts) -> None:
    consumer, core, producer, intake = parts
    commands = [command("c1") for _ in range(4)]
    core.raise_in_future.add(commands[1].id)  # the core's handling raised: its future carries it
    core.raise_on_submit.add(commands[2].id)  # a defect before the core even queued it
    for cmd in commands:
        put(consumer, cmd)
    # A record with no usable ids whose handling raises can only be dead-lettered.
    unusable = consumer.add(b'{"id": 12}', key="c1", campaign_id="c1")
    intake.start()
    await until(lambda: all_committed(consumer), what="everything committed")
    assert core.answers(commands[0].id) == [("ACCEPTED", None)]
    assert core.answers(commands[3].id) == [("ACCEPTED", None)]
    for failed in commands[1:3]:
        (result,) = [r for r in core.results if r.command_id == failed.id]
        assert (result.outcome, result.reason) == (Outcome.REFUSED, ReasonCode.INTERNAL_ERROR)
        assert "handling" in result.message or "defect" in result.message
    assert intake.failed == 2
    assert [value for _, _, value, _ in producer.sent] == [unusable.value]


async def test_an_answer_that_cannot_be_built_is_dead_lettered(parts: Parts) -> None:
    consumer, core, producer, intake = parts
    cmd = command("c1")
    core.raise_in_future.add(cmd.id)
    record = put(consumer, cmd)

    async def no_result(*_: Any) -> CommandResult:
        raise ValueError("no result can carry this")

    core.refuse_record = no_result  # type: ignore[method-assign,assignment]
    intake.start()
    await until(lambda: all_committed(consumer), what="committed")
    ((topic, _, value, headers),) = producer.sent
    assert (topic, value) == ("dlq", record.value)
    assert "handling this command blew up" in str(headers["error"])
    assert "no result can carry this" in str(headers["error"])


async def test_a_failing_commit_seeks_back_and_retries_losing_nothing(parts: Parts) -> None:
    consumer, core, _, intake = parts
    failures = iter([KafkaEdgeError("coordinator away"), KafkaEdgeError("coordinator away"),
                     KafkaEdgeError("coordinator away")])
    consumer.fail_commit = lambda: next(failures, None)
    commands = [command(f"c{i}") for i in range(12)]
    for cmd in commands:
        put(consumer, cmd)
    intake.start()
    await until(lambda: not intake.healthy, what="readiness drops while commits fail")
    await until(lambda: all_committed(consumer), what="committed after recovery")
    await until(lambda: intake.healthy, what="healthy again")
    assert consumer.seeks, "each partition was sought back to its first unfinished offset"
    for cmd in commands:
        assert core.answers(cmd.id) == [("ACCEPTED", None)], "every command answered exactly once"
    later = command("c1")
    put(consumer, later)
    await until(lambda: core.answers(later.id) == [("ACCEPTED", None)] and all_committed(consumer))


async def test_a_sink_outage_mid_batch_redoes_the_rest_in_order(parts: Parts) -> None:
    consumer, core, _, intake = parts
    first, second = command("c1"), command("c1")
    put(consumer, first)
    _bad_id, _ = newline_record(consumer)
    put(consumer, second)
    core.sink_down = True
    intake.start()
    await until(lambda: consumer.fetches >= 3, what="a few attempts")
    tp = Partition(TOPIC, partition_of("c1", PARTITIONS))
    assert consumer.group_committed.get(tp, 0) == 0, "nothing committed past a record without its outcome"
    assert (tp, 0) in consumer.seeks
    core.sink_down = False
    await until(lambda: all_committed(consumer), what="committed once the sink is back")
    assert core.answers(first.id) == [("ACCEPTED", None)]
    assert core.answers(second.id) == [("ACCEPTED", None)]


async def test_a_failing_fetch_keeps_the_intake_running_and_unready_until_it_recovers(parts: Parts) -> None:
    consumer, core, _, intake = parts
    failing = True
    consumer.fail_fetch = lambda: KafkaEdgeError("broker away") if failing else None
    intake.start()
    await until(lambda: consumer.fetches >= 3, what="fetch retried")
    assert not intake.healthy
    cmd = command("c2")
    put(consumer, cmd)
    failing = False
    await until(lambda: core.answers(cmd.id) == [("ACCEPTED", None)], what="commands flow again")
    assert intake.healthy


async def test_key_and_partition_are_checked_before_the_core(parts: Parts) -> None:
    consumer, core, _, intake = parts
    garbage = command("c1")
    consumer.add(encode(garbage), key="garbage", partition=partition_of("c1", PARTITIONS))
    unkeyed = command("c1")
    consumer.add(encode(unkeyed), key=None, partition=partition_of("c1", PARTITIONS))
    not_utf8 = command("c1")
    consumer.add(encode(not_utf8), key=b"c1\xff", partition=partition_of("c1", PARTITIONS))
    owner = partition_of("c2", PARTITIONS)
    wrong = command("c2")
    consumer.add(encode(wrong), key="c2", partition=(owner + 1) % PARTITIONS)
    good = command("c2")
    put(consumer, good)
    intake.start()
    await until(lambda: all_committed(consumer), what="committed")
    for cmd in (garbage, unkeyed, not_utf8):
        assert core.answers(cmd.id) == [("REFUSED", "KEY_MISMATCH")]
    assert core.answers(wrong.id) == [("REFUSED", "WRONG_PARTITION")]
    (message,) = [r.message for r in core.results if r.command_id == wrong.id]
    assert f"partition {owner}" in message and "murmur2" in message
    assert core.answers(good.id) == [("ACCEPTED", None)]
    assert [c.id for c, _ in core.submitted] == [good.id], "the core never saw a misrouted record"
    assert intake.misrouted == {"KEY_MISMATCH": 3, "WRONG_PARTITION": 1}


async def test_a_campaign_this_instance_does_not_own_is_answered_not_waited_for() -> None:
    consumer, core, producer = FakeConsumer(), FakeCore(), FakeProducer()
    intake = CommandIntake(consumer, core, producer, "dlq", owns=lambda campaign_id: campaign_id != "c3",
                           fetch_timeout_s=0.01, retry=FAST)
    foreign, mine = command("c3"), command("c1")
    put(consumer, foreign)
    put(consumer, mine)
    intake.start()
    try:
        await until(lambda: all_committed(consumer))
    finally:
        await intake.stop()
    assert core.answers(foreign.id) == [("REFUSED", "WRONG_PARTITION")]
    assert core.answers(mine.id) == [("ACCEPTED", None)]
    assert intake.misrouted == {"NOT_OWNED": 1}


async def test_a_dead_intake_task_is_logged_and_restarted(parts: Parts, caplog: pytest.LogCaptureFixture) -> None:
    consumer, core, _, intake = parts
    intake.start()
    await until(lambda: intake.healthy)
    task = next(t for t in asyncio.all_tasks() if t.get_name() == "command-intake")
    with caplog.at_level(logging.ERROR, logger="adapters.service.intake"):
        task.cancel()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not intake.healthy
        await until(lambda: intake.healthy, what="restarted")
    assert any("command-intake" in r.getMessage() for r in caplog.records)
    cmd = command("c1")
    put(consumer, cmd)
    await until(lambda: core.answers(cmd.id) == [("ACCEPTED", None)], what="commands flow after the restart")
    assert intake.restarts == 1
    # Something no handler expects (outside `except Exception`): the death is logged with its traceback.
    boom = iter([_Boom("escaped every handler")])
    consumer.fail_fetch = lambda: next(boom, None)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="adapters.service.intake"):
        await until(lambda: intake.restarts == 2, what="second death")
        await until(lambda: intake.healthy, what="restarted again")
    (death,) = [r for r in caplog.records if "command-intake" in r.getMessage()]
    assert death.exc_info is not None and isinstance(death.exc_info[1], _Boom)
    after = command("c1")
    put(consumer, after)
    await until(lambda: core.answers(after.id) == [("ACCEPTED", None)], what="commands flow again")


class _Boom(BaseException):
    pass


async def test_records_of_a_partition_taken_away_are_left_to_the_new_owner(parts: Parts) -> None:
    consumer, core, _, intake = parts
    tp = Partition(TOPIC, partition_of("c1", PARTITIONS))
    consumer.assignment = frozenset(p for p in consumer.log if p != tp)
    cmd = command("c1")
    put(consumer, cmd)
    consumer.position[tp] = 0
    # Fetched in the same batch as the revocation: the intake must neither answer nor commit it.
    consumer.assignment = frozenset(consumer.log)
    original = consumer.fetch

    async def fetch_then_revoke(timeout_s: float = 1.0, max_records: int | None = None) -> list[Record]:
        records = await original(timeout_s, max_records)
        if records:
            consumer.assignment = frozenset(p for p in consumer.log if p != tp)
        return records

    consumer.fetch = fetch_then_revoke  # type: ignore[method-assign]
    intake.start()
    await until(lambda: consumer.fetches >= 3)
    assert core.answers(cmd.id) == []
    assert tp not in consumer.group_committed


# --- the real core -------------------------------------------------------------------------------


async def _orchestrator(owns: Callable[[str], bool] | None = None) -> tuple[Orchestrator, MemorySink, FakeClock]:
    clock = FakeClock(auto_advance=True)
    platform = FakePlatform(clock, [FakeCampaign(f"c{i}", CampaignState.RUNNING) for i in range(1, 7)])
    sink = MemorySink()
    orch = Orchestrator(machine=CampaignMachine(), platform=platform, sink=sink, clock=clock,
                        config=OrchestratorConfig(seed=7), owns=owns)
    await orch.start()
    return orch, sink, clock


async def test_the_real_core_answers_every_record_of_a_batch_with_a_bad_one() -> None:
    orch, sink, clock = await _orchestrator()
    consumer, producer = FakeConsumer(), FakeProducer()
    intake = CommandIntake(consumer, orch, producer, "dlq", fetch_timeout_s=0.01, retry=FAST)
    good = [command("c1", Action.STOP)]
    put(consumer, good[0])
    bad_id, _ = newline_record(consumer, "c1")
    good += [command("c1", Action.START), command("c1", Action.PAUSE)]
    for cmd in good[1:]:
        put(consumer, cmd)
    intake.start()
    try:
        await until(lambda: all_committed(consumer), what="the batch committed")
    finally:
        await intake.stop()
        await orch.close()
        await clock.aclose()
    for cmd in good:
        assert sink.outcomes(cmd.id), f"{cmd.action} has a result"
    assert sink.outcomes(bad_id) == [] and len(producer.sent) == 1


async def test_a_command_on_a_partition_not_owning_its_campaign_does_not_wedge_the_intake() -> None:
    """This instance owns only the partition the record sits on; the record's campaign hashes to
    another. Waiting for the core to answer it (the core never looks at a campaign it does not own)
    stalled every later command."""
    mine = Partition(TOPIC, partition_of("c1", PARTITIONS))
    foreign = next(f"c{i}" for i in range(2, 7) if partition_of(f"c{i}", PARTITIONS) != mine.partition)
    orch, sink, clock = await _orchestrator(owns=lambda cid: partition_of(cid, PARTITIONS) == mine.partition)
    consumer, producer = FakeConsumer(), FakeProducer()
    consumer.assignment = frozenset({mine})
    intake = CommandIntake(consumer, orch, producer, "dlq", fetch_timeout_s=0.01, retry=FAST)
    stray = command(foreign, Action.STOP)
    consumer.add(encode(stray), key=foreign, partition=mine.partition)
    after = command("c1", Action.STOP)
    put(consumer, after)
    intake.start()
    try:
        await until(lambda: bool(sink.outcomes(after.id)), what="the command after the stray one answered")
        await until(lambda: consumer.group_committed.get(mine) == consumer.end(mine), what="committed")
    finally:
        await intake.stop()
        await orch.close()
        await clock.aclose()
    assert sink.outcomes(stray.id) == [("REFUSED", "WRONG_PARTITION")]
