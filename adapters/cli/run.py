"""`campaign-fsm run`: the service, until SIGTERM or SIGINT (a second signal forces the exit)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from ..logs import configure_logging
from ..settings import Settings
from .config import load_or_report

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    settings = load_or_report(args)
    if settings is None:
        return 2
    configure_logging(settings.log_level)
    return asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> int:
    from ..service import Service

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            stop.set()  # graceful: stop intake, finish bookkeeping, flush
        else:
            raise SystemExit(1)  # a second signal: give up waiting

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    return await Service(settings).run(stop)


def register(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run", help="run the service (configuration from CAMPAIGN_FSM_* variables and --config)",
        description="Run campaign-fsm: consume commands, drive the platform, publish state changes. "
        "Configuration comes from CAMPAIGN_FSM_* environment variables (nested with __, e.g. "
        "CAMPAIGN_FSM_PLATFORM__BASE_URL) over an optional JSON/TOML file. See docs/configuration.md.")
    run.add_argument("--config", help="a JSON or TOML configuration file (default: $CAMPAIGN_FSM_CONFIG)")
    run.set_defaults(func=_run)
