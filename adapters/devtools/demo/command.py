"""`campaign-fsm demo` as a process (`main`): the broker's lifecycle, signals and logs around one
`run_demo`. Ctrl-C (or SIGTERM) stops everything it started; a second one does not leave the
broker behind."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from adapters.logs import JsonFormatter

from ..brokers import BrokerError, BrokerHandle, parse_broker_choice, probe_kafka, start_broker
from .run import DemoOptions, run_demo

__all__ = ["main"]


class _Interrupted(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame: object) -> None:
    raise _Interrupted(signum)


@contextlib.contextmanager
def _signals(handler: Any) -> Iterator[None]:
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _logs_to(path: Path) -> Iterator[None]:
    """The service logs into the data dir: on the terminal they would tear the live view."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    quiet = {name: logging.getLogger(name).level for name in ("transitions", "aiokafka")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for name, old in quiet.items():
            logging.getLogger(name).setLevel(old)
        handler.close()


async def _run_until_signal(options: DemoOptions, broker: BrokerHandle, out: TextIO, data_dir: Path) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            task.cancel()
        else:
            sys.stderr.write("campaign-fsm demo: still stopping, please wait\n")

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        outcome = await run_demo(options, broker, out=out, data_dir=data_dir)
        return outcome.exit_code
    except asyncio.CancelledError:
        if not received:
            raise
        return 128 + received[0]
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
            # remove_signal_handler puts the defaults back; until main() is done, a signal still
            # has to end in the broker being stopped.
            signal.signal(sig, _raise_interrupted)


def main(options: DemoOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`campaign-fsm demo`: start the broker, run the demo, stop everything. Returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    problems = options.problems()
    if problems:
        for problem in problems:
            err.write(f"campaign-fsm demo: error: {problem}\n")
        return 2
    if options.keep_data is not None:
        options.keep_data.mkdir(parents=True, exist_ok=True)
        data_dir = options.keep_data
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="campaign-fsm-demo-"))
    handle: BrokerHandle | None = None
    code = 1
    try:
        with _signals(_raise_interrupted), _logs_to(data_dir / "demo.log"):
            try:
                handle = _start_broker(options.broker, data_dir / "broker", out)
                code = asyncio.run(_run_until_signal(options, handle, out, data_dir))
            except _Interrupted as exc:
                code = 128 + exc.signum
            except BrokerError as exc:
                err.write(f"campaign-fsm demo: error: {exc}\n")
                code = 2
        if code >= 128:
            out.write(f"\ncampaign-fsm demo: interrupted ({signal.Signals(code - 128).name}): the service and "
                      "the simulator are stopped; stopping the broker\n")
            out.flush()
    finally:
        # A second Ctrl-C must not leave the broker behind halfway through stopping it.
        with _signals(signal.SIG_IGN):
            if handle is not None:
                handle.stop()
        if options.keep_data is None:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            out.write(f"data kept in {data_dir} (broker data, demo.log)\n")
            out.flush()
    return code


def _start_broker(choice_text: str, directory: Path, out: TextIO) -> BrokerHandle:
    choice = parse_broker_choice(choice_text)
    if choice.kind == "external":
        assert choice.bootstrap is not None
        try:
            probe_kafka(choice.bootstrap, timeout=5.0)  # it asks the first address
        except (OSError, BrokerError) as exc:
            raise BrokerError(f"no Kafka broker answers at {choice.bootstrap}: {exc}") from None
        return BrokerHandle(kind="external", bootstrap=choice.bootstrap)
    out.write(f"starting the bundled {choice.kind} broker...\n")
    out.flush()
    return start_broker(choice.kind, directory)
