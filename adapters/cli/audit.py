"""`campaign-fsm audit`: verify the event log, for people and scripts (and a JSON or HTML report).

It reads `campaign.events` like `campaign-fsm replay` (no consumer group; the broker from
`--bootstrap`, or else ``CAMPAIGN_FSM_KAFKA__BOOTSTRAP``), checks it with `fsm.audit`, and compares
each campaign's last event with its `campaign.state` record.

Exit codes: 0 clean; 1 findings; 2 usage or connection errors, with a one-line message.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import orjson

from fsm.audit import check_state_records

from ..audit import build_report, read_events, read_requesters, read_state_records, render_html, render_text
from ..kafka import TopicSetupError
from .replay import TOPICS, UsageError, add_event_log_arguments, guarded, kafka_config, write_lines
from .send import BOOTSTRAP_ENV

__all__ = ["BOOTSTRAP_ENV", "register"]


def register(subparsers: Any) -> None:
    audit = subparsers.add_parser(
        "audit", help="verify campaign.events: sequences, from/to, the hash chain, log order",
        description="Verify per campaign: sequences from 1 without gaps or conflicting duplicates, every "
        "event's from equal to the previous event's to, the prevHash chain, and per-partition order; "
        "each problem is named by campaign and sequence. Also compares each campaign's last event with "
        "its campaign.state record (when that topic exists), which finds a dropped or edited last event. "
        "Exit 0 clean, 1 findings, 2 usage/connection error.",
    )
    add_event_log_arguments(audit)
    audit.add_argument("--json-out", metavar="FILE", help="write the report as JSON")
    audit.add_argument("--html-out", metavar="FILE", help="write a self-contained HTML report with timelines")
    audit.add_argument("--state-topic", default=TOPICS.state, metavar="TOPIC",
                       help=f"compare last events with this state topic if it exists (default {TOPICS.state})")
    audit.add_argument("--no-state-check", action="store_true", help="do not read the state topic")
    audit.add_argument("--commands-topic", metavar="TOPIC",
                       help="read the commands topic too, to name who requested each command (requestedBy)")
    audit.add_argument("--brief", action="store_true",
                       help="print per-campaign summaries without the list of transitions")
    audit.set_defaults(func=_run_audit)


def _run_audit(args: argparse.Namespace) -> int:
    return guarded("audit", args, _audit)


async def _audit(args: argparse.Namespace) -> int:
    config = kafka_config(args)
    for option in ("json_out", "html_out"):
        target = getattr(args, option)
        if target and not Path(target).parent.is_dir():
            raise UsageError(f"--{option.replace('_', '-')}: directory {Path(target).parent} does not exist")
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
    write_lines(render_text(report, transitions=not args.brief))
    await asyncio.to_thread(_write_files, report, args.json_out, args.html_out)
    return 0 if report["clean"] else 1


def _write_files(report: dict[str, Any], json_out: str | None, html_out: str | None) -> None:
    if json_out:
        Path(json_out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if html_out:
        Path(html_out).write_text(render_html(report), encoding="utf-8")
