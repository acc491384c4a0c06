"""The demo's terminal view: a fixed snapshot rendered at a fixed terminal size, read back as text."""

from __future__ import annotations

import asyncio
import io
import re

from adapters.devtools.tui import CampaignRow, DialerRow, LiveView, Snapshot, StreamLine, format_seconds, render

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _snapshot(**changes: object) -> Snapshot:
    fields: dict[str, object] = {
        "speed": 20.0,
        "sim_elapsed_s": 3725.0,
        "real_elapsed_s": 186.0,
        "step": "step 7/9: stalled predictive stop",
        "narration": "uk-retention-q3's stop drains for 140 s",
        "campaigns": (
            CampaignRow("uk-retention-q3", "UK Retention Q3", "dlr-pred-east", "PREDICTIVE", "STOPPING", 95.0,
                        180.0, "stop ACCEPTED"),
            CampaignRow("collections-60d", "Collections 60-90 days", "dlr-prog-central", "PROGRESSIVE",
                        "STOPPED", 42.0, None, "start DEFERRED DIALER_OVER_CAPACITY"),
            CampaignRow("event-rsvp", "Event RSVP", "dlr-power-west", "POWER", "FAILED", 3.0),
        ),
        "dialers": (
            DialerRow("dlr-pred-east", "PREDICTIVE", 2, 2, 1, 3, 130, 300),
            DialerRow("dlr-prog-central", "PROGRESSIVE", 0, 2, 0, 1, 87, 100),
        ),
        "notifications_up": True,
        "reads_per_s": 4,
        "reads_peak": 9,
        "read_limit": 10,
        "commands": 23,
        "results": 48,
        "events": 61,
        "stream": tuple(StreamLine("event", f"event line {i}") for i in range(1, 41)),
    }
    fields.update(changes)
    return Snapshot(**fields)  # type: ignore[arg-type]


def test_a_frame_has_the_exact_terminal_size() -> None:
    frame = render(_snapshot(), 100, 30)
    lines = frame.split("\n")
    assert len(lines) == 30
    assert {len(line) for line in lines} == {100}


def test_campaign_rows_show_state_time_in_state_window_and_note() -> None:
    lines = render(_snapshot(), 100, 30).split("\n")
    row = next(line for line in lines if line.startswith(" uk-retention-q3 "))
    assert "dlr-pred-east" in row and "PRED" in row and "STOPPING" in row
    assert "1m 35s / 3m 00s" in row, "time in state against the tolerance window"
    deferred = next(line for line in lines if "collections-60d" in line)
    assert "STOPPED" in deferred and "42s" in deferred and "DIALER_OVER_CAPACITY" in deferred
    assert any("event-rsvp" in line and "FAILED" in line for line in lines)


def test_dialer_rows_show_in_flight_queue_depth_and_load() -> None:
    lines = render(_snapshot(), 100, 30).split("\n")
    pred = next(line for line in lines if line.lstrip().startswith("dlr-pred-east"))
    assert re.search(r"\b2/2\b", pred), pred
    assert re.search(r"\b1/3\b", pred), "queued HIGH/STANDARD"
    assert "130/300 (43%)" in pred
    prog = next(line for line in lines if line.lstrip().startswith("dlr-prog-central"))
    assert re.search(r"\b0/2\b", prog) and "87/100 (87%)" in prog


def test_channel_state_and_reads_against_the_limit() -> None:
    up = render(_snapshot(), 100, 30)
    assert "notifications UP" in up
    assert "reads/s 4/10 (peak 9/10)" in up
    assert "commands 23  results 48  events 61" in up
    down = render(_snapshot(notifications_up=False), 100, 30)
    assert "notifications DOWN (polling)" in down


def test_header_shows_speed_clocks_and_step() -> None:
    head = render(_snapshot(), 100, 30).split("\n")[0]
    assert "speed x20" in head and "sim 1:02:05" in head and "real 0:03:06" in head
    assert "step 7/9: stalled predictive stop" in head


def test_the_event_stream_shows_the_newest_lines_that_fit() -> None:
    lines = render(_snapshot(), 100, 30).split("\n")
    shown = [int(m.group(1)) for line in lines if (m := re.search(r"event line (\d+)", line))]
    assert shown, "some events are shown"
    assert shown == list(range(41 - len(shown), 41)), "the newest, oldest first"
    taller = render(_snapshot(), 100, 40).split("\n")
    assert sum("event line" in line for line in taller) == len(shown) + 10


def test_a_small_terminal_cuts_rows_without_wrapping() -> None:
    frame = render(_snapshot(), 60, 12)
    lines = frame.split("\n")
    assert len(lines) == 12 and {len(line) for line in lines} == {60}
    assert "more campaigns" in frame
    assert any("notifications UP" in line for line in lines), "the status line survives"


def test_colour_adds_codes_but_not_width() -> None:
    plain = render(_snapshot(), 100, 30)
    coloured = render(_snapshot(), 100, 30, color=True)
    assert coloured != plain and "\x1b[" in coloured
    assert _ANSI.sub("", coloured) == plain


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (0, 9.9, 61, 3599, 3600 + 125)] == ["0s", "9s", "1m 01s", "59m 59s", "1h 02m"]


async def test_the_live_view_switches_screens_and_draws_frames() -> None:
    out = io.StringIO()
    drawn = asyncio.Event()
    calls = 0

    def snapshot() -> Snapshot:
        nonlocal calls
        calls += 1
        if calls == 2:
            drawn.set()
        return _snapshot()

    view = LiveView(out, snapshot, refresh_hz=50, size=(80, 24), color=False)
    async with view.running():
        await asyncio.wait_for(drawn.wait(), 5)
    text = out.getvalue()
    assert text.startswith("\x1b[?1049h"), "alternate screen first"
    assert text.endswith("\x1b[?25h\x1b[?1049l"), "cursor shown and normal screen restored last"
    frame = text.split("\x1b[H")[1]
    assert len(frame.split("\n")) == 24 and {len(line) for line in frame.split("\n")} == {79}
