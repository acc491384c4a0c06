"""`campaign-fsm replay`: the event log read back into each campaign's timeline, for people and scripts.

It reads `campaign.events` from the beginning to its end as of the start, with no consumer group
(nothing is committed, nothing else is disturbed), as `campaign-fsm audit` does: the options, the
broker and the error handling the two share are here. The broker comes from `--bootstrap`, or else
``CAMPAIGN_FSM_KAFKA__BOOTSTRAP``.

Exit codes: 0 clean; 1 anomalies (malformed records, an id delivered twice with different
content); 2 usage or connection errors, with a one-line message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from ..audit import read_events, rebuilt_state_records, render_timelines, timelines_json, write_state_records
from ..kafka import KafkaEdgeError, KafkaSettings, TopicNames, TopicSetupError
from ..kafka.config import problem
from .send import BOOTSTRAP_ENV

__all__ = [
    "TOPICS",
    "UsageError",
    "add_event_log_arguments",
    "guarded",
    "kafka_config",
    "quiet_kafka_client",
    "register",
    "write_lines",
]

TOPICS = TopicNames()


class UsageError(Exception):
    """A bad option value, reported as `campaign-fsm CMD: error: ...` with exit code 2."""


def register(subparsers: Any) -> None:
    replay = subparsers.add_parser(
        "replay", help="rebuild each campaign's timeline from campaign.events (and optionally campaign.state)",
        description="Read campaign.events (all of it, a time range, or one campaign), drop identical "
        "re-deliveries (same event id), and print every campaign's events in sequence order. "
        "--rebuild-state rewrites campaign.state from the events: one record per campaign, the same "
        "bytes for the same events. Exit 0 clean, 1 anomalies in the log, 2 usage/connection error.",
    )
    add_event_log_arguments(replay)
    replay.add_argument("--since", metavar="ISO", help="only events observed at or after this time "
                        "(ISO 8601; no zone means UTC)")
    replay.add_argument("--until", metavar="ISO", help="only events observed at or before this time")
    replay.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    replay.add_argument("--rebuild-state", action="store_true",
                        help="write one campaign.state record per campaign, rebuilt from the events (acks=all)")
    replay.add_argument("--state-topic", default=TOPICS.state, metavar="TOPIC",
                        help=f"the state topic --rebuild-state writes (default {TOPICS.state})")
    replay.set_defaults(func=_run_replay)


def add_event_log_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", metavar="HOST:PORT",
                        help=f"Kafka bootstrap servers (default: ${BOOTSTRAP_ENV})")
    parser.add_argument("--topic", default=TOPICS.events, help=f"events topic (default {TOPICS.events})")
    parser.add_argument("--campaign", metavar="ID", help="only this campaign")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="give up when the broker makes no progress for this long (default 30)")
    parser.add_argument("--no-idempotence", action="store_true",
                        help="produce without the idempotent producer (brokers without InitProducerId, e.g. tansu)")


def kafka_config(args: argparse.Namespace) -> KafkaSettings:
    bootstrap = args.bootstrap or os.environ.get(BOOTSTRAP_ENV, "")
    if not bootstrap.strip():
        raise UsageError(f"no broker: pass --bootstrap HOST:PORT or set {BOOTSTRAP_ENV}")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    try:
        return KafkaSettings(bootstrap=bootstrap.strip(), client_id="campaign-fsm-audit",
                           enable_idempotence=not args.no_idempotence)
    except ValueError as exc:
        raise UsageError(problem(exc)) from None


def _instant(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        stamp = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{option} {text!r} is not an ISO 8601 time (e.g. 2024-05-01T12:00:00Z)") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


@contextlib.contextmanager
def quiet_kafka_client() -> Iterator[None]:
    """Without logging configured, aiokafka's own warnings would print beside our one-line error."""
    logger = logging.getLogger("aiokafka")
    previous = logger.level
    if not logging.getLogger().handlers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


def guarded(command: str, args: argparse.Namespace, body: Any) -> int:
    """Run `body(args)` (a coroutine function); turn expected failures into exit code 2 and one line."""
    try:
        with quiet_kafka_client():
            code: int = asyncio.run(body(args))
        return code
    except (UsageError, TopicSetupError) as exc:  # before KafkaEdgeError: TopicSetupError is one
        print(f"campaign-fsm {command}: error: {exc}", file=sys.stderr)
    except (KafkaEdgeError, KafkaError, OSError) as exc:
        where = args.bootstrap or os.environ.get(BOOTSTRAP_ENV, "?")
        print(f"campaign-fsm {command}: error: cannot read from Kafka at {where}: {exc}", file=sys.stderr)
    return 2


def _run_replay(args: argparse.Namespace) -> int:
    return guarded("replay", args, _replay)


def write_lines(lines: Iterable[str]) -> None:
    out = sys.stdout
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= 4096:
            out.write("\n".join(chunk) + "\n")
            chunk.clear()
    if chunk:
        out.write("\n".join(chunk) + "\n")
    out.flush()


async def _replay(args: argparse.Namespace) -> int:
    since = _instant(args.since, "--since")
    until = _instant(args.until, "--until")
    if since is not None and until is not None and since > until:
        raise UsageError("--since is after --until")
    if args.rebuild_state and (since is not None or until is not None):
        raise UsageError("--rebuild-state needs every event: drop --since/--until")
    config = kafka_config(args)
    replay = await read_events(config, args.topic, strict=False, campaign=args.campaign,
                               since=since, until=until, stall_timeout_s=args.timeout)
    if args.json:
        sys.stdout.write(orjson.dumps(timelines_json(replay, args.topic)).decode() + "\n")
        sys.stdout.flush()
    else:
        write_lines(render_timelines(replay, args.topic))
    if args.rebuild_state:
        records, problems = rebuilt_state_records(replay)
        written = await write_state_records(config, args.state_topic, records)
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"rebuilt {written} campaign.state records on {args.state_topic}", file=sys.stderr)
        if problems:
            return 1
    return 0 if replay.clean else 1
