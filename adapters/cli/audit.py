"""`campaign-fsm replay` and `campaign-fsm audit`: the event log read back, for people and scripts.

Both read `campaign.events` from the beginning to its end as of the start, with no consumer
group (nothing is committed, nothing else is disturbed). The broker comes from `--bootstrap`, or
else ``CAMPAIGN_FSM_KAFKA__BOOTSTRAP``.

Exit codes: 0 clean; 1 findings (audit) or anomalies (replay: malformed records, an id delivered
twice with different content); 2 usage or connection errors, with a one-line message.
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
from pathlib import Path
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from fsm.audit import check_state_records

from ..audit import (
    build_report,
    read_events,
    read_requesters,
    read_state_records,
    rebuilt_state_records,
    render_html,
    render_text,
    render_timelines,
    timelines_json,
    write_state_records,
)
from ..kafka import KafkaConfig, KafkaEdgeError, TopicNames, TopicSetupError
from .send import BOOTSTRAP_ENV

__all__ = ["BOOTSTRAP_ENV", "register"]

_TOPICS = TopicNames()


class _UsageError(Exception):
    """A bad option value, reported as `campaign-fsm CMD: error: ...` with exit code 2."""


def register(subparsers: Any) -> None:
    replay = subparsers.add_parser(
        "replay", help="rebuild each campaign's timeline from campaign.events (and optionally campaign.state)",
        description="Read campaign.events (all of it, a time range, or one campaign), drop identical "
        "re-deliveries (same event id), and print every campaign's events in sequence order. "
        "--rebuild-state rewrites campaign.state from the events: one record per campaign, the same "
        "bytes for the same events. Exit 0 clean, 1 anomalies in the log, 2 usage/connection error.",
    )
    _common(replay)
    replay.add_argument("--since", metavar="ISO", help="only events observed at or after this time "
                        "(ISO 8601; no zone means UTC)")
    replay.add_argument("--until", metavar="ISO", help="only events observed at or before this time")
    replay.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    replay.add_argument("--rebuild-state", action="store_true",
                        help="write one campaign.state record per campaign, rebuilt from the events (acks=all)")
    replay.add_argument("--state-topic", default=_TOPICS.state, metavar="TOPIC",
                        help=f"the state topic --rebuild-state writes (default {_TOPICS.state})")
    replay.set_defaults(func=_run_replay)

    audit = subparsers.add_parser(
        "audit", help="verify campaign.events: sequences, from/to, the hash chain, log order",
        description="Verify per campaign: sequences from 1 without gaps or conflicting duplicates, every "
        "event's from equal to the previous event's to, the prevHash chain, and per-partition order; "
        "each problem is named by campaign and sequence. Also compares each campaign's last event with "
        "its campaign.state record (when that topic exists), which finds a dropped or edited last event. "
        "Exit 0 clean, 1 findings, 2 usage/connection error.",
    )
    _common(audit)
    audit.add_argument("--json-out", metavar="FILE", help="write the report as JSON")
    audit.add_argument("--html-out", metavar="FILE", help="write a self-contained HTML report with timelines")
    audit.add_argument("--state-topic", default=_TOPICS.state, metavar="TOPIC",
                       help=f"compare last events with this state topic if it exists (default {_TOPICS.state})")
    audit.add_argument("--no-state-check", action="store_true", help="do not read the state topic")
    audit.add_argument("--commands-topic", metavar="TOPIC",
                       help="read the commands topic too, to name who requested each command (requestedBy)")
    audit.add_argument("--brief", action="store_true",
                       help="print per-campaign summaries without the list of transitions")
    audit.set_defaults(func=_run_audit)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", metavar="HOST:PORT",
                        help=f"Kafka bootstrap servers (default: ${BOOTSTRAP_ENV})")
    parser.add_argument("--topic", default=_TOPICS.events, help=f"events topic (default {_TOPICS.events})")
    parser.add_argument("--campaign", metavar="ID", help="only this campaign")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="give up when the broker makes no progress for this long (default 30)")
    parser.add_argument("--no-idempotence", action="store_true",
                        help="produce without the idempotent producer (brokers without InitProducerId, e.g. tansu)")


def _config(args: argparse.Namespace) -> KafkaConfig:
    bootstrap = args.bootstrap or os.environ.get(BOOTSTRAP_ENV, "")
    if not bootstrap.strip():
        raise _UsageError(f"no broker: pass --bootstrap HOST:PORT or set {BOOTSTRAP_ENV}")
    if args.timeout <= 0:
        raise _UsageError("--timeout must be positive")
    try:
        return KafkaConfig(bootstrap=bootstrap.strip(), client_id="campaign-fsm-audit",
                           enable_idempotence=not args.no_idempotence)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None


def _instant(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        stamp = datetime.fromisoformat(text.strip())
    except ValueError:
        raise _UsageError(f"{option} {text!r} is not an ISO 8601 time (e.g. 2024-05-01T12:00:00Z)") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


@contextlib.contextmanager
def _quiet_kafka_client() -> Iterator[None]:
    """Without logging configured, aiokafka's own warnings would print beside our one-line error."""
    logger = logging.getLogger("aiokafka")
    previous = logger.level
    if not logging.getLogger().handlers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _guarded(command: str, args: argparse.Namespace, body: Any) -> int:
    """Run `body(args)` (a coroutine function); turn expected failures into exit code 2 and one line."""
    try:
        with _quiet_kafka_client():
            code: int = asyncio.run(body(args))
        return code
    except (_UsageError, TopicSetupError) as exc:  # before KafkaEdgeError: TopicSetupError is one
        print(f"campaign-fsm {command}: error: {exc}", file=sys.stderr)
    except (KafkaEdgeError, KafkaError, OSError) as exc:
        where = args.bootstrap or os.environ.get(BOOTSTRAP_ENV, "?")
        print(f"campaign-fsm {command}: error: cannot read from Kafka at {where}: {exc}", file=sys.stderr)
    return 2


def _run_replay(args: argparse.Namespace) -> int:
    return _guarded("replay", args, _replay)


def _run_audit(args: argparse.Namespace) -> int:
    return _guarded("audit", args, _audit)


def _write_lines(lines: Iterable[str]) -> None:
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
        raise _UsageError("--since is after --until")
    if args.rebuild_state and (since is not None or until is not None):
        raise _UsageError("--rebuild-state needs every event: drop --since/--until")
    config = _config(args)
    replay = await read_events(config, args.topic, strict=False, campaign=args.campaign,
                               since=since, until=until, stall_timeout_s=args.timeout)
    if args.json:
        sys.stdout.write(orjson.dumps(timelines_json(replay, args.topic)).decode() + "\n")
        sys.stdout.flush()
    else:
        _write_lines(render_timelines(replay, args.topic))
    if args.rebuild_state:
        records, problems = rebuilt_state_records(replay)
        written = await write_state_records(config, args.state_topic, records)
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"rebuilt {written} campaign.state records on {args.state_topic}", file=sys.stderr)
        if problems:
            return 1
    return 0 if replay.clean else 1


async def _audit(args: argparse.Namespace) -> int:
    config = _config(args)
    for option in ("json_out", "html_out"):
        target = getattr(args, option)
        if target and not Path(target).parent.is_dir():
            raise _UsageError(f"--{option.replace('_', '-')}: directory {Path(target).parent} does not exist")
    replay = await read_events(config, args.topic, strict=True, campaign=args.campaign,
                               stall_timeout_s=args.timeout)
    state_checked: str | None = None
    if not args.no_state_check:
        try:
            states = await read_state_records(config, args.state_topic)
        except TopicSetupError:
            states = None  # no state topic: nothing to compare with, and the report says so
        if states is not None:
            if args.campaign is not None:
                states = {k: v for k, v in states.items() if k == args.campaign}
            check_state_records(replay, states)
            state_checked = args.state_topic
    requesters = await read_requesters(config, args.commands_topic) if args.commands_topic else None
    report = build_report(replay, topic=args.topic, requesters=requesters, state_checked=state_checked)
    _write_lines(render_text(report, transitions=not args.brief))
    await asyncio.to_thread(_write_files, report, args.json_out, args.html_out)
    return 0 if report["clean"] else 1


def _write_files(report: dict[str, Any], json_out: str | None, html_out: str | None) -> None:
    if json_out:
        Path(json_out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if html_out:
        Path(html_out).write_text(render_html(report), encoding="utf-8")
