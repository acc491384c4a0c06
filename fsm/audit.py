"""Reading `campaign.events` back: per-campaign timelines, the audit checks, and rebuilt state.

`EventLog` takes the records of the events topic in log order (each partition in offset order;
partitions may interleave) and keeps, per campaign, one compact `TimelineEntry` per event id.
`finish()` orders each campaign's entries by sequence and, in `strict` mode (the audit), checks:

- sequences start at 1 and have no gaps;
- an id delivered twice carries the same content both times (an identical re-delivery is dropped
  and counted; anything else is a finding);
- every event's `from` is the previous event's `to` (the first event's `from` is null);
- the hash chain: every event's `prevHash` is `event_hash` of the previous event (none on the first);
- log order: within its partition a campaign's events appear in sequence order, all in one
  partition, keyed by the campaign id, with `id` = `{campaignId}:{sequence}`;
- every record parses as a `CampaignStateChangedEvent`.

Each problem is a `Finding` naming the campaign and the sequence ("sequence 4 missing",
"sequence 5 prevHash does not match sequence 4 (edited?)"). A malformed record is a finding,
never an exception.

Replay (`strict=False`) is the fast path for large logs: orjson and a cheap shape check instead of
pydantic, no hashing per event, and duplicates recognised by their bytes (the audit compares
canonical JSON instead). What survives decoding is the same `CampaignHistory` either way, from
which `time_in_state` and `rebuild_state` (the `campaign.state` record the orchestrator would
hold, `Campaign.snapshot()` format) are computed.

What a hash chain cannot show on its own: a dropped or edited *last* event of a campaign (nothing
after it carries its hash). `check_state_records` closes that gap by comparing each campaign's
last event with the `sequence` and `lastHash` its `campaign.state` record holds. The chain is not
keyed either: it exposes accidents and naive edits, not a forger who recomputes every hash.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, NamedTuple, Protocol

import orjson

from schemas.base import ContractError, decode
from schemas.events import STATE_CHANGED_TYPE, CampaignStateChangedEvent, event_hash
from schemas.instants import epoch_of
from schemas.types import TERMINAL_STATES, Action, CampaignState, Cause, DialerType, Intent

from .machine import Campaign
from .table import STABLE_STATES
from .windows import ToleranceWindows

__all__ = [
    "CampaignHistory",
    "EventLog",
    "Finding",
    "FindingKind",
    "LogRecord",
    "LogReplay",
    "TimelineEntry",
    "check_state_records",
    "parse_time",
    "rebuild_state",
    "time_in_state",
]

_STABLE = frozenset(s.value for s in STABLE_STATES)
_TERMINAL = frozenset(s.value for s in TERMINAL_STATES)
_STATE_OF: dict[object, str] = {s.value: s.value for s in CampaignState}
_FROM_OF: dict[object, str | None] = {**_STATE_OF, None: None}
_CAUSE_OF: dict[object, str] = {c.value: c.value for c in Cause}
_DIALER_OF: dict[object, str] = {d.value: d.value for d in DialerType}


class FindingKind(enum.StrEnum):
    """What is wrong. Stable words: the JSON report and its consumers switch on them."""

    MALFORMED = "MALFORMED"
    MISSING = "MISSING"
    CONFLICTING_DUPLICATE = "CONFLICTING_DUPLICATE"
    FROM_MISMATCH = "FROM_MISMATCH"
    HASH_MISMATCH = "HASH_MISMATCH"
    OUT_OF_ORDER = "OUT_OF_ORDER"
    WRONG_PARTITION = "WRONG_PARTITION"
    WRONG_KEY = "WRONG_KEY"
    WRONG_HEADER = "WRONG_HEADER"
    STATE_MISMATCH = "STATE_MISMATCH"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in the log, with where it is. `campaign_id`/`sequence` are None when unknown."""

    kind: FindingKind
    campaign_id: str | None
    sequence: int | None
    message: str
    partition: int | None = None
    offset: int | None = None

    def __str__(self) -> str:
        where = f" [partition {self.partition} offset {self.offset}]" if self.partition is not None else ""
        return f"{self.campaign_id or '(unknown campaign)'}: {self.message}{where}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "campaignId": self.campaign_id, "sequence": self.sequence,
                "message": self.message, "partition": self.partition, "offset": self.offset}


class LogRecord(Protocol):
    """What `EventLog` needs of a consumed record (`adapters.kafka.Record` is one)."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> str | None: ...
    @property
    def value(self) -> bytes | None: ...
    def header(self, name: str) -> str | None: ...


class TimelineEntry(NamedTuple):
    """One event as the timeline keeps it: small, because a log holds millions of them.

    `observed_at` is the event's `observedAt` as written (`at` in epoch seconds). `fingerprint`
    identifies the content: the canonical hash in strict mode (also the event's own chain hash),
    the hash of the record bytes otherwise.
    """

    sequence: int
    observed_at: str
    from_state: str | None
    to_state: str
    cause: str
    action: str | None
    command_id: str | None
    reason: str | None
    anomaly: dict[str, Any] | None
    errors: list[dict[str, Any]] | None
    platform_status: str | None
    halt: str | None  # why it is not dialing: paused, stopped, contacts-exhausted, forced-off, off
    prev_hash: str | None
    fingerprint: str | int
    partition: int
    offset: int

    @property
    def at(self) -> float:
        """`observed_at` in epoch seconds (raises ValueError if a replayed record carried garbage)."""
        return parse_time(self.observed_at)


@dataclass(slots=True)
class CampaignHistory:
    """One campaign's events in sequence order (after `finish`), and what was wrong with them."""

    campaign_id: str
    entries: list[TimelineEntry]
    last_event: dict[str, Any]
    duplicates: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def dialer_type(self) -> str:
        return str(self.last_event["data"].get("dialerType"))

    @property
    def dialer_id(self) -> str | None:
        value = self.last_event["data"].get("dialerId")
        return value if isinstance(value, str) else None

    @property
    def current(self) -> str:
        return self.entries[-1].to_state


@dataclass(slots=True)
class LogReplay:
    """Everything `EventLog.finish` found: histories by campaign id, and all findings."""

    records: int
    events: int
    duplicates: int
    histories: dict[str, CampaignHistory]
    findings: list[Finding]
    strict: bool

    @property
    def clean(self) -> bool:
        return not self.findings


class _Chain:
    __slots__ = ("by_seq", "campaign_id", "duplicates", "findings", "last_value", "partition", "top")

    def __init__(self, campaign_id: str, partition: int) -> None:
        self.campaign_id = campaign_id
        self.partition = partition
        self.by_seq: dict[int, TimelineEntry] = {}
        self.top = 0
        self.last_value: bytes | None = None
        self.duplicates = 0
        self.findings: list[Finding] = []


class EventLog:
    """Feed it batches of event records with `add`, then call `finish` once.

    `campaign` keeps one campaign (by record key); `since`/`until` (epoch seconds, inclusive)
    keep the events observed in that window. `strict` turns on the audit: schema validation,
    the hash chain, headers, and the checks `finish` runs.
    """

    def __init__(self, *, strict: bool, campaign: str | None = None,
                 since: float | None = None, until: float | None = None) -> None:
        self.strict = strict
        self._only = campaign
        self._since = since
        self._until = until
        self._chains: dict[str, _Chain] = {}
        self._findings: list[Finding] = []
        self._records = 0
        self._finished = False

    def add(self, records: Sequence[LogRecord]) -> None:
        """Take records in log order. The replay's hot loop: keep per-record work minimal."""
        if self._finished:
            raise RuntimeError("EventLog.add after finish()")
        self._records += len(records)
        if self._only is not None:
            records = [r for r in records if r.key == self._only]
        loads = orjson.loads
        chains = self._chains
        strict = self.strict
        windowed = self._since is not None or self._until is not None
        new_entry = tuple.__new__
        entry_type = TimelineEntry
        # Lookups that validate and intern at once: a bad value raises KeyError (malformed), a
        # good one is replaced by the shared string, so millions of entries share a few objects.
        to_of = _STATE_OF
        from_of = _FROM_OF
        cause_of = _CAUSE_OF
        dialer_of = _DIALER_OF
        since = -math.inf if self._since is None else self._since
        until = math.inf if self._until is None else self._until
        for record in records:
            value = record.value
            try:
                event = loads(value)  # type: ignore[arg-type]  # None (a tombstone) raises TypeError
                data = event["data"]
                campaign_id = data["campaignId"]
                sequence = data["sequence"]
                to_state = to_of[data["to"]]
                from_state = from_of[data["from"]]
                cause = cause_of[data["cause"]]
                dialer_of[data["dialerType"]]
                stamp = data["observedAt"]
                # Our own format is only shape-checked here (the audit validates it fully, and
                # `at` parses it when needed); anything else must parse now.
                if len(stamp) != 24 or stamp[23] != "Z" or stamp[10] != "T" or windowed:
                    at = parse_time(stamp)
                    if windowed and not (since <= at <= until):
                        continue
                if (type(sequence) is not int or sequence < 1 or type(campaign_id) is not str
                        or event["id"] != f"{campaign_id}:{sequence}" or event["type"] != STATE_CHANGED_TYPE):
                    raise ValueError
            except (orjson.JSONDecodeError, TypeError, KeyError, ValueError, IndexError):
                self._malformed(record, value)
                continue
            if strict:
                problem = self._strict_problem(record, value, campaign_id, event["id"])
                if problem is not None:
                    self._findings.append(Finding(FindingKind.MALFORMED, campaign_id, sequence, problem,
                                                  record.partition, record.offset))
                    continue
                fingerprint: str | int = event_hash(event)
            else:
                fingerprint = hash(value)
            partition = record.partition
            chain = chains.get(campaign_id)
            if chain is None:
                chain = chains[campaign_id] = _Chain(campaign_id, partition)
            entry = new_entry(entry_type, (
                sequence, stamp, from_state, to_state, cause, data.get("action"), data.get("commandId"),
                data.get("reason"), data.get("anomaly"), data.get("errors"), data.get("platformStatus"),
                data.get("halt"), data.get("prevHash") if strict else None, fingerprint, partition, record.offset,
            ))
            if sequence > chain.top:
                chain.top = sequence
                chain.last_value = value  # bytes: a kept dict per campaign would cost GC time
                chain.by_seq[sequence] = entry
                if partition != chain.partition or record.key != campaign_id:
                    self._placement(chain, record, entry)
            else:
                self._behind(chain, record, entry)

    def _malformed(self, record: LogRecord, value: bytes | None) -> None:
        """The slow path, for the rare bad record: say precisely what is wrong with it."""
        self._findings.append(Finding(FindingKind.MALFORMED, record.key, None,
                                      f"record is not a valid event: {_explain(value)}",
                                      record.partition, record.offset))

    def _strict_problem(self, record: LogRecord, value: bytes | None, campaign_id: str, event_id: str) -> str | None:
        try:
            decode(CampaignStateChangedEvent, value or b"")
        except ContractError as exc:
            return f"event does not fit the schema: {_describe(exc)}"
        # `event-id`/`event-type` since the events stopped carrying `ce_` headers (CloudEvents reads
        # those as binary mode); records written before then carry `ce_id`/`ce_type`.
        for name in ("event-id", "ce_id"):
            if record.header(name) not in (None, event_id):
                return f"header {name} {record.header(name)!r} is not the event id {event_id!r}"
        for name in ("event-type", "ce_type"):
            if record.header(name) not in (None, STATE_CHANGED_TYPE):
                return f"header {name} {record.header(name)!r} is not {STATE_CHANGED_TYPE!r}"
        return None

    def _placement(self, chain: _Chain, record: LogRecord, entry: TimelineEntry) -> None:
        if record.key != chain.campaign_id:
            chain.findings.append(Finding(
                FindingKind.WRONG_KEY, chain.campaign_id, entry.sequence,
                f"sequence {entry.sequence} is keyed {record.key!r}, not by its campaign id",
                record.partition, record.offset))
        if record.partition != chain.partition:
            chain.findings.append(Finding(
                FindingKind.WRONG_PARTITION, chain.campaign_id, entry.sequence,
                f"sequence {entry.sequence} is in partition {record.partition}, the campaign's earlier "
                f"events in partition {chain.partition} (per-campaign order is lost)",
                record.partition, record.offset))

    def _behind(self, chain: _Chain, record: LogRecord, entry: TimelineEntry) -> None:
        """A sequence at or below the highest seen: a re-delivery, a conflict, or a reordering."""
        sequence = entry.sequence
        first = chain.by_seq.get(sequence)
        if first is None:
            chain.by_seq[sequence] = entry
            if record.partition == chain.partition:
                chain.findings.append(Finding(
                    FindingKind.OUT_OF_ORDER, chain.campaign_id, sequence,
                    f"sequence {sequence} appears after sequence {chain.top} in the log (reordered)",
                    record.partition, record.offset))
            else:
                self._placement(chain, record, entry)
            return
        if first.fingerprint == entry.fingerprint:
            chain.duplicates += 1
            return
        how = "content" if self.strict else "bytes"
        chain.findings.append(Finding(
            FindingKind.CONFLICTING_DUPLICATE, chain.campaign_id, sequence,
            f"sequence {sequence} delivered twice with different {how} (first at partition "
            f"{first.partition} offset {first.offset}; kept the first)",
            record.partition, record.offset))

    def finish(self) -> LogReplay:
        """Order every campaign's events by sequence and, in strict mode, verify them."""
        self._finished = True
        histories: dict[str, CampaignHistory] = {}
        findings: list[Finding] = []
        for finding in self._findings:
            # A malformed record keyed by a known campaign belongs to that campaign's findings.
            chain = self._chains.get(finding.campaign_id or "")
            if chain is not None:
                chain.findings.append(finding)
            else:
                findings.append(finding)
        events = duplicates = 0
        for campaign_id in sorted(self._chains):
            chain = self._chains[campaign_id]
            by_seq = chain.by_seq
            entries = [by_seq[s] for s in sorted(by_seq)]
            history = CampaignHistory(campaign_id, entries, orjson.loads(chain.last_value or b"{}"), chain.duplicates,
                                      chain.findings)
            if self.strict:
                history.findings.extend(_verify(campaign_id, entries))
            history.findings.sort(key=lambda f: (f.sequence or 0, f.kind.value))
            findings.extend(history.findings)
            histories[campaign_id] = history
            events += len(entries)
            duplicates += chain.duplicates
        return LogReplay(self._records, events, duplicates, histories, findings, self.strict)


# Up to this many missing sequences in a row are named one by one; a longer gap is one finding.
_NAMED_GAP = 20


def _verify(campaign_id: str, entries: list[TimelineEntry]) -> list[Finding]:
    """Sequence, `from`/`to` and hash-chain checks over one campaign's entries in sequence order."""
    found: list[Finding] = []

    def add(kind: FindingKind, entry: TimelineEntry, message: str) -> None:
        found.append(Finding(kind, campaign_id, entry.sequence, message, entry.partition, entry.offset))

    previous: TimelineEntry | None = None
    for entry in entries:
        sequence = entry.sequence
        expected = 1 if previous is None else previous.sequence + 1
        if sequence - expected > _NAMED_GAP:
            found.append(Finding(FindingKind.MISSING, campaign_id, expected,
                                 f"sequences {expected} to {sequence - 1} missing"))
        else:
            found.extend(Finding(FindingKind.MISSING, campaign_id, missing, f"sequence {missing} missing")
                         for missing in range(expected, sequence))
        if sequence == 1:
            if entry.from_state is not None:
                add(FindingKind.FROM_MISMATCH, entry, f"sequence 1 has from {entry.from_state}; a first event has none")
            if entry.prev_hash is not None:
                add(FindingKind.HASH_MISMATCH, entry, "sequence 1 carries a prevHash; a first event has none")
        elif previous is not None and previous.sequence == sequence - 1:
            if entry.from_state != previous.to_state:
                add(FindingKind.FROM_MISMATCH, entry,
                    f"sequence {sequence} from {entry.from_state} does not follow sequence "
                    f"{previous.sequence} to {previous.to_state}")
            if entry.prev_hash != previous.fingerprint:
                what = "has no prevHash" if entry.prev_hash is None else "prevHash does not match"
                add(FindingKind.HASH_MISMATCH, entry,
                    f"sequence {sequence} {what} sequence {previous.sequence} "
                    f"(sequence {previous.sequence} edited, or {sequence} forged?)")
        elif entry.from_state is None:
            add(FindingKind.FROM_MISMATCH, entry, f"sequence {sequence} has no from; only a first event may")
        previous = entry
    return found


def check_state_records(replay: LogReplay, records: Mapping[str, Mapping[str, Any]]) -> list[Finding]:
    """Compare each campaign's last event with its `campaign.state` record (`sequence`, `lastHash`).

    Finds what the chain alone cannot: a dropped or edited last event. A record ahead of the log
    can also mean events still in an instance's outbox, so audit a quiet system.
    """
    found: list[Finding] = []
    for campaign_id, record in sorted(records.items()):
        history = replay.histories.get(campaign_id)
        sequence = record.get("sequence")
        if history is None or not isinstance(sequence, int):
            continue
        last = history.entries[-1]
        if sequence > last.sequence:
            missing = f"sequence {sequence}" if sequence == last.sequence + 1 else \
                f"sequences {last.sequence + 1} to {sequence}"
            found.append(Finding(FindingKind.MISSING, campaign_id, last.sequence + 1,
                                 f"{missing} missing: campaign.state records sequence {sequence}, "
                                 f"the log ends at {last.sequence}"))
        elif sequence == last.sequence and replay.strict and record.get("lastHash") not in (None, last.fingerprint):
            found.append(Finding(FindingKind.STATE_MISMATCH, campaign_id, sequence,
                                 f"sequence {sequence} does not match the lastHash in campaign.state (edited?)",
                                 last.partition, last.offset))
    for finding in found:
        replay.histories[finding.campaign_id or ""].findings.append(finding)
    replay.findings.extend(found)
    return found


def time_in_state(history: CampaignHistory) -> dict[str, float]:
    """Seconds spent in each state between events; the current state (still open) is not counted."""
    spent: dict[str, float] = {}
    entries = history.entries
    for entry, following in pairwise(entries):
        spent[entry.to_state] = spent.get(entry.to_state, 0.0) + max(0.0, following.at - entry.at)
    return spent


def rebuild_state(history: CampaignHistory, windows: ToleranceWindows) -> dict[str, Any]:
    """The `campaign.state` record the orchestrator would hold after this history.

    Same format as `Orchestrator.snapshot` (`Campaign.snapshot()` plus `heldCommand` None), the same
    bookkeeping as `CampaignMachine`: `enteredAt` is when the last real move was observed (a delay
    event keeps the state, so it keeps `enteredAt`, but restarts the deadline); the transition in
    flight keeps its command. What events do not carry is None: `contactListId` (the orchestrator
    reads it from the platform at its next reconcile), `held`, `heldCommand`. `enteredAt` has
    millisecond resolution (that of `observedAt`).
    """
    entries = history.entries
    last = entries[-1]
    data = history.last_event.get("data", {})
    dialer_type = DialerType(data.get("dialerType", DialerType.PREDICTIVE))
    entered = next((e.at for e in reversed(entries) if e.from_state != e.to_state), entries[0].at)
    last_stable = next((e.to_state for e in reversed(entries) if e.to_state in _STABLE), "STOPPED")
    window = windows.window(dialer_type, CampaignState(last.to_state))
    in_flight = last.to_state not in _TERMINAL
    action = last.action if in_flight and last.action in _ACTIONS else None
    campaign = Campaign(
        history.campaign_id, CampaignState(last.to_state), dialer_type,
        dialer_id=history.dialer_id,
        sequence=last.sequence,
        entered_at=entered,
        deadline=None if window is None else last.at + window,
        last_stable=CampaignState(last_stable),
        command_id=last.command_id if in_flight else None,
        action=Action(action) if action else None,
        platform_status=next((e.platform_status for e in reversed(entries) if e.platform_status is not None), None),
    )
    campaign.last_hash = event_hash(history.last_event) if history.last_event else None
    campaign.intent = Intent(data["intent"]) if data.get("intent") in _INTENTS else None
    record = campaign.snapshot()
    record["heldCommand"] = None
    record["scheduledCommands"] = None
    return record


_ACTIONS = frozenset(a.value for a in Action)
_INTENTS = frozenset(i.value for i in Intent)


# --- time ----------------------------------------------------------------------------------------

def parse_time(text: str) -> float:
    """RFC 3339 text to epoch seconds, as every stored instant is read (schemas/instants.py `epoch_of`).

    Raises ValueError (or TypeError for a non-string) on anything else that is not a timestamp
    with a zone.
    """
    if not isinstance(text, str):
        raise TypeError(f"not a timestamp: {type(text).__name__}")
    return epoch_of(text)


def _explain(value: bytes | None) -> str:
    if value is None:
        return "a tombstone (no value)"
    try:
        decode(CampaignStateChangedEvent, value)
    except ContractError as exc:
        return _describe(exc)
    event = orjson.loads(value)
    data = event["data"]
    if event["id"] != f"{data['campaignId']}:{data['sequence']}":
        return f"id {event['id']!r} is not {{campaignId}}:{{sequence}}"
    return "does not fit the event shape"


def _describe(exc: Exception) -> str:
    if isinstance(exc, ContractError):
        first = exc.errors[0] if exc.errors else {"field": "(message)", "message": str(exc)}
        more = f" (+{len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
        return f"{first['field']}: {first['message']}{more}"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
