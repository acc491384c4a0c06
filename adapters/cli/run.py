"""`campaign-fsm run` (the service) and `campaign-fsm config check` (validate a configuration)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from ..logs import configure_logging
from ..settings import ConfigFileError, Settings, load_settings

__all__ = ["register"]


def _load(args: argparse.Namespace) -> Settings | None:
    try:
        return load_settings(args.config)
    except ConfigFileError as exc:
        print(f"campaign-fsm: {exc}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    settings = _load(args)
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


def _check(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return 1
    problems = []
    try:
        settings.platform.url  # noqa: B018  # raises when neither base_url nor region is set
    except ValueError as exc:
        problems.append(f"platform: {exc}")
    if not settings.platform.client_id:
        problems.append("platform.client_id is empty")
    if not settings.platform.client_secret.get_secret_value():
        problems.append("platform.client_secret is empty")
    if problems:
        print("campaign-fsm: invalid configuration:\n" + "\n".join(f"  {p}" for p in problems), file=sys.stderr)
        return 1
    print(f"configuration ok: profile {settings.platform.profile} at {settings.platform.url}, "
          f"kafka {settings.kafka.bootstrap} (group {settings.kafka.group_id}), "
          f"{settings.platform.read_limit_per_s} reads/s")
    return 0


def register(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run", help="run the service (configuration from CAMPAIGN_FSM_* variables and --config)",
        description="Run campaign-fsm: consume commands, drive the platform, publish state changes. "
        "Configuration comes from CAMPAIGN_FSM_* environment variables (nested with __, e.g. "
        "CAMPAIGN_FSM_PLATFORM__BASE_URL) over an optional JSON/TOML file. See docs/configuration.md.")
    run.add_argument("--config", help="a JSON or TOML configuration file (default: $CAMPAIGN_FSM_CONFIG)")
    run.set_defaults(func=_run)
    config = subparsers.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    config_sub.required = True
    check = config_sub.add_parser("check", help="validate a configuration and say exactly what is wrong")
    check.add_argument("--config", help="a JSON or TOML configuration file (default: $CAMPAIGN_FSM_CONFIG)")
    check.set_defaults(func=_check)
