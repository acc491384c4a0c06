"""`campaign-fsm demo`: the one-command tour of the product (see `adapters.devtools.demo` for the scenario).

::

    campaign-fsm demo                 # live terminal view, bundled noida broker, time x20
    campaign-fsm demo --no-tui        # plain lines, for logs and CI
    campaign-fsm demo --speed 10 --keep-data ./demo-run
    campaign-fsm demo --profile genesys --no-tui   # the Genesys Cloud API; what it cannot show is skipped

Exit codes: 0 every scripted situation was seen on the topics and the audit is clean; 1 a
situation is missing or the audit found something; 2 bad options or no broker; 128+N when
stopped by signal N (130 for Ctrl-C), after stopping everything it started.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..devtools.brokers import BROKER_ENV_VAR
from ..devtools.demo import DEFAULT_SPEED, DemoOptions, main

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="run a scripted shift against a bundled broker and the platform simulator, live",
        description="Start a bundled Kafka-protocol broker, the platform simulator (12 campaigns on "
        "predictive, progressive and power dialers) and the service; publish a scripted shift of signed "
        "commands (shift start, pause/resume, a start refused mid-stop, a locked contact list, a dialer "
        "over 80 %%, a stalled predictive stop, a failure and its reset, a stop storm); show it live; "
        "then check every situation from the topics, audit campaign.events and write an HTML report. "
        "Ctrl-C stops everything cleanly.",
    )
    parser.add_argument("--speed", type=float, default=DEFAULT_SPEED, metavar="N",
                        help=f"run platform and service time N times faster (1..100, default {DEFAULT_SPEED:g})")
    parser.add_argument("--profile", choices=("guide", "genesys"), default="guide",
                        help="the platform API of simulator and service (default guide); a step needing an "
                        "action the profile's client does not support is skipped with the reason printed")
    parser.add_argument("--no-tui", action="store_true",
                        help="print one plain line per step, command, result and event instead of the live view")
    parser.add_argument("--broker", default=None, metavar="noida|tansu|HOST:PORT",
                        help=f"the broker: start a bundled one (noida, tansu) or use a running one "
                        f"(default ${BROKER_ENV_VAR}, else noida)")
    parser.add_argument("--keep-data", type=Path, default=None, metavar="DIR",
                        help="keep the broker data, demo.log and the report in DIR (default: a temporary "
                        "directory, removed at the end)")
    parser.add_argument("--topic-prefix", default=None, metavar="PREFIX",
                        help="prefix the topic names (default: none with a bundled broker, a fresh "
                        "'demo-<id>.' with HOST:PORT)")
    parser.add_argument("--report", type=Path, default=None, metavar="FILE",
                        help="where to write the HTML audit report (a JSON twin goes beside it)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    tui = not args.no_tui
    if tui and not sys.stdout.isatty():
        print("campaign-fsm demo: stdout is not a terminal: plain lines instead of the live view", file=sys.stderr)
        tui = False
    options = DemoOptions(
        speed=args.speed,
        tui=tui,
        broker=args.broker or os.environ.get(BROKER_ENV_VAR) or "noida",
        keep_data=args.keep_data,
        topic_prefix=args.topic_prefix,
        report=args.report,
        color=tui and "NO_COLOR" not in os.environ,
        profile=args.profile,
    )
    return main(options)
