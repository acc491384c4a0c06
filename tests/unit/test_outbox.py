"""The durable outbox against a fake broker: order, nothing deleted before the ack, restarts, coalescing."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.kafka import (
    EVENT_CONTENT_TYPE,
    RESULT_TYPE,
    STATE_TYPE,
    Delivery,
    OutgoingRecord,
    ProduceFailed,
    TopicNames,
)
from adapters.outbox import Outbox, OutboxClosed, OutboxError, OutboxUnavailable
from fsm.testing import FakeClock
from schemas.base import encode
from schemas.commands import CommandResult
from schemas.events import state_changed_event
from schemas.types import Outcome

TOPICS = TopicNames.with_prefix("u.")
FAST = {"retry_initial": 0.001, "retry_max": 0.005}


class FakeBroker:
    """A `Publisher` whose log is the topic. It can be down, flaky (a failed batch may half land) or held."""

    def __init__(self, *, flaky: float = 0.0, seed: int = 1) -> None:
        self.log: list[OutgoingRecord] = []
        self.attempts: list[list[OutgoingRecord]] = []
        self.outcomes: list[bool] = []
        self.down = False
        self.flaky = flaky
        self.hold: asyncio.Event | None = None
        self.holding = asyncio.Event()
        self.attempted = asyncio.Event()
        self._rng = random.Random(seed)

    async def send_many(self, records: Sequence[OutgoingRecord]) -> list[Delivery]:
        batch = list(records)
        self.attempts.append(batch)
        self.attempted.set()
        if self.hold is not None:
            self.holding.set()
            await self.hold.wait()
        if self.down or self._rng.random() < self.flaky:
            # Part of a failed batch may already be on the broker: the outbox re-sends it anyway.
            self.log.extend(batch[: self._rng.randrange(len(batch) + 1)])
            self.outcomes.append(False)
            raise ProduceFailed("not acknowledged by 127.0.0.1:9: KafkaTimeoutError()", retriable=True)
        start = len(self.log)
        self.log.extend(batch)
        self.outcomes.append(True)
        return [Delivery(0, start + i) for i in range(len(batch))]

    def on(self, topic: str) -> list[OutgoingRecord]:
        return [r for r in self.log if r.topic == topic]


def event(campaign: str, seq: int) -> dict[str, Any]:
    return state_changed_event(campaign_id=campaign, sequence=seq, from_state="STOPPED", to_state="STARTING",
                               cause="command", at=1_700_000_000.0 + seq, dialer_type="PREDICTIVE",
                               dialer_id="d-1")


def snapshot(campaign: str, seq: int) -> dict[str, Any]:
    return {"campaignId": campaign, "state": "STARTING", "sequence": seq, "lastHash": None}


def result(campaign: str, outcome: Outcome = Outcome.ACCEPTED) -> CommandResult:
    return CommandResult(command_id=uuid.uuid4(), campaign_id=campaign, outcome=outcome, message="ok",
                         at=datetime(2024, 1, 1, tzinfo=UTC))


def dedupe(records: list[OutgoingRecord]) -> list[OutgoingRecord]:
    """What a consumer keeps: the first record of each id (state rows have none: keep all)."""
    seen: set[str] = set()
    kept = []
    for record in records:
        if record.ce_id is not None:
            if record.ce_id in seen:
                continue
            seen.add(record.ce_id)
        kept.append(record)
    return kept


def sequences(records: list[OutgoingRecord], campaign: str) -> list[int]:
    return [orjson.loads(r.value)["data"]["sequence"] for r in records  # type: ignore[arg-type]
            if r.topic == TOPICS.events and r.key == campaign]


def outbox(path: Path, broker: FakeBroker, **options: Any) -> Outbox:
    return Outbox(path / "outbox.db", broker, topics=TOPICS, **{**FAST, **options})


async def test_each_output_becomes_its_record_with_key_and_headers(tmp_path: Path) -> None:
    broker = FakeBroker()
    one = result("c-1", Outcome.COMPLETED)
    async with outbox(tmp_path, broker) as box:
        await box.state_changed(event("c-1", 1), snapshot("c-1", 1))
        await box.command_result(one)
        await box.state_saved(snapshot("c-2", 4))
        assert await box.wait_drained(5)
    ev, st1, res, st2 = broker.log
    assert (ev.topic, ev.key, ev.value) == (TOPICS.events, "c-1", orjson.dumps(event("c-1", 1)))
    assert (ev.ce_id, ev.ce_type, ev.content_type) == ("c-1:1", event("c-1", 1)["type"], EVENT_CONTENT_TYPE)
    assert (st1.topic, st1.key, orjson.loads(st1.value)) == (TOPICS.state, "c-1", snapshot("c-1", 1))  # type: ignore[arg-type]
    assert (st1.ce_type, st1.content_type) == (STATE_TYPE, "application/json")
    assert (res.topic, res.key, res.value, res.ce_type) == (TOPICS.results, "c-1", encode(one), RESULT_TYPE)
    assert res.ce_id is not None and res.ce_id.startswith(f"{one.command_id}:COMPLETED:")
    assert (st2.topic, st2.key) == (TOPICS.state, "c-2")


async def test_results_ride_in_the_transaction_of_the_change_that_decides_them(tmp_path: Path) -> None:
    broker = FakeBroker()
    done, accepted = result("c-1", Outcome.COMPLETED), result("c-2", Outcome.ACCEPTED)
    async with outbox(tmp_path, broker) as box:
        await box.state_changed(event("c-1", 1), snapshot("c-1", 1), [done])
        await box.state_saved(snapshot("c-2", 4), [accepted])
        # All or nothing: a change that cannot be stored takes its results down with it.
        with pytest.raises(ValueError, match="campaignId"):
            await box.state_changed(event("c-3", 1), {"sequence": 1}, [result("c-3", Outcome.FAILED)])
        with pytest.raises(ValueError, match="campaignId"):
            await box.state_saved({"sequence": 1}, [result("c-3", Outcome.REFUSED)])
        assert await box.wait_drained(5)
    assert [(r.topic, r.key) for r in broker.log] == [
        (TOPICS.events, "c-1"), (TOPICS.state, "c-1"), (TOPICS.results, "c-1"),
        (TOPICS.state, "c-2"), (TOPICS.results, "c-2")]
    assert [r.value for r in broker.log if r.topic == TOPICS.results] == [encode(done), encode(accepted)]


async def test_result_ids_differ_per_result_and_survive_redelivery(tmp_path: Path) -> None:
    broker = FakeBroker()
    first, second = result("c-1", Outcome.DEFERRED), result("c-1", Outcome.DEFERRED)
    second = second.model_copy(update={"command_id": first.command_id, "message": "later"})
    async with outbox(tmp_path, broker) as box:
        await box.command_result(first)
        await box.command_result(second)
        assert await box.wait_drained(5)
    ids = [r.ce_id for r in broker.log]
    assert len(set(ids)) == 2
    assert all(i is not None and i.startswith(f"{first.command_id}:DEFERRED:") for i in ids)


async def test_order_holds_across_failed_and_half_landed_batches(tmp_path: Path) -> None:
    broker = FakeBroker(flaky=0.5, seed=3)
    campaigns = [f"c-{n}" for n in range(8)]

    async def campaign_life(box: Outbox, campaign: str) -> None:
        for seq in range(1, 31):  # one campaign's calls are sequential, as in the orchestrator
            await box.state_changed(event(campaign, seq), snapshot(campaign, seq))

    async with outbox(tmp_path, broker, batch_size=7) as box:
        await asyncio.gather(*(campaign_life(box, c) for c in campaigns))
        assert await box.wait_drained(20)
    assert broker.outcomes.count(False) >= 5  # the broker really was flaky
    kept = dedupe(broker.log)
    for campaign in campaigns:
        assert sequences(kept, campaign) == list(range(1, 31))
    # A retry starts where the failed attempt started (events are never coalesced away), and an
    # attempt after a success starts with nothing already acknowledged.
    acked: set[str] = set()
    previous: tuple[list[str], bool] | None = None
    for attempt, ok in zip(broker.attempts, broker.outcomes, strict=True):
        ids = [r.ce_id for r in attempt if r.ce_id is not None]
        assert not acked & set(ids)
        if previous is not None and not previous[1] and previous[0] and ids:
            assert ids[0] == previous[0][0]
        if ok:
            acked |= set(ids)
        previous = (ids, ok)


async def test_a_failed_batch_is_retried_from_its_first_row(tmp_path: Path) -> None:
    broker = FakeBroker()
    broker.down = True
    box = outbox(tmp_path, broker, batch_size=4)
    await box.open()  # rows first, drainer second: every attempt sees the same four rows
    for seq in range(1, 4):
        await box.state_changed(event("c-1", seq), snapshot("c-1", seq))
    await box.start()
    while len(broker.attempts) < 3:
        broker.attempted.clear()
        await asyncio.wait_for(broker.attempted.wait(), 5)
    assert box.depth == 4  # three events and one coalesced snapshot: nothing acknowledged, nothing gone
    assert box.last_error is not None and "ProduceFailed" in box.last_error
    broker.down = False
    assert await box.wait_drained(5)
    await box.stop()
    batches = {tuple(r.ce_id for r in attempt) for attempt in broker.attempts}
    assert batches == {("c-1:1", "c-1:2", "c-1:3", None)}  # the very same batch each time, same order
    assert sequences(dedupe(broker.log), "c-1") == [1, 2, 3]
    assert box.last_error is None and box.failed_attempts == 0


async def test_keeps_accepting_rows_durably_while_the_broker_is_down(tmp_path: Path) -> None:
    broker = FakeBroker()
    broker.down = True
    async with outbox(tmp_path, broker) as box:
        for seq in range(1, 101):
            await box.state_changed(event("c-1", seq), snapshot("c-1", seq))
        assert box.depth == 101  # 100 events + the latest snapshot
        assert broker.on(TOPICS.events) == [] or len(dedupe(broker.on(TOPICS.events))) < 100
        broker.down = False
        assert await box.wait_drained(5)
    assert sequences(dedupe(broker.log), "c-1") == list(range(1, 101))
    assert [orjson.loads(r.value)["sequence"] for r in broker.on(TOPICS.state)][-1] == 100  # type: ignore[arg-type]


async def test_nothing_is_deleted_before_the_ack_and_a_restart_resends(tmp_path: Path) -> None:
    broker = FakeBroker()
    broker.hold = asyncio.Event()
    box = outbox(tmp_path, broker)
    await box.start()
    for seq in range(1, 6):
        await box.state_changed(event("c-1", seq), snapshot("c-1", seq))
    await asyncio.wait_for(broker.holding.wait(), 5)
    assert box.depth == 6
    # "Crash" while the batch is on its way (the broker may even have stored it): no flush.
    await box.stop(flush_timeout=0)
    again = FakeBroker()
    async with outbox(tmp_path, again) as reopened:
        assert reopened.depth == 6
        assert await reopened.wait_drained(5)
        assert reopened.depth == 0
    assert sequences(again.log, "c-1") == [1, 2, 3, 4, 5]


async def test_a_crash_between_ack_and_delete_redelivers_with_the_same_ids(tmp_path: Path) -> None:
    broker = FakeBroker()
    box = outbox(tmp_path, broker)
    await box.open()
    for seq in range(1, 4):
        await box.state_changed(event("c-1", seq), snapshot("c-1", seq))
    # The broker has them (as if acknowledged) but the outbox never deleted them.
    first = await _drain_once(box)
    broker.log.extend(first)
    await box.stop(flush_timeout=0)
    async with outbox(tmp_path, broker) as reopened:
        assert await reopened.wait_drained(5)
    assert [r.ce_id for r in broker.on(TOPICS.events)] == ["c-1:1", "c-1:2", "c-1:3"] * 2
    assert sequences(dedupe(broker.log), "c-1") == [1, 2, 3]


async def _drain_once(box: Outbox) -> list[OutgoingRecord]:
    """Read what the drainer would send next, without deleting it (a record a crash left behind)."""
    grabbed: list[OutgoingRecord] = []
    sent = asyncio.Event()

    class Grab:
        async def send_many(self, records: Sequence[OutgoingRecord]) -> list[Delivery]:
            grabbed.extend(records)
            sent.set()
            await asyncio.Event().wait()  # never acknowledged here
            raise AssertionError("unreachable")

    box._publisher = Grab()
    await box.start()
    await asyncio.wait_for(sent.wait(), 5)
    return grabbed


async def test_restart_delivers_earlier_rows_first_and_in_order(tmp_path: Path) -> None:
    first = outbox(tmp_path, FakeBroker())
    await first.open()  # accepting, not draining: the broker was unreachable all along
    for seq in range(1, 11):
        await first.state_changed(event("c-1", seq), snapshot("c-1", seq))
    await first.stop()
    broker = FakeBroker()
    second = outbox(tmp_path, broker)
    await second.open()
    assert second.depth == 11
    for seq in range(11, 16):
        await second.state_changed(event("c-1", seq), snapshot("c-1", seq))
    await second.start()
    assert await second.wait_drained(5)
    await second.stop()
    assert sequences(broker.log, "c-1") == list(range(1, 16))
    assert [orjson.loads(r.value)["sequence"] for r in broker.on(TOPICS.state)] == [15]  # type: ignore[arg-type]


async def test_only_state_rows_are_coalesced(tmp_path: Path) -> None:
    broker = FakeBroker()
    box = outbox(tmp_path, broker)
    await box.open()
    for seq in range(1, 6):
        for campaign in ("c-1", "c-2"):
            await box.state_changed(event(campaign, seq), snapshot(campaign, seq))
            await box.command_result(result(campaign))
            await box.state_saved(snapshot(campaign, seq) | {"held": "x"})
    assert box.depth == 10 + 10 + 2
    await box.start()
    assert await box.wait_drained(5)
    await box.stop()
    assert len(broker.on(TOPICS.events)) == 10
    assert len(broker.on(TOPICS.results)) == 10
    state = {r.key: orjson.loads(r.value) for r in broker.on(TOPICS.state)}  # type: ignore[arg-type]
    assert len(broker.on(TOPICS.state)) == 2
    assert state == {c: snapshot(c, 5) | {"held": "x"} for c in ("c-1", "c-2")}


async def test_a_snapshot_superseding_one_in_flight_is_still_delivered(tmp_path: Path) -> None:
    # The in-flight row is the newest row; removing it must not let the next row reuse its number
    # (it would then be deleted with the acknowledged batch without ever being sent).
    broker = FakeBroker()
    broker.hold = asyncio.Event()
    async with outbox(tmp_path, broker) as box:
        await box.state_saved(snapshot("c-1", 1))
        await asyncio.wait_for(broker.holding.wait(), 5)
        await box.state_saved(snapshot("c-1", 2))
        broker.hold.set()
        assert await box.wait_drained(5)
    assert [orjson.loads(r.value)["sequence"] for r in broker.on(TOPICS.state)] == [1, 2]  # type: ignore[arg-type]


async def test_concurrent_callers_are_all_durable_when_they_return(tmp_path: Path) -> None:
    box = outbox(tmp_path, FakeBroker())
    await box.open()
    await asyncio.gather(*(box.state_changed(event(f"c-{n}", 1), snapshot(f"c-{n}", 1)) for n in range(300)),
                         *(box.command_result(result(f"c-{n}")) for n in range(100)))
    assert box.depth == 300 + 300 + 100
    await box.stop(flush_timeout=0)
    broker = FakeBroker()
    async with outbox(tmp_path, broker) as reopened:
        assert await reopened.wait_drained(5)
    assert len(broker.on(TOPICS.events)) == 300
    assert len(broker.on(TOPICS.state)) == 300
    assert len(broker.on(TOPICS.results)) == 100


async def test_a_cancelled_caller_does_not_confuse_the_count(tmp_path: Path) -> None:
    broker = FakeBroker()
    async with outbox(tmp_path, broker) as box:
        task = asyncio.create_task(box.state_changed(event("c-1", 1), snapshot("c-1", 1)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await box.state_changed(event("c-1", 2), snapshot("c-1", 2))
        assert await box.wait_drained(5)
        assert box.depth == 0
    # The cancelled call may or may not have committed; what was committed arrives in order.
    assert sequences(broker.log, "c-1") in ([1, 2], [2])


async def test_stop_flushes_what_waits(tmp_path: Path) -> None:
    broker = FakeBroker(flaky=0.3)
    box = outbox(tmp_path, broker)
    await box.start()
    for seq in range(1, 51):
        await box.state_changed(event("c-1", seq), snapshot("c-1", seq))
    await box.stop(flush_timeout=10)
    assert box.depth == 0
    assert sequences(dedupe(broker.log), "c-1") == list(range(1, 51))


async def test_stop_gives_up_after_the_flush_timeout_and_keeps_the_rows(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    broker = FakeBroker()
    broker.down = True
    box = outbox(tmp_path, broker)
    await box.start()
    await box.state_changed(event("c-1", 1), {"campaignId": "c-1", "secretish": "s3cr3t-value"})
    with caplog.at_level(logging.WARNING, logger="adapters.outbox"):
        await box.stop(flush_timeout=0.2)
    assert not box.draining
    assert "stay for the next start" in caplog.text
    assert "delivery failed" in caplog.text
    assert "s3cr3t-value" not in caplog.text  # row values are never logged
    with pytest.raises(OutboxClosed):
        await box.state_saved(snapshot("c-1", 2))
    reopened = outbox(tmp_path, FakeBroker())
    await reopened.open()
    assert reopened.depth == 2
    await reopened.stop()


async def test_depth_and_oldest_age_follow_the_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    broker = FakeBroker()
    broker.down = True
    async with outbox(tmp_path, broker, clock=clock, retry_initial=1000.0, retry_max=1000.0) as box:
        assert (box.depth, box.oldest_age) == (0, 0.0)
        await box.state_saved(snapshot("c-1", 1))
        await clock.advance(7.0)
        await box.command_result(result("c-1"))
        assert box.depth == 2
        assert box.oldest_age == pytest.approx(7.0)
        broker.down = False
        await clock.advance(1000.0)  # the backoff ends in virtual time
        assert await box.wait_drained(5)
        assert (box.depth, box.oldest_age) == (0, 0.0)
        assert box.delivered == 2


async def test_a_writer_failure_answers_every_caller_and_closes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    from adapters import outbox as module
    from adapters.outbox import store

    def broken(self: object, ops: list[object]) -> list[object]:
        raise RuntimeError("bug")

    box = outbox(tmp_path, FakeBroker())
    await box.open()
    await box.state_saved(snapshot("c-1", 1))
    monkeypatch.setattr(store.Store, "commit_appends", broken)
    with caplog.at_level(logging.ERROR, logger="adapters.outbox"):
        with pytest.raises(module.OutboxWriteFailed, match="internal error"):
            await box.state_saved(snapshot("c-1", 2))
    assert "the writer failed" in caplog.text
    with pytest.raises(OutboxClosed, match="writer has ended"):
        await box.state_saved(snapshot("c-1", 3))
    await box.stop()
    monkeypatch.undo()
    reopened = outbox(tmp_path, FakeBroker())
    await reopened.open()
    assert reopened.depth == 1  # what was committed before the failure is still there
    await reopened.stop()


async def test_healthy_while_it_stores_and_delivers_and_not_once_its_writer_ended(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 item 5: the service's readiness asks the sink. An outbox whose writer ended (a
    defect) takes and delivers nothing any more, and says so."""
    from adapters.outbox import store

    def broken(self: object, ops: list[object]) -> list[object]:
        raise RuntimeError("bug")

    box = outbox(tmp_path, FakeBroker())
    assert not box.healthy  # not started
    await box.start()
    assert box.healthy
    monkeypatch.setattr(store.Store, "commit_appends", broken)
    with pytest.raises(OutboxError):
        await box.state_saved(snapshot("c-1", 1))
    assert not box.healthy
    await box.stop()
    assert not box.healthy


async def test_use_before_open_is_a_clear_error(tmp_path: Path) -> None:
    box = outbox(tmp_path, FakeBroker())
    with pytest.raises(OutboxClosed, match="call open"):
        await box.state_saved(snapshot("c-1", 1))


async def test_malformed_outputs_are_refused_before_anything_is_stored(tmp_path: Path) -> None:
    async with outbox(tmp_path, FakeBroker()) as box:
        with pytest.raises(ValueError, match="'id' and 'type'"):
            await box.state_changed({"subject": "c-1"}, snapshot("c-1", 1))
        with pytest.raises(ValueError, match="campaign id"):
            await box.state_changed({"id": "x:1", "type": "t", "data": {}}, snapshot("c-1", 1))
        with pytest.raises(ValueError, match="campaignId"):
            await box.state_saved({"state": "RUNNING"})
        assert box.depth == 0


async def test_one_outbox_per_file(tmp_path: Path) -> None:
    first = outbox(tmp_path, FakeBroker())
    await first.open()
    try:
        with pytest.raises(OutboxUnavailable, match="in use by another process"):
            await outbox(tmp_path, FakeBroker()).open()
    finally:
        await first.stop()
    second = outbox(tmp_path, FakeBroker())
    await second.open()  # the lock went with the first one
    await second.stop()


@pytest.mark.parametrize("case", ["missing-dir", "directory", "memory", "not-sqlite", "foreign-db"])
async def test_unusable_paths_are_named_clearly(tmp_path: Path, case: str) -> None:
    path: str | Path
    if case == "missing-dir":
        path, expected = tmp_path / "nope" / "outbox.db", "does not exist"
    elif case == "directory":
        path, expected = tmp_path, "is a directory"
    elif case == "memory":
        path, expected = ":memory:", "needs a file on disk"
    elif case == "not-sqlite":
        path, expected = tmp_path / "junk.db", "not a SQLite database"
        path.write_bytes(b"this is not sqlite at all" * 100)
    else:
        import sqlite3
        path, expected = tmp_path / "other.db", "something else"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE customers (id INTEGER)")
        conn.close()
    box = Outbox(path, FakeBroker())
    with pytest.raises(OutboxUnavailable, match=expected):
        await box.open()
    await box.stop()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
async def test_a_read_only_directory_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutboxUnavailable, match="not writable"):
            await Outbox(locked / "outbox.db", FakeBroker()).open()
    finally:
        locked.chmod(0o700)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="synchronous"):
        Outbox("x.db", FakeBroker(), synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        Outbox("x.db", FakeBroker(), batch_size=0)
    with pytest.raises(ValueError, match="retry_initial"):
        Outbox("x.db", FakeBroker(), retry_initial=5, retry_max=1)
