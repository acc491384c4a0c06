"""`campaign-fsm demo`: every scripted situation happens, as the topics show; Ctrl-C leaves nothing behind.

The first test runs the demo in-process against the session broker, with the live view drawn into
a buffer at a fixed size, then reads the three topics back itself and checks each situation from
those records (and that the checks fail when a fact is taken away); the second runs it on the
genesys profile, where what the profile cannot show is reported not applicable. The others run the real
command as a process, with the bundled broker it starts and stops by PID: once to its end with
`--no-tui` (what CI runs), and interrupted by SIGINT (live view, in a pseudo-terminal) and by
SIGTERM (plain lines), after which no process it started may remain.
"""

from __future__ import annotations

import copy
import fcntl
import io
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from adapters.audit import read_events
from adapters.devtools.brokers import BrokerHandle
from adapters.devtools.demo import SITUATIONS, DemoOptions, check_situations, run_demo
from adapters.kafka import read_topic
from adapters.platform.profiles import SUPPORTED_ACTIONS, Profile
from schemas.types import Action

pytestmark = pytest.mark.integration

_ROOT = Path(__file__).resolve().parents[2]
_SPEED = "40"


def _by_step(commands: list[dict[str, Any]], step: str) -> list[dict[str, Any]]:
    return [c for c in commands if c.get("requestedBy") == f"demo:{step}"]


def _results_of(results: list[dict[str, Any]], command: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(r["outcome"], r.get("reason")) for r in results if r["commandId"] == command["id"]]


def _events_of(events: list[dict[str, Any]], campaign_id: str) -> list[dict[str, Any]]:
    return sorted((e["data"] for e in events if e["subject"] == campaign_id), key=lambda d: d["sequence"])


async def test_every_situation_is_on_the_topics_and_the_audit_is_clean(
        broker: BrokerHandle, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    out = io.StringIO()
    options = DemoOptions(speed=float(_SPEED), tui=True, topic_prefix=unique_name("demo") + ".",
                          report=tmp_path / "report.html", tui_size=(100, 30), color=False)
    outcome = await run_demo(options, broker, out=out, data_dir=tmp_path)
    text = out.getvalue()
    assert outcome.exit_code == 0, text[-4000:]

    # The topics, read back here (the broker is the session's: still running).
    topics = outcome.topics
    config = broker.kafka_config(topics=topics)
    commands = [orjson.loads(r.value) for r in await read_topic(config, topics.commands) if r.value]
    results = [orjson.loads(r.value) for r in await read_topic(config, topics.results) if r.value]
    events = [orjson.loads(r.value) for r in await read_topic(config, topics.events) if r.value]

    # Facts checked directly, step by step.
    shift = _by_step(commands, "shift-start")
    assert len(shift) >= 6 and all(("COMPLETED", None) in _results_of(results, c) for c in shift)
    for command in shift:
        states = [d["to"] for d in _events_of(events, command["campaignId"])]
        assert states[:3] == ["STOPPED", "STARTING", "RUNNING"], (command["campaignId"], states)
    assert [_results_of(results, c) for c in _by_step(commands, "unsigned")] == [[("REFUSED", "UNSIGNED")]]
    refused = [c for c in _by_step(commands, "start-while-stopping")
               if ("REFUSED", "TRANSITION_IN_FLIGHT") in _results_of(results, c)]
    assert len(refused) == 1 and refused[0]["action"] == "start"
    locked = _by_step(commands, "locked-list")[0]
    assert _results_of(results, locked)[1:] == [("DEFERRED", "CONTACT_LIST_NOT_READY"), ("COMPLETED", None)]
    capacity = {c["priority"]: c for c in _by_step(commands, "over-capacity")}
    assert ("DEFERRED", "DIALER_OVER_CAPACITY") in _results_of(results, capacity["STANDARD"])
    assert ("DEFERRED", "DIALER_OVER_CAPACITY") not in _results_of(results, capacity["HIGH"])
    stall = _by_step(commands, "stalled-stop")[0]
    stall_events = _events_of(events, stall["campaignId"])
    assert "FAILED" not in [d["to"] for d in stall_events]
    failure = next(c for c in _by_step(commands, "failure-reset") if c["action"] == "start")
    failure_events = _events_of(events, failure["campaignId"])
    failed = [d for d in failure_events if d["to"] == "FAILED"]
    assert len(failed) == 1 and failed[0]["errors"][0]["code"] == "dialer.trunk.unavailable"
    reset = next(d for d in failure_events if d.get("action") == "reset")
    assert reset["from"] == "FAILED" and reset["to"] == "STOPPED" and reset["cause"] == "command"
    storm = _by_step(commands, "stop-storm")
    assert len(storm) >= 8 and all(("COMPLETED", None) in _results_of(results, c) for c in storm)

    # The demo's own verdict, recomputed from what we read, agrees; the audit of the topic is clean.
    situations = check_situations(commands, results, events)
    assert [s.key for s in situations] == [key for key, _ in SITUATIONS]
    assert all(s.ok for s in situations), [s for s in situations if not s.ok]
    assert [(s.key, s.ok) for s in outcome.situations] == [(s.key, s.ok) for s in situations]
    assert (await read_events(config, topics.events, strict=True)).clean
    assert outcome.audit_clean and outcome.report_path == tmp_path / "report.html"
    assert "CLEAN" in outcome.report_path.read_text()

    # Each check fails when the fact it stands for is taken away.
    def without(key: str, commands: list[Any], results: list[Any], events: list[Any]) -> bool:
        return next(s.ok for s in check_situations(commands, results, events) if s.key == key)

    assert not without("start-while-stopping", commands,
                       [r for r in results if r.get("reason") != "TRANSITION_IN_FLIGHT"], events)
    assert not without("locked-list", commands,
                       [r for r in results if r.get("reason") != "CONTACT_LIST_NOT_READY"], events)
    assert not without("over-capacity", [{**c, "priority": "STANDARD"} for c in commands], results, events)
    assert not without("failure-reset", commands, results,
                       [e for e in events if e["data"].get("action") != "reset"])
    stretched = copy.deepcopy(events)
    stop_event = next(e for e in stretched if e["subject"] == stall["campaignId"] and e["data"]["to"] == "STOPPING")
    stop_event["data"]["observedAt"] = "2000-01-01T00:00:00.000Z"
    # The demo runs scaled: its checks read the scaled clock's `platformTime` (issue 13), stretched too.
    stop_event["data"]["platformTime"] = "2000-01-01T00:00:00.000Z"
    assert not without("stalled-stop", commands, results, stretched), "STOPPING past its window"
    assert not without("stop-storm", commands, [r for r in results if r["commandId"] != storm[0]["id"]], events)
    assert not without("shift-start", commands, results, [e for e in events if e["data"]["to"] != "STARTING"])

    # The live view drew frames at the fixed size, then left the alternate screen for the summary.
    assert text.count("\x1b[?1049h") == 1 and text.count("\x1b[?25h\x1b[?1049l") == 1
    live, summary = text.split("\x1b[?25h\x1b[?1049l")
    frames = [f for f in live.split("\x1b[H")[1:] if f]
    assert len(frames) >= 3
    lines = frames[-1].split("\n")
    assert len(lines) == 30 and {len(line) for line in lines} == {99}
    assert any(line.startswith(" dlr-prog-central") and "/2" in line for line in lines)
    assert "notifications UP" in frames[-1] and "reads/s" in frames[-1]
    assert "uk-retention-q3" in summary and "demo PASSED" in summary and "HTML report:" in summary


async def test_the_genesys_profile_runs_every_situation_that_applies_and_says_why_others_do_not(
        broker: BrokerHandle, unique_name: Callable[[str], str], tmp_path: Path) -> None:
    out = io.StringIO()
    options = DemoOptions(speed=float(_SPEED), tui=False, topic_prefix=unique_name("demo-genesys") + ".",
                          report=tmp_path / "report.html", profile="genesys")
    outcome = await run_demo(options, broker, out=out, data_dir=tmp_path)
    text = out.getvalue()
    assert outcome.exit_code == 0, text[-4000:]
    assert "(genesys profile)" in text

    # Which situations apply is the running client's supported actions, whatever they are today.
    supported = SUPPORTED_ACTIONS[Profile.GENESYS]
    pausing = {Action.PAUSE, Action.RESUME} <= supported
    expected_skips = set() if pausing else {"pause-resume"}
    assert set(outcome.not_applicable) == expected_skips
    assert {s.key for s in outcome.situations if not s.applies} == expected_skips
    assert all(s.ok for s in outcome.situations if s.applies), [s for s in outcome.situations if not s.ok]
    assert len([s for s in outcome.situations if s.applies]) == len(SITUATIONS) - len(expected_skips)
    if not pausing:
        assert re.search(r"skip\s+3/9 pause and resume: not applicable: the genesys profile has no pause or "
                         r"resume action \(supported: start, stop\)", text)
        assert "[n/a] pause and resume" in text
        assert "(1 not applicable on genesys: pause-resume)" in text
    assert "demo PASSED" in text and "MISSING" not in text and outcome.audit_clean

    # Read back: Genesys shows no starting status, so the failing transition there is a stop.
    topics = outcome.topics
    config = broker.kafka_config(topics=topics)
    commands = [orjson.loads(r.value) for r in await read_topic(config, topics.commands) if r.value]
    results = [orjson.loads(r.value) for r in await read_topic(config, topics.results) if r.value]
    events = [orjson.loads(r.value) for r in await read_topic(config, topics.events) if r.value]
    failing = [c for c in _by_step(commands, "failure-reset")
               if any(outcome == "FAILED" for outcome, _ in _results_of(results, c))]
    assert [c["action"] for c in failing] == ["stop"]
    failed = [d for d in _events_of(events, failing[0]["campaignId"]) if d["to"] == "FAILED"]
    assert len(failed) == 1 and failed[0]["from"] == "STOPPING"
    assert failed[0]["errors"][0]["code"] == "dialer.trunk.unavailable"
    assert not _by_step(commands, "pause-resume") or pausing
    # The judge still needs the facts: without the FAILED event, no failure-reset.
    situations = check_situations(commands, results, [e for e in events if e["data"]["to"] != "FAILED"],
                                  not_applicable=outcome.not_applicable)
    assert not next(s.ok for s in situations if s.key == "failure-reset")


# --- the real command, as a process --------------------------------------------------------------


def _descendants(pid: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _leftovers(pids: set[int], data_dir: Path) -> list[str]:
    """Processes started by the run still alive: seen as descendants, or holding its data dir."""
    found = [f"pid {pid}" for pid in pids if _alive(pid)]
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with_dir = any(str(data_dir) in part for part in (proc.info.get("cmdline") or []))
        if with_dir and proc.info["pid"] != os.getpid():
            found.append(f"pid {proc.info['pid']}: {' '.join(proc.info['cmdline'])}")
    return found


class _Demo:
    """`python -m adapters.cli demo ...` with its output on a pseudo-terminal (100x30) or a file."""

    def __init__(self, args: list[str], tmp_path: Path, *, tty: bool) -> None:
        self.output = b""
        self.pids: set[int] = set()
        argv = [sys.executable, "-m", "adapters.cli", "demo", "--speed", _SPEED, *args]
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
        if tty:
            self._master, slave = pty.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
            self.process = subprocess.Popen(argv, cwd=_ROOT, stdin=slave, stdout=slave, stderr=slave, env=env)
            os.close(slave)
            self._file: Path | None = None
        else:
            self._master = -1
            self._file = tmp_path / "demo.out"
            with open(self._file, "wb") as sink:
                self.process = subprocess.Popen(argv, cwd=_ROOT, stdin=subprocess.DEVNULL, stdout=sink,
                                                stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def pump(self, until: Callable[[str], bool], limit_s: float) -> None:
        """Read output and note child processes until `until(output)` or the process ends."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            self.pids |= _descendants(self.process.pid)
            self._read(0.1)
            if until(self.text()) or self.process.poll() is not None:
                self._read(0.1)
                return
        raise AssertionError(f"no progress within {limit_s:.0f} s; output so far:\n{self.text()[-3000:]}")

    def _read(self, wait_s: float) -> None:
        if self._file is not None:
            time.sleep(wait_s)
            self.output = self._file.read_bytes()
            return
        ready, _, _ = select.select([self._master], [], [], wait_s)
        if ready:
            try:
                self.output += os.read(self._master, 1 << 16)
            except OSError:  # the other side closed: the process is gone
                pass

    def finish(self, limit_s: float) -> int:
        self.pump(lambda _: self.process.poll() is not None, limit_s)
        code = self.process.wait(timeout=10)
        if self._master >= 0:
            while True:  # drain what is left
                ready, _, _ = select.select([self._master], [], [], 0.1)
                if not ready:
                    break
                try:
                    chunk = os.read(self._master, 1 << 16)
                except OSError:
                    break
                if not chunk:
                    break
                self.output += chunk
            os.close(self._master)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        for pid in self.pids:
            if _alive(pid):
                psutil.Process(pid).kill()


@pytest.mark.kafka
def test_the_command_runs_to_its_end_with_no_tui(tmp_path: Path) -> None:
    data = tmp_path / "data"
    demo = _Demo(["--no-tui", "--keep-data", str(data), "--report", str(tmp_path / "report.html")], tmp_path,
                 tty=False)
    try:
        code = demo.finish(limit_s=240)
    finally:
        demo.kill()
    text = demo.text()
    assert code == 0, text[-4000:]
    assert re.search(r"step\s+1/9 shift start", text) and re.search(r"ok\s+9/9 stop storm: done", text)
    assert text.count("  [ok] ") == len(SITUATIONS) and "MISSING" not in text
    assert re.search(r"audit of \S+: \d+ records, .* CLEAN", text)
    assert f"HTML report: {tmp_path / 'report.html'}" in text and (tmp_path / "report.html").is_file()
    broker_pid = re.search(r"broker \w+ pid (\d+)", text)
    if broker_pid:  # a bundled broker: a child process, stopped by PID
        assert int(broker_pid.group(1)) in demo.pids
    assert not _leftovers(demo.pids, data)


@pytest.mark.kafka
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint-live-view", "sigterm-plain"])
def test_a_signal_mid_run_stops_everything_cleanly(tmp_path: Path, signum: signal.Signals) -> None:
    data = tmp_path / "data"
    live = signum is signal.SIGINT  # Ctrl-C in a terminal: the live view is on screen
    args = ["--keep-data", str(data)] + ([] if live else ["--no-tui"])
    demo = _Demo(args, tmp_path, tty=live)
    try:
        demo.pump(lambda text: re.search(r"step 2/9|2/9 unsigned", text) is not None, limit_s=120)
        assert demo.process.poll() is None, demo.text()[-3000:]
        started = set(demo.pids)
        demo.process.send_signal(signum)
        code = demo.finish(limit_s=60)
    finally:
        demo.kill()
    text = demo.text()
    assert code == 128 + signum, text[-3000:]
    assert f"interrupted ({signum.name})" in text
    if live:
        assert "\x1b[?1049h" in text and text.rfind("\x1b[?25h\x1b[?1049l") > text.rfind("\x1b[H"), \
            "cursor shown and the normal screen back after the last frame"
        assert "dlr-pred-east" in text and "notifications" in text
    else:
        assert "demo PASSED" not in text
    if os.environ.get("CAMPAIGN_FSM_BROKER", "noida") in ("noida", "tansu"):
        assert started, "the bundled broker ran as a child process"
    assert not _leftovers(demo.pids, data)


@pytest.mark.parametrize(("args", "message"), [
    (["--speed", "0"], "--speed must be within 1..100, got 0"),
    (["--speed", "500"], "--speed must be within 1..100, got 500"),
    (["--broker", "kafka.example"], "--broker: "),
    (["--topic-prefix", "bad/prefix"], "--topic-prefix 'bad/prefix'"),
    (["--keep-data", "/"], "--keep-data /: not empty"),
])
def test_bad_options_are_refused_with_a_clear_message(args: list[str], message: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from adapters.cli import main

    assert main(["demo", "--no-tui", *args]) == 2
    err = capsys.readouterr().err
    assert f"campaign-fsm demo: error: {message}" in err and "Traceback" not in err


def test_an_unreachable_broker_address_is_reported_not_waited_for(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from adapters.cli import main

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    assert main(["demo", "--no-tui", "--broker", f"127.0.0.1:{port}", "--keep-data", str(tmp_path)]) == 2
    assert time.monotonic() - started < 10
    assert f"no Kafka broker answers at 127.0.0.1:{port}" in capsys.readouterr().err
