"""`campaign-fsm config check`: validate a configuration and say exactly what is wrong."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..settings import ConfigFileError, Settings, load_settings

__all__ = ["load_or_report", "register"]


def load_or_report(args: argparse.Namespace) -> Settings | None:
    """The settings of `args.config` (and the environment); None, after saying why on stderr, when unusable."""
    try:
        return load_settings(args.config)
    except ConfigFileError as exc:
        print(f"campaign-fsm: {exc}", file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    settings = load_or_report(args)
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
    channels, instances = settings.notification_channels(), settings.platform.instances
    if settings.platform.notifications and instances * (channels + 1) > 20:
        print(f"campaign-fsm: warning: {instances} instances x ({channels} notification channels + 1 being "
              f"renewed) = {instances * (channels + 1)} > 20, the platform's cap per OAuth client: creating the "
              "21st silently removes another channel (set platform.max_channels to 20 // instances - 1 or less)",
              file=sys.stderr)
    print(f"configuration ok: profile {settings.platform.profile} at {settings.platform.url}, "
          f"kafka {settings.kafka.bootstrap} (group {settings.kafka.group_id}), "
          f"budget {_budget(settings)}")
    return 0


def _budget(settings: Settings) -> str:
    limit, window = settings.platform.budget()
    counted = "requests" if settings.platform.profile == "genesys" else "reads"
    return f"{limit} {counted} per {window:g} s"


def register(subparsers: Any) -> None:
    config = subparsers.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    config_sub.required = True
    check = config_sub.add_parser("check", help="validate a configuration and say exactly what is wrong")
    check.add_argument("--config", help="a JSON or TOML configuration file (default: $CAMPAIGN_FSM_CONFIG)")
    check.set_defaults(func=_check)
