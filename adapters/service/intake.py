"""The commands topic, read into the orchestrator: one outcome per record, offsets only past outcomes.

The contract:

- **Every record gets one outcome of its own, and nothing that goes wrong with one record touches
  another.** The outcome is the record's first result, durable in the sink: the core's (the future
  `Orchestrator.submit` returns resolves once that result is durable) or a REFUSED result the intake
  publishes itself with `Orchestrator.refuse_record`. A record that names no usable command id and
  campaign id goes to the dead-letter topic instead, the error in its headers.
- **Refused here, before the core sees the command** (no platform read, no campaign touched):
  `MALFORMED_COMMAND`, the record does not parse but its `id` and `campaignId` are usable (each
  matched whole: `fullmatch`, so `"campaign-0001\\n"` is not a campaign id); `KEY_MISMATCH`, the key
  (as UTF-8) is not exactly the `campaignId`; `WRONG_PARTITION`, the record is not on the partition
  murmur2(campaignId) names, or this instance does not own the campaign for another reason. The
  owner of such a campaign never sees the record, and waiting for the core to answer it would wedge
  the intake. Counted in `misrouted`, by cause.
- **A record whose handling raises** (a defect, a value the contract let through, the core's future
  completing with an exception) is answered `INTERNAL_ERROR`, or dead-lettered when it has no usable
  ids or that answer cannot be built either. Counted in `failed`. An exception of the way out (the
  broker, the sink's `sink_errors`) is not the record's: the record is handled again, below.
- **Offsets never move past a record without its outcome durable.** Per partition, the offset
  committed is that of the first record still without one. When the way out fails (the sink, the
  broker: the record is fine, its outcome is just not durable), the batch stops at that record: each
  partition is sought back to its first unfinished offset and, after a backoff, fetched and handled
  again. A record that already had its outcome is not answered twice (the intake remembers it until
  its offset is committed); a command whose result was durable is recognised by the core as a
  redelivery of the same record (`submit`'s origin, `topic:partition@offset`): nothing is done
  twice. A partition the group took away is left to its new owner, and no commit is made with
  offsets read in an earlier group generation.
- **Supervised.** One named task, `command-intake`. A fetch, commit or batch that fails is retried
  with backoff, after seeking back. `healthy` is False once `unhealthy_after` cycles in a row failed,
  or while records have waited `stall_after_s` for the core with no progress at all, and while the
  task is down. If the task dies anyway, a done-callback logs it with its traceback and restarts it
  after a backoff. The service's `/readyz` is "orchestrator ready and intake healthy".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Protocol

import orjson

from fsm.backoff import Backoff
from fsm.tasks import cancel_and_wait
from schemas import Command, ContractError, decode
from schemas.commands import CAMPAIGN_ID_PATTERN, COMMAND_ID_PATTERN, CommandResult
from schemas.signed import SignedRecord
from schemas.types import ReasonCode

from ..kafka import Delivery, KafkaEdgeError, Partition, Record, partition_of

__all__ = ["DEAD_LETTER_CONTENT_TYPE", "CommandCore", "CommandIntake", "CommandSource", "DeadLetterProducer"]

_log = logging.getLogger(__name__)
_CAMPAIGN_ID = re.compile(CAMPAIGN_ID_PATTERN)
_COMMAND_ID = re.compile(COMMAND_ID_PATTERN)
DEAD_LETTER_CONTENT_TYPE = "application/octet-stream"  # the record as it came, bytes untouched

# Failures of the way out, not of the record: its outcome could not be made durable now, and will be
# once the broker is back (the sink's own such errors are given by the service, `sink_errors`).
# Anything else raised while handling a record is that record's.
_UNAVAILABLE: tuple[type[Exception], ...] = (KafkaEdgeError, OSError)
_RETRY = Backoff(initial=0.5, multiplier=2.0, cap=30.0, max_tries=None, jitter=0.2)
_SHOWN = 80  # characters of a hostile key or error quoted back in a result


class CommandCore(Protocol):
    """What the intake needs of the orchestrator."""

    def submit(self, command: Command, origin: str | None = ...) -> asyncio.Future[CommandResult]: ...

    async def refuse_record(self, command_id: str, campaign_id: str, reason: ReasonCode,
                            detail: str) -> CommandResult: ...


class CommandSource(Protocol):
    """What the intake needs of the consumer (`adapters.kafka.CommandConsumer`)."""

    @property
    def assignment(self) -> frozenset[Partition]: ...

    @property
    def generation(self) -> int | None: ...

    def partition_count(self) -> int: ...

    async def fetch(self, timeout_s: float = ..., max_records: int | None = ...) -> list[Record]: ...

    async def commit(self, offsets: Mapping[Partition, int]) -> None: ...

    async def committed(self, partition: Partition) -> int | None: ...

    def seek(self, partition: Partition, offset: int) -> bool: ...


class DeadLetterProducer(Protocol):
    async def send(self, topic: str, key: str | None, value: object, *,
                   headers: Mapping[str, str | bytes] | None = ..., content_type: str = ...) -> Delivery: ...


class _Incomplete(Exception):
    """The way out failed: the record is fine but has no durable outcome yet."""


class CommandIntake:
    """One supervised task (`command-intake`) draining the consumer into the orchestrator."""

    def __init__(self, consumer: CommandSource, orchestrator: CommandCore, producer: DeadLetterProducer,
                 dead_letter_topic: str, *, owns: Callable[[str], bool] | None = None,
                 sink_errors: tuple[type[Exception], ...] = (),
                 fetch_timeout_s: float = 0.5, max_records: int = 500, retry: Backoff = _RETRY,
                 unhealthy_after: int = 2, stall_after_s: float = 60.0, check_every_s: float = 0.5,
                 seed: int | None = None) -> None:
        self._consumer = consumer
        self._orchestrator = orchestrator
        self._producer = producer
        self._dead_letters = dead_letter_topic
        self._owns = owns
        self._unavailable = (*_UNAVAILABLE, *sink_errors)
        self._fetch_timeout = fetch_timeout_s
        self._max_records = max_records
        self._retry = retry
        self._unhealthy_after = unhealthy_after
        self._stall_after = stall_after_s
        self._check_every = check_every_s
        self._rng = random.Random(seed)
        self._task: asyncio.Task[None] | None = None
        self._restart: asyncio.TimerHandle | None = None
        self._stopping = asyncio.Event()
        self._failures = 0  # cycles failed in a row
        self._deaths = 0  # task deaths since the last good cycle
        self._stalled = False
        self.consumed = 0
        self.malformed = 0
        self.dead_lettered = 0
        self.failed = 0
        self.misrouted: Counter[str] = Counter()  # KEY_MISMATCH, WRONG_PARTITION, NOT_OWNED
        self.restarts = 0
        self.positions: dict[Partition, int] = {}  # first offset without an outcome, per partition
        self._committed: dict[Partition, int] = {}
        # Outcomes durable past a partition's position (a batch cut short), so a redo skips them.
        self._done: dict[Partition, set[int]] = {}
        # INTERNAL_ERROR answers owed: the core gave up on the command, so a redelivery would only be
        # recognised as one and never answered.
        self._owed: dict[tuple[Partition, int], str] = {}

    @property
    def healthy(self) -> bool:
        """True while the task runs, its cycles are not failing in a row and records are not stuck."""
        task = self._task
        return (task is not None and not task.done() and self._failures < self._unhealthy_after
                and not self._stalled)

    def start(self) -> None:
        if self._task is None and self._restart is None:
            self._spawn()

    async def stop(self) -> None:
        """Stop taking commands. A batch being handled finishes (its outcomes durable) first."""
        self._stopping.set()
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        task, self._task = self._task, None
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=10)
        except TimeoutError:
            await cancel_and_wait(task)

    async def __aenter__(self) -> CommandIntake:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- supervision ---------------------------------------------------------------------------

    def _spawn(self) -> None:
        self._restart = None
        if self._stopping.is_set():
            return
        self._task = asyncio.create_task(self._run(), name="command-intake")
        self._task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if self._stopping.is_set() or task is not self._task:
            return
        error = None if task.cancelled() else task.exception()
        self._deaths += 1
        self.restarts += 1
        delay = self._delay(self._deaths)
        _log.error("the command-intake task %s; restarting it in %.1f s",
                   "was cancelled" if error is None else "died", delay, exc_info=error)
        self._restart = task.get_loop().call_later(delay, self._spawn)

    def _delay(self, attempt: int) -> float:
        return self._retry.delay(attempt - 1, self._rng)

    async def _run(self) -> None:
        rewind = True  # a restarted task finds the consumer past whatever the last one left unfinished
        while not self._stopping.is_set():
            try:
                if rewind:
                    await self._rewind()
                    rewind = False
                await self._cycle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failures += 1
                rewind = True
                delay = self._delay(self._failures)
                if isinstance(exc, _Incomplete | KafkaEdgeError):
                    _log.warning("command intake: %s (%d in a row); seeking back, again in %.1f s",
                                 _describe(exc), self._failures, delay)
                else:
                    _log.exception("command intake failed (%d in a row); seeking back, again in %.1f s",
                                   self._failures, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                continue
            self._failures = 0
            self._deaths = 0

    async def _rewind(self) -> None:
        """Seek every assigned partition back to its first record without an outcome.

        Never behind the group's committed offset: after a rebalance another owner may have gone
        further, and handling its records again could act on a command twice.
        """
        assigned = self._consumer.assignment
        self._forget(assigned)
        for tp in sorted(assigned):
            mine = self.positions.get(tp)
            if mine is None:
                continue  # nothing fetched from it since it was assigned: its position passed nothing
            committed = await self._consumer.committed(tp)
            target = mine if committed is None else max(mine, committed)
            if self._consumer.seek(tp, target):
                self.positions[tp] = target
                if committed is not None:
                    self._committed[tp] = committed

    def _forget(self, assigned: frozenset[Partition]) -> None:
        for table in (self.positions, self._committed, self._done):
            for tp in [tp for tp in table if tp not in assigned]:
                del table[tp]
        for key in [key for key in self._owed if key[0] not in assigned]:
            del self._owed[key]

    # --- one batch -----------------------------------------------------------------------------

    async def _cycle(self) -> None:
        self._forget(self._consumer.assignment)
        await self._commit_due()  # one a failed cycle left owing
        records = await self._consumer.fetch(self._fetch_timeout, self._max_records)
        if not records:
            return
        generation = self._consumer.generation
        batches: dict[Partition, list[Record]] = {}
        for record in records:
            batches.setdefault(record.tp, []).append(record)
        for tp, batch in batches.items():
            self.positions[tp] = batch[0].offset  # where a task that dies mid-batch resumes
        await self._handle(records)
        assigned = self._consumer.assignment
        unfinished = 0
        for tp, batch in batches.items():
            done = self._done.setdefault(tp, set())
            first = next((r.offset for r in batch if r.offset not in done), None)
            position = batch[-1].offset + 1 if first is None else first
            self.positions[tp] = position
            self._done[tp] = {offset for offset in done if offset >= position}
            if first is not None and tp in assigned:
                unfinished += sum(1 for r in batch if r.offset not in done)
        if self._consumer.generation != generation:
            raise _Incomplete("the group rebalanced during the batch; its offsets are not committed")
        await self._commit_due()
        if unfinished:
            raise _Incomplete(f"{unfinished} of {len(records)} records of the batch have no outcome yet")

    async def _commit_due(self) -> None:
        assigned = self._consumer.assignment
        due = {tp: at for tp, at in self.positions.items() if tp in assigned and at > self._committed.get(tp, -1)}
        if due:
            await self._consumer.commit(due)
            self._committed.update(due)

    async def _handle(self, records: list[Record]) -> None:
        waits: dict[asyncio.Future[CommandResult], Record] = {}
        assigned = self._consumer.assignment
        for record in records:
            if record.tp not in assigned or record.offset in self._done.get(record.tp, ()):
                continue  # taken away by a rebalance (its new owner answers it), or answered already
            self.consumed += 1
            try:
                future = await self._take(record)
            except _Incomplete:
                break  # the way out is failing: the rest waits for the redo, in order
            if future is None:
                self._finish(record)
            else:
                waits[future] = record
        await self._await(waits)

    async def _take(self, record: Record) -> asyncio.Future[CommandResult] | None:
        """Start on one record: None once its outcome is durable, else the core's future for it."""
        owed = self._owed.get((record.tp, record.offset))
        if owed is not None:
            await self._answer_failure(record, owed)
            return None
        try:
            return await self._route(record)
        except _Incomplete:
            raise
        except self._unavailable as exc:
            raise _Incomplete(_describe(exc)) from exc
        except Exception as exc:
            await self._fail(record, exc)
            return None

    async def _route(self, record: Record) -> asyncio.Future[CommandResult] | None:
        try:
            # Kept with the record it came in: its signature covers these bytes (docs/signing.md).
            command = Command.from_record(_signed(record))
        except ContractError as exc:
            await self._malformed(record, exc)
            return None
        misrouted = self._misrouted(record, command)
        if misrouted is None:
            # The record's own address: the core tells a redelivery of it from a replay in another record.
            return self._orchestrator.submit(command, f"{record.topic}:{record.partition}@{record.offset}")
        cause, reason, detail = misrouted
        await self._orchestrator.refuse_record(command.id, command.campaign_id, reason, detail)
        self.misrouted[cause] += 1
        _log.warning("command %s at %s[%d]@%d refused %s: %s", command.id, record.topic, record.partition,
                     record.offset, cause, detail)
        return None

    def _misrouted(self, record: Record, command: Command) -> tuple[str, ReasonCode, str] | None:
        campaign_id = command.campaign_id
        key = _key_text(record)
        if key != campaign_id:
            shown = "no key" if record.raw_key is None and record.key is None else (
                "a key that is not UTF-8" if key is None else f"key {_clip(key)!r}")
            return ("KEY_MISMATCH", ReasonCode.KEY_MISMATCH,
                    f"the record has {shown}, not its campaignId {campaign_id!r}: producers must key "
                    "every command by its campaignId")
        count = self._consumer.partition_count()
        owner = partition_of(campaign_id, count)
        if record.partition != owner:
            return ("WRONG_PARTITION", ReasonCode.WRONG_PARTITION,
                    f"campaign {campaign_id} belongs on partition {owner} of {record.topic} (murmur2 of "
                    f"its campaignId over {count} partitions), not {record.partition}: producers must use "
                    "the murmur2 partitioner keyed by campaignId (librdkafka: partitioner=murmur2_random)")
        if self._owns is not None and not self._owns(campaign_id):
            return ("NOT_OWNED", ReasonCode.WRONG_PARTITION,
                    f"campaign {campaign_id} (partition {owner} of {record.topic}) is not driven by the "
                    "instance that read it (its assignment is changing); nothing was done: send it again")
        return None

    async def _malformed(self, record: Record, error: ContractError) -> None:
        command_id, campaign_id = _salvage(record.value)
        if command_id is not None and campaign_id is not None:
            await self._orchestrator.refuse_record(command_id, campaign_id, ReasonCode.MALFORMED_COMMAND,
                                                   str(error))
        else:
            await self._dead_letter(record, str(error))
        self.malformed += 1

    async def _await(self, waits: dict[asyncio.Future[CommandResult], Record]) -> None:
        """Wait for the core's first results. A record whose partition moves away is left to its owner."""
        loop = asyncio.get_running_loop()
        pending = set(waits)
        quiet_since = loop.time()
        try:
            while pending:
                done, pending = await asyncio.wait(pending, timeout=self._check_every)
                now = loop.time()
                if done:
                    quiet_since = now
                    self._stalled = False
                for future in done:
                    record = waits[future]
                    if future.cancelled():
                        continue  # released by a rebalance or the core is closing: redelivered later
                    error = future.exception()
                    if isinstance(error, self._unavailable):
                        continue  # nothing durable and the core forgot it: the redo judges it anew
                    if error is not None:
                        try:
                            await self._fail(record, error)
                        except _Incomplete:
                            continue
                    self._finish(record)
                assigned = self._consumer.assignment
                pending = {f for f in pending if waits[f].tp in assigned}
                if pending and not self._stalled and now - quiet_since > self._stall_after:
                    self._stalled = True
                    _log.error("command intake: %d records have waited %.0f s for the core with no progress",
                               len(pending), now - quiet_since)
        finally:
            self._stalled = False

    def _finish(self, record: Record) -> None:
        self._done.setdefault(record.tp, set()).add(record.offset)
        self._owed.pop((record.tp, record.offset), None)

    # --- failures ------------------------------------------------------------------------------

    async def _fail(self, record: Record, error: BaseException) -> None:
        """Handling `record` raised: it alone is answered INTERNAL_ERROR (or dead-lettered)."""
        _log.error("command record %s[%d]@%d could not be handled", record.topic, record.partition,
                   record.offset, exc_info=error)
        self.failed += 1
        detail = f"the service failed while handling this record: {_describe(error)}"
        self._owed[(record.tp, record.offset)] = detail
        await self._answer_failure(record, detail)

    async def _answer_failure(self, record: Record, detail: str) -> None:
        command_id, campaign_id = _ids(record)
        if command_id is not None and campaign_id is not None:
            try:
                await self._orchestrator.refuse_record(command_id, campaign_id, ReasonCode.INTERNAL_ERROR, detail)
            except self._unavailable as exc:
                raise _Incomplete(_describe(exc)) from exc
            except Exception as exc:
                _log.exception("INTERNAL_ERROR answer for %s[%d]@%d failed; dead-lettering it", record.topic,
                               record.partition, record.offset)
                detail = f"{detail}; answering it failed too: {_describe(exc)}"
            else:
                return
        try:
            await self._dead_letter(record, detail)
        except self._unavailable as exc:
            raise _Incomplete(_describe(exc)) from exc

    async def _dead_letter(self, record: Record, error: str) -> None:
        headers = {
            "error": error[:2000],
            "source-topic": record.topic,
            "source-partition": str(record.partition),
            "source-offset": str(record.offset),
        }
        value = record.value
        try:
            await self._producer.send(self._dead_letters, record.key, value, headers=headers,
                                      content_type=DEAD_LETTER_CONTENT_TYPE)
        except KafkaEdgeError as exc:
            if getattr(exc, "refused", None) is None or value is None:
                raise
            # The record itself cannot be produced again (too large with the headers added): the
            # dead letter still says where it is, so it is not dropped without a trace.
            headers["value-omitted"] = f"{len(value)} bytes, too large to forward"
            await self._producer.send(self._dead_letters, record.key, None, headers=headers,
                                      content_type=DEAD_LETTER_CONTENT_TYPE)
        self.dead_lettered += 1
        _log.warning("unusable record at %s[%d]@%d sent to %s: %s", record.topic, record.partition,
                     record.offset, self._dead_letters, error[:500])


def _signed(record: Record) -> SignedRecord:
    key = record.raw_key if record.raw_key is not None or record.key is None else record.key.encode()
    return SignedRecord.from_headers(key, record.value or b"", record.headers)


def _key_text(record: Record) -> str | None:
    """The key as UTF-8 text, strictly: a key that does not decode matches no campaign id."""
    if record.raw_key is None:
        return record.key
    try:
        return record.raw_key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {_clip(str(error))}" if str(error) else type(error).__name__


def _ids(record: Record) -> tuple[str | None, str | None]:
    try:
        command = decode(Command, record.value or b"")
    except Exception:  # the failure path itself must not fail on a hostile record
        return _salvage(record.value)
    return command.id, command.campaign_id


def _salvage(raw: bytes | None) -> tuple[str | None, str | None]:
    """The command id and campaign id of a record that failed to parse, if both are usable."""
    try:
        data = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    command_id = data.get("id")
    if not isinstance(command_id, str) or not _COMMAND_ID.fullmatch(command_id):
        command_id = None  # echoed as it came, so only one a result can carry
    campaign_id = data.get("campaignId")
    # fullmatch: the pattern's `$` also matches before a trailing newline, which no result can carry.
    if not isinstance(campaign_id, str) or not _CAMPAIGN_ID.fullmatch(campaign_id):
        campaign_id = None
    return command_id, campaign_id
