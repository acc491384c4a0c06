"""The demo's live terminal view: a pure `render(snapshot, width, height)` and a refresh loop around it.

Everything shown comes from one immutable `Snapshot` (campaign rows, dialer rows, the notification
channel, reads per second, the newest lines of the event stream), so a frame is a pure function
of what was observed and a test can render a fixed snapshot at a fixed terminal size and read
the result. `LiveView` is the only part that touches a terminal: it switches to the alternate
screen, hides the cursor, redraws a few times per second from a snapshot callback, and puts the
terminal back however it is stopped (end of the run, Ctrl-C, an error).

Plain ANSI, no dependency: each line is laid out in visible characters first (padded or cut to
the width, so a frame never wraps), then colour codes are wrapped around the styled segments.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from fsm.tasks import cancel_and_wait

__all__ = [
    "CampaignRow",
    "DialerRow",
    "LiveView",
    "Snapshot",
    "StreamLine",
    "format_seconds",
    "plain_frame",
    "render",
]

_RESET = "\x1b[0m"
_STYLES: dict[str, str] = {
    "bold": "\x1b[1m",
    "dim": "\x1b[2m",
    "red": "\x1b[31m",
    "green": "\x1b[32m",
    "yellow": "\x1b[33m",
    "blue": "\x1b[34m",
    "magenta": "\x1b[35m",
    "cyan": "\x1b[36m",
    "inverse": "\x1b[7m",
}
_STATE_STYLE: dict[str, str] = {
    "RUNNING": "green",
    "STOPPED": "dim",
    "PAUSED": "yellow",
    "STARTING": "cyan",
    "PAUSING": "cyan",
    "STOPPING": "magenta",
    "FAILED": "red",
}
_KIND_STYLE: dict[str, str] = {
    "step": "bold",
    "command": "blue",
    "result": "",
    "event": "",
    "info": "dim",
    "ok": "green",
    "fail": "red",
    "skip": "yellow",
}
_MIN_EVENT_LINES = 3


@dataclass(frozen=True, slots=True)
class CampaignRow:
    """One campaign as the service's model holds it. Times are clock (simulated) seconds."""

    campaign_id: str
    name: str
    dialer_id: str
    dialer_type: str
    state: str
    in_state_s: float
    window_s: float | None = None  # the tolerance window of a transitional state
    note: str = ""


@dataclass(frozen=True, slots=True)
class DialerRow:
    """One dialer: the service's gate (in flight, queued) beside the platform's load."""

    dialer_id: str
    dialer_type: str
    in_flight: int
    max_in_flight: int
    queued_high: int
    queued_standard: int
    active_calls: int | None = None
    capacity: int | None = None


@dataclass(frozen=True, slots=True)
class StreamLine:
    """A line of the event stream. `kind`: step, command, result, event, info, ok, fail, skip."""

    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    speed: float
    sim_elapsed_s: float
    real_elapsed_s: float
    step: str
    narration: str
    campaigns: tuple[CampaignRow, ...]
    dialers: tuple[DialerRow, ...]
    notifications_up: bool
    reads_per_s: int
    reads_peak: int
    read_limit: int
    commands: int = 0
    results: int = 0
    events: int = 0
    stream: tuple[StreamLine, ...] = field(default_factory=tuple)


def format_seconds(seconds: float) -> str:
    """`42s`, `2m 05s`, `1h 02m`: short enough for a table cell."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


class _Line:
    """Segments of (text, style); laid out to an exact visible width before colour is added."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[tuple[str, str]] = []

    def add(self, text: str, style: str = "") -> _Line:
        self._parts.append((text, style))
        return self

    def cell(self, text: str, width: int, style: str = "", *, right: bool = False) -> _Line:
        text = text if len(text) <= width else text[: max(0, width - 1)] + "~"
        return self.add((text.rjust(width) if right else text.ljust(width)) + " ", style)

    def fit(self, width: int, color: bool) -> str:
        out: list[str] = []
        used = 0
        for text, style in self._parts:
            if used >= width:
                break
            piece = text[: width - used]
            used += len(piece)
            codes = "".join(_STYLES[s] for s in style.split() if s in _STYLES) if color else ""
            out.append(f"{codes}{piece}{_RESET}" if codes else piece)
        out.append(" " * (width - used))
        return "".join(out)


def render(snapshot: Snapshot, width: int, height: int, *, color: bool = False) -> str:
    """The whole frame: exactly `height` lines of exactly `width` visible characters."""
    width = max(20, width)
    height = max(8, height)
    lines: list[_Line] = []

    head = _Line().add(" campaign-fsm demo ", "inverse bold")
    head.add(f"  speed x{snapshot.speed:g}  sim {_clock(snapshot.sim_elapsed_s)}"
             f"  real {_clock(snapshot.real_elapsed_s)}  ")
    head.add(snapshot.step, "bold")
    lines.append(head)
    lines.append(_Line().add(" " + snapshot.narration, "dim"))

    dialer_lines = 1 + len(snapshot.dialers)
    fixed = len(lines) + 1 + dialer_lines + 1 + 1  # campaign header, dialers, status, events rule
    room_for_rows = max(0, height - fixed - _MIN_EVENT_LINES)
    rows = list(snapshot.campaigns)
    shown = rows if len(rows) <= room_for_rows else rows[: max(0, room_for_rows - 1)]
    hidden = len(rows) - len(shown)

    wide = width >= 118
    id_w = max(8, min(20, max((len(r.campaign_id) for r in rows), default=8)))
    dialer_w = max(6, min(20, max((len(r.dialer_id) for r in rows), default=6)))
    layout = _Columns(id_w, 22 if wide else 0, dialer_w, 11 if wide else 5)
    lines.append(_campaign_header(layout))
    for row in shown:
        lines.append(_campaign_line(row, layout, wide))
    if hidden:
        lines.append(_Line().add(f" ... {hidden} more campaigns (enlarge the terminal)", "dim"))

    lines.append(_Line().add(" DIALER".ljust(20) + " TYPE".ljust(13) + "IN FLIGHT  QUEUED HIGH/STD  "
                             "CALLS / CAPACITY", "bold"))
    for dialer in snapshot.dialers:
        lines.append(_dialer_line(dialer))

    status = _Line().add(" notifications ")
    status.add("UP" if snapshot.notifications_up else "DOWN (polling)",
               "green bold" if snapshot.notifications_up else "red bold")
    over = snapshot.reads_peak > snapshot.read_limit
    status.add("   reads/s ")
    status.add(f"{snapshot.reads_per_s}/{snapshot.read_limit}", "bold")
    status.add(f" (peak {snapshot.reads_peak}/{snapshot.read_limit})", "red bold" if over else "")
    status.add(f"   commands {snapshot.commands}  results {snapshot.results}  events {snapshot.events}")
    lines.append(status)

    lines.append(_Line().add(" EVENTS " + "-" * (width - 8), "dim"))
    room = max(0, height - len(lines))
    for item in snapshot.stream[len(snapshot.stream) - room:] if room else ():
        lines.append(_Line().add(" " + item.text, _KIND_STYLE.get(item.kind, "")))
    while len(lines) < height:
        lines.append(_Line())
    return "\n".join(line.fit(width, color) for line in lines[:height])


def _clock(seconds: float) -> str:
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


@dataclass(frozen=True, slots=True)
class _Columns:
    campaign: int
    name: int  # 0: no name column (narrow terminals)
    dialer: int
    kind: int


# Narrow terminals show the dialer type as a short code; the dialer table spells it out.
_SHORT_TYPE = {"PREDICTIVE": "PRED", "PROGRESSIVE": "PROG", "POWER": "POWER"}


def _campaign_header(c: _Columns) -> _Line:
    line = _Line().add(" ").cell("CAMPAIGN", c.campaign, "bold")
    if c.name:
        line.cell("NAME", c.name, "bold")
    return (line.cell("DIALER", c.dialer, "bold").cell("TYPE", c.kind, "bold").cell("STATE", 8, "bold")
            .cell("IN STATE/WINDOW", 15, "bold").add("LAST RESULT", "bold"))


def _campaign_line(row: CampaignRow, c: _Columns, wide: bool) -> _Line:
    line = _Line().add(" ").cell(row.campaign_id, c.campaign)
    if c.name:
        line.cell(row.name, c.name, "dim")
    spent = format_seconds(row.in_state_s)
    if row.window_s is not None:
        spent += f" / {format_seconds(row.window_s)}"
    late = row.window_s is not None and row.in_state_s > row.window_s
    kind = row.dialer_type if wide else _SHORT_TYPE.get(row.dialer_type, row.dialer_type)
    return (line.cell(row.dialer_id, c.dialer).cell(kind, c.kind)
            .cell(row.state, 8, _STATE_STYLE.get(row.state, "") + " bold")
            .cell(spent, 15, "red" if late else "").add(row.note, "dim"))


def _dialer_line(d: DialerRow) -> _Line:
    line = _Line().add(" ").cell(d.dialer_id, 18).cell(d.dialer_type, 12)
    full = d.in_flight >= d.max_in_flight
    line.cell(f"{d.in_flight}/{d.max_in_flight}", 10, "yellow bold" if full else "bold")
    line.cell(f"{d.queued_high}/{d.queued_standard}", 16, "yellow" if d.queued_high + d.queued_standard else "")
    if d.active_calls is None or not d.capacity:
        line.add("-")
    else:
        share = d.active_calls / d.capacity
        line.add(f"{d.active_calls}/{d.capacity} ({share:.0%})", "red bold" if share > 0.8 else "")
    return line


# --- the live terminal ---------------------------------------------------------------------------

_ENTER = "\x1b[?1049h\x1b[?25l\x1b[2J"  # alternate screen, hide the cursor, clear
_LEAVE = "\x1b[?25h\x1b[?1049l"  # show the cursor, back to the normal screen
_HOME = "\x1b[H"


class LiveView:
    """Redraws `render(snapshot())` on `out` every `1/refresh_hz` s while `running()` is entered.

    `size` fixes the terminal size (tests); by default it is read before every frame, so resizing
    the window works. The last column is left empty: writing it makes some terminals wrap.
    """

    def __init__(
        self,
        out: TextIO,
        snapshot: Callable[[], Snapshot],
        *,
        refresh_hz: float = 4.0,
        size: tuple[int, int] | None = None,
        color: bool = True,
    ) -> None:
        if refresh_hz <= 0:
            raise ValueError(f"refresh_hz must be > 0, got {refresh_hz!r}")
        self._out = out
        self._snapshot = snapshot
        self._period = 1.0 / refresh_hz
        self._size = size
        self._color = color
        self.frames = 0

    def size(self) -> tuple[int, int]:
        if self._size is not None:
            return self._size
        columns, lines = shutil.get_terminal_size((100, 30))
        return columns, lines

    def draw(self) -> None:
        columns, lines = self.size()
        frame = render(self._snapshot(), columns - 1, lines, color=self._color)
        self._out.write(_HOME + frame)
        self._out.flush()
        self.frames += 1

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self._out.write(_ENTER)
        self._out.flush()
        task = asyncio.create_task(self._loop(), name="demo-tui-refresh")
        try:
            yield
        finally:
            await cancel_and_wait(task)
            self._out.write(_LEAVE)
            self._out.flush()

    async def _loop(self) -> None:
        while True:
            self.draw()
            await asyncio.sleep(self._period)


def plain_frame(snapshot: Snapshot, size: Sequence[int] = (100, 30)) -> str:
    """A frame without colour, for printing into the scrollback once the live view has closed."""
    return render(snapshot, size[0], size[1], color=False)
