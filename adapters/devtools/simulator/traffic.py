"""What the simulated platform was asked, kept so tests can assert on a client's behaviour.

Every API request served is one `RequestRecord` (admin calls are not: they are the test's, not the
client's). Beside it the log keeps the in-flight timeline: each time a campaign enters or leaves a
transitional state, the number of campaigns transitional on its dialer at that moment. From these:

* `max_in_flight()`: the most transitions in flight at once, per dialer (guide, edge case 2);
* `reads_per_second_peak()`: the most outbound GETs in any 1 s of wall time, 429s included;
* `commands_while_in_flight()`: commands sent while their campaign was still transitional (the
  guide's trap: a start issued before the stop reached STOPPED).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic.alias_generators import to_camel

__all__ = ["InFlightSample", "RequestKind", "RequestRecord", "TrafficLog", "peak_in_window"]

RequestKind = Literal["read", "command", "auth", "notifications", "other"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request served. Times: `sim_time` in simulated seconds, `wall_time` in real (monotonic) seconds.

    `campaign_state` and `campaign_in_flight` are the campaign's as the request arrived;
    `dialer_in_flight` is how many campaigns were transitional on the campaign's dialer then.
    """

    seq: int
    method: str
    path: str
    status: int
    kind: RequestKind
    sim_time: float
    wall_time: float
    campaign_id: str | None = None
    dialer_id: str | None = None
    action: str | None = None
    campaign_state: str | None = None
    campaign_in_flight: bool = False
    dialer_in_flight: int = 0

    def to_json(self) -> dict[str, Any]:
        return {to_camel(k): v for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class InFlightSample:
    """After a campaign entered or left a transitional state: how many are in flight on its dialer."""

    sim_time: float
    wall_time: float
    dialer_id: str
    campaign_id: str
    in_flight: int

    def to_json(self) -> dict[str, Any]:
        return {to_camel(k): v for k, v in asdict(self).items()}


def peak_in_window(times: Iterable[float], window: float = 1.0) -> int:
    """The most of `times` within any `window` (a half-open span: `t - first < window`)."""
    ordered = sorted(times)
    best = lo = 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class TrafficLog:
    def __init__(self) -> None:
        self._records: list[RequestRecord] = []
        self._samples: list[InFlightSample] = []

    def add(self, **fields: Any) -> RequestRecord:
        record = RequestRecord(seq=len(self._records) + 1, **fields)
        self._records.append(record)
        return record

    def note_in_flight(self, sample: InFlightSample) -> None:
        self._samples.append(sample)

    def clear(self) -> None:
        self._records.clear()
        self._samples.clear()

    @property
    def records(self) -> list[RequestRecord]:
        return list(self._records)

    @property
    def in_flight_timeline(self) -> list[InFlightSample]:
        return list(self._samples)

    def select(
        self, *, kind: RequestKind | None = None, status: int | None = None, campaign_id: str | None = None,
        method: str | None = None,
    ) -> list[RequestRecord]:
        return [
            r for r in self._records
            if (kind is None or r.kind == kind) and (status is None or r.status == status)
            and (campaign_id is None or r.campaign_id == campaign_id) and (method is None or r.method == method)
        ]

    def max_in_flight(self) -> dict[str, int]:
        """Per dialer, the most campaigns transitional at the same moment."""
        peak: dict[str, int] = {}
        for s in self._samples:
            peak[s.dialer_id] = max(peak.get(s.dialer_id, 0), s.in_flight)
        return peak

    def _read_times(self, clock: str) -> list[float]:
        if clock == "sim":
            return [r.sim_time for r in self._records if r.kind == "read"]
        return [r.wall_time for r in self._records if r.kind == "read"]

    def reads_per_second_peak(self, window: float = 1.0, *, clock: str = "wall") -> int:
        """The most read requests (429s included) within any `window` seconds of `clock` ("wall"/"sim")."""
        return peak_in_window(self._read_times(clock), window)

    def reads_per_second_mean(self, *, clock: str = "wall") -> float:
        times = self._read_times(clock)
        if len(times) < 2:
            return float(len(times))
        span = max(times) - min(times)
        return len(times) / span if span > 0 else float(len(times))

    def commands_while_in_flight(self) -> list[RequestRecord]:
        return [r for r in self._records if r.kind == "command" and r.campaign_in_flight]

    def commands_while_dialer_busy(self, limit: int) -> list[RequestRecord]:
        """Commands that arrived while `limit` or more campaigns were already transitional on the dialer."""
        return [r for r in self._records if r.kind == "command" and r.dialer_in_flight >= limit]

    def summary(self) -> dict[str, Any]:
        by_status: dict[str, int] = {}
        by_kind: dict[str, int] = {}
        for r in self._records:
            by_status[str(r.status)] = by_status.get(str(r.status), 0) + 1
            by_kind[r.kind] = by_kind.get(r.kind, 0) + 1
        return {
            "requests": len(self._records),
            "byStatus": by_status,
            "byKind": by_kind,
            "http429": sum(1 for r in self._records if r.status == 429),
            "http5xx": sum(1 for r in self._records if r.status >= 500),
            "readsPerSecondPeak": self.reads_per_second_peak(),
            "readsPerSecondMean": round(self.reads_per_second_mean(), 3),
            "maxInFlightPerDialer": self.max_in_flight(),
            "commandsWhileInFlight": [r.seq for r in self.commands_while_in_flight()],
        }
