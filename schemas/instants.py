"""Epoch seconds (the core's floats) to and from the one timestamp format we write (TIMESTAMP_PATTERN).

The core keeps time as float epoch seconds; the wire carries RFC 3339, UTC, milliseconds, `Z`.
Both directions go through the microsecond first (datetime's resolution, that of every command's
`issuedAt`): a float is never exactly a decimal millisecond (`…00.123` is `…00.12299990654`), so
cutting it straight to milliseconds would turn `.123` into `.122`, and a stored then restored time
would lose a millisecond each round. Taken to the microsecond, a time already on a millisecond
writes as itself, and parsing gives the nearest float to the decimal written (what
`datetime.timestamp()` gives for the same text), so `epoch_stamp(epoch_of(s)) == s`. A float between
two milliseconds is then cut (or rounded up) exactly: what is written never reads back on the wrong
side of it, not even by the half microsecond the first step may move it.

Where the core decides by a stored time (`campaign.state`: a deadline, the replay horizon), the
millisecond is rounded up (`up=True`), so a restore never moves a limit earlier: a command the
horizon refused is still refused, a tolerance window is never shortened.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

__all__ = ["epoch_of", "epoch_stamp"]

# Whole seconds already formatted: a record's instants (and the replay memory's) repeat across
# snapshots, and strftime is most of the cost. Bounded: emptied when it grows past this.
_seconds: dict[int, str] = {}
_SECONDS_KEPT = 100_000
_limits: dict[float, str] = {}
_EARLIEST, _LATEST = 0, 253_402_300_800  # 1970-01-01, 10000-01-01
_LIMITS_KEPT = 100_000
_minutes: dict[str, int] = {}
# `.mmmZ` of every millisecond: a concatenation costs less than formatting the number each time.
_MILLIS = tuple(f".{m:03d}Z" for m in range(1000))


def epoch_stamp(ts: float, *, up: bool = False) -> str:
    """`ts` (epoch seconds) as `YYYY-MM-DDTHH:MM:SS.mmmZ`: to the microsecond, then the millisecond
    cut (when something happened), or with `up` raised to the next one unless already on one (a
    limit the core compares against)."""
    if up:
        # Rounded up are the replay memory's times (up to `replay_memory` per campaign), written again
        # at every snapshot of the campaign: remembered, so a snapshot costs a lookup per entry.
        text = _limits.get(ts)
        if text is None:
            if len(_limits) >= _LIMITS_KEPT:
                _limits.clear()
            text = _limits[ts] = _stamp(ts, True)
        return text
    # Every event is stamped here, so the cut is checked only where it can be wrong: a microsecond
    # off a millisecond is more than half a microsecond above the cut in fact, and rounding to a
    # float is monotonic, so the cut cannot read back above `ts`. On a millisecond (a time parsed
    # from this format, or one within half a microsecond of it) the float of the cut is compared.
    whole = int(ts // 1)
    micros = round((ts - whole) * 1_000_000)
    millis = micros // 1000
    if not micros % 1000 and (whole * 1000 + millis) / 1000 > ts:
        return _stamp(ts, False)
    return (_seconds.get(whole) or _second(whole)) + _MILLIS[millis]


def _stamp(ts: float, up: bool) -> str:
    whole = int(ts // 1)
    micros = round((ts - whole) * 1_000_000)
    millis = -(-micros // 1000) if up else micros // 1000
    # The microsecond step may have crossed a millisecond (a float within half a microsecond of
    # one): what is written must read back on the promised side of `ts`, exactly.
    back = (whole * 1000 + millis) / 1000  # what `epoch_of` gives for the text
    if up and back < ts:
        millis += 1
    elif not up and back > ts:
        millis -= 1
    if millis >= 1000:
        whole, millis = whole + 1, millis - 1000
    elif millis < 0:
        whole, millis = whole - 1, millis + 1000
    return (_seconds.get(whole) or _second(whole)) + _MILLIS[millis]


def _second(whole: int) -> str:
    if len(_seconds) >= _SECONDS_KEPT:
        _seconds.clear()
    text = _seconds[whole] = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return text


def epoch_of(value: object) -> float:
    """Epoch seconds of a stored instant: our own format (cached fast path), any RFC 3339 time with
    a zone, or a number (records written before the one format carried epoch seconds).

    Raises ValueError (TypeError for anything else) on what is not an instant.
    """
    if isinstance(value, bool):
        raise TypeError(f"not an instant: {value!r}")
    if isinstance(value, int | float):
        # Only what can be written again: a planted 1e12 must not fail the campaign's next snapshot.
        if not _EARLIEST <= value < _LATEST:
            raise ValueError(f"not an instant: {value!r} epoch seconds is outside years 1970 to 9999")
        return float(value)
    if not isinstance(value, str):
        raise TypeError(f"not an instant: {type(value).__name__}")
    if len(value) == 24 and value[23] == "Z" and value[19] == "." and value[16] == ":" and value[10] == "T":
        minute = _minutes.get(value[:16])
        if minute is None:
            minute = _minute(value[:16])
        digits = value[17:19] + value[20:23]
        if not digits.isdigit() or int(value[17:19]) > 59:
            raise ValueError(f"not an instant: {value!r}")
        return ((minute + int(value[17:19])) * 1000 + int(value[20:23])) / 1000  # one rounding: the nearest float
    stamp = datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        raise ValueError(f"instant without a zone: {value!r}")
    utc = stamp.astimezone(UTC)
    return (calendar.timegm(utc.timetuple()) * 1_000_000 + utc.microsecond) / 1_000_000


def _minute(prefix: str) -> int:
    stamp = datetime.fromisoformat(prefix)  # validates every field
    if len(_minutes) > 100_000:
        _minutes.clear()
    value = _minutes[prefix] = calendar.timegm(stamp.timetuple())
    return value
