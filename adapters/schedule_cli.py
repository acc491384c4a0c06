"""`campaign-fsm schedule FILE`: publish a shift plan's commands at the right moments.

::

    campaign-fsm schedule plan.toml --dry-run --from 2025-03-08T00:00Z --until 2025-03-11T00:00Z
    campaign-fsm schedule plan.toml --bootstrap kafka:9092            # runs until stopped (Ctrl-C)
    campaign-fsm schedule plan.toml --once                            # the next occurrence, then exit

The plan format and the daylight-saving rules are in `adapters/schedule.py`. `--dry-run` needs
neither a broker nor a key: it prints every occurrence in the window, in UTC and local time, with
a note where daylight saving moved one. Otherwise each occurrence is signed (key as for
`campaign-fsm send`: ``--key-id``/``--key-env``) and published ``--lead`` seconds ahead with
`notBefore` set to its instant. Exit status: 0 done (or stopped), 2 unusable plan, key or broker.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.commands import Command

from .cli.send import (
    EXIT_NOT_SENT,
    SendError,
    add_connection_arguments,
    aware_datetime,
    connection_from_args,
    publish_command,
)
from .clock import SystemClock
from .kafka import KafkaEdgeError, Producer
from .schedule import Occurrence, PlanError, Scheduler, load_plan, occurrences
from .signing import SigningKeyError

__all__ = ["register"]


def _dry_run(args: argparse.Namespace) -> int:
    plan = load_plan(args.file)
    start: datetime = args.start or datetime.now(UTC)
    until: datetime = args.until or start + timedelta(days=7)
    if until <= start:
        print(f"error: --until ({until.isoformat()}) must be after --from ({start.isoformat()})", file=sys.stderr)
        return EXIT_NOT_SENT
    found = occurrences(plan, start, until)
    print(f"# {len(found)} occurrence(s) from {start.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ} "
          f"until {until.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}")
    for occ in found:
        print(occ.line())
    return 0


async def _run(args: argparse.Namespace) -> int:
    plan = load_plan(args.file)
    config, signer = connection_from_args(args, "campaign-fsm-schedule")

    def published(occ: Occurrence, command: Command) -> None:
        print(f"published {command.id}  {occ.line()}", flush=True)

    async with Producer(config) as producer:
        async def publish(command: Command) -> None:
            await publish_command(producer, config.topics, command)

        scheduler = Scheduler(plan, publish=publish, signer=signer, clock=SystemClock(),
                              requested_by=args.requested_by, lead_s=args.lead, on_published=published)
        await scheduler.run(once=args.once)
    return 0 if not scheduler.given_up else 1


def _schedule(args: argparse.Namespace) -> int:
    try:
        if args.dry_run:
            return _dry_run(args)
        if args.start or args.until:
            print("error: --from/--until go with --dry-run", file=sys.stderr)
            return EXIT_NOT_SENT
        return asyncio.run(_run(args))
    except (PlanError, SendError, SigningKeyError, KafkaEdgeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_SENT


def _lead(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "schedule", help="publish a shift plan (JSON or TOML) as commands at the right moments",
        description="Publish a shift plan's commands, each signed and sent --lead seconds ahead of its "
        "local time with notBefore set, across daylight-saving changes. See adapters/schedule.py for the "
        "plan format.")
    parser.add_argument("file", metavar="FILE", help="the shift plan (.json or .toml)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="publish the next occurrence, then exit")
    mode.add_argument("--dry-run", action="store_true", help="print the occurrences; publish nothing")
    parser.add_argument("--from", dest="start", type=aware_datetime, default=None, metavar="ISO",
                        help="--dry-run window start (default now)")
    parser.add_argument("--until", type=aware_datetime, default=None, metavar="ISO",
                        help="--dry-run window end (default --from + 7 days)")
    parser.add_argument("--lead", type=_lead, default=60.0, metavar="S",
                        help="publish this many seconds before each occurrence (default 60)")
    parser.add_argument("--requested-by", default=None, metavar="NAME",
                        help="the principal (default: the plan's requested_by, else 'shift-planner')")
    add_connection_arguments(parser)
    parser.set_defaults(func=_schedule)
