"""`campaign-fsm send ACTION CAMPAIGN_ID`: publish one signed command and follow its results.

::

    export CAMPAIGN_FSM_SIGNING_KEY_ID=ops-1
    export CAMPAIGN_FSM_SIGNING_KEY='base64:...'           # never on the command line
    campaign-fsm send start uk-sales-1 --priority HIGH --bootstrap 127.0.0.1:9092

The command is keyed by campaign id on the commands topic and signed (see `adapters.signing`).
Before sending, a reader takes the end of every partition of the results topic; after sending it
reads from there, keeps the results whose `commandId` is this command's, prints each as a line
and stops at the first terminal outcome.

Exit status: 0 COMPLETED (including "already in that state"); 1 REFUSED or FAILED; 2 the command
could not be sent (bad arguments, no key, topics missing, broker unreachable); 3 no terminal
result within ``--timeout`` seconds (the command may still be acted upon: follow it on the results
topic). A REPLAYED refusal of this command id can only answer a duplicate delivery of this very
send, so it is printed but not taken as the outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as _TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from schemas.base import ContractError, decode
from schemas.commands import Command, CommandResult
from schemas.types import Action, CampaignState, Outcome, Priority, ReasonCode

from ..kafka import Delivery, KafkaEdgeError, KafkaSettings, Producer, TopicNames
from ..kafka.config import problem
from ..signing import DEFAULT_KEY_ENV, DEFAULT_KEY_ID_ENV, Signer, SigningKeyError, signer_from_env
from .arguments import positive

__all__ = [
    "BOOTSTRAP_ENV",
    "COMMAND_TYPE",
    "EXIT_COMPLETED",
    "EXIT_NOT_SENT",
    "EXIT_REFUSED",
    "EXIT_TIMEOUT",
    "PRINCIPAL_ENV",
    "ResultWatcher",
    "SendError",
    "add_connection_arguments",
    "aware_datetime",
    "connection_from_args",
    "exit_code",
    "format_result",
    "publish_command",
    "register",
    "send_and_follow",
    "send_config",
]

COMMAND_TYPE = "com.campaign-fsm.command.v1"
BOOTSTRAP_ENV = "CAMPAIGN_FSM_KAFKA__BOOTSTRAP"
PRINCIPAL_ENV = "CAMPAIGN_FSM_PRINCIPAL"

EXIT_COMPLETED, EXIT_REFUSED, EXIT_NOT_SENT, EXIT_TIMEOUT = 0, 1, 2, 3


class SendError(Exception):
    """The command could not be sent. The message says why (never a key)."""


def send_config(bootstrap: str, topics: TopicNames, client_id: str) -> KafkaSettings:
    """A KafkaSettings for a one-shot client.

    Idempotent producing is off: a duplicate from a retried produce carries the same command id
    and the service refuses it as REPLAYED, so the broker feature adds nothing, and some local
    brokers (tansu) cannot do it at all.
    """
    return KafkaSettings(bootstrap=bootstrap, topics=topics, client_id=client_id, enable_idempotence=False,
                       fetch_max_wait_ms=100, request_timeout_ms=15_000)


async def publish_command(producer: Producer, topics: TopicNames, command: Command) -> Delivery:
    """Produce `command` keyed by its campaign id onto the commands topic: a signed command as the
    very bytes and headers it was signed as (`Signer.sign`), an unsigned one as its wire JSON."""
    record = command.signed
    value: object = command if record is None else record.value
    headers = {} if record is None else record.headers()
    return await producer.send(topics.commands, command.campaign_id, value, ce_type=COMMAND_TYPE,
                               ce_id=str(command.id), headers=headers)


def exit_code(result: CommandResult) -> int | None:
    """The exit status a result settles, or None while the command is still under way."""
    if result.outcome is Outcome.COMPLETED:
        return EXIT_COMPLETED
    if result.outcome is Outcome.REFUSED and result.reason is ReasonCode.REPLAYED:
        return None
    if result.outcome in (Outcome.REFUSED, Outcome.FAILED):
        return EXIT_REFUSED
    return None


def format_result(result: CommandResult) -> str:
    """One human line: when, outcome, reason, state, then the message."""
    at = result.at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    parts = [at, result.outcome.value]
    if result.reason is not None:
        parts.append(result.reason.value)
    if result.state is not None:
        parts.append(f"state={result.state.value}")
    if result.next_attempt_at is not None:
        parts.append(f"next={result.next_attempt_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}")
    if result.legal_actions:
        parts.append("legal=" + ",".join(a.value for a in result.legal_actions))
    parts.append(result.message)
    return "  ".join(parts)


class ResultWatcher:
    """Reads the results topic from its end as of `start()`, for one command id at a time.

    No consumer group: every partition is assigned and positioned at its end before the command
    goes out, so no result of that command can be missed, whichever partition it lands on. Some
    brokers report an end a little short (tansu); that only means re-reading older results, which
    the command-id filter drops.
    """

    def __init__(self, config: KafkaSettings) -> None:
        self._config = config
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="latest",
                                    fetch_max_wait_ms=self._config.fetch_max_wait_ms,
                                    **self._config.client_kwargs())
        self._consumer = consumer
        topics = self._config.topics
        try:
            await consumer.start()
            present = await consumer.topics()
            missing = [t for t in (topics.commands, topics.results) if t not in present]
            if missing:
                raise SendError(f"topic(s) {', '.join(missing)} do not exist on {self._config.bootstrap} "
                                "(is the service set up there? see --topic-prefix)")
            numbers = consumer.partitions_for_topic(topics.results) or set()
            tps = [_TopicPartition(topics.results, n) for n in sorted(numbers)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, ends[tp])
        except KafkaError as exc:
            await self.stop()
            raise SendError(f"cannot read {topics.results} on {self._config.bootstrap}: {exc!r}") from exc
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def next_results(self, command_id: str, timeout_s: float) -> list[CommandResult]:
        """This command's results among the records that arrive within `timeout_s` (maybe none)."""
        if self._consumer is None:
            raise SendError("ResultWatcher used before start()")
        batches = await self._consumer.getmany(timeout_ms=max(1, int(timeout_s * 1000)))
        found: list[CommandResult] = []
        for records in batches.values():
            for record in records:
                try:
                    result = decode(CommandResult, record.value or b"")
                except ContractError:
                    continue  # not ours to judge: someone else's record on a shared topic
                if result.command_id == command_id:  # echoed exactly as sent
                    found.append(result)
        return found


async def send_and_follow(config: KafkaSettings, command: Command, *, timeout_s: float,
                          out: TextIO | None = None, err: TextIO | None = None, as_json: bool = False,
                          on_sent: Callable[[Delivery], None] | None = None) -> int:
    """Publish the (already signed) `command`, print its results, return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    deadline = time.monotonic() + timeout_s
    watcher = ResultWatcher(config)
    try:
        async with asyncio.timeout(timeout_s):
            await watcher.start()
            async with Producer(config) as producer:
                delivery = await publish_command(producer, config.topics, command)
    except TimeoutError:
        await watcher.stop()
        print(f"timed out after {timeout_s:g} s before the broker acknowledged the command", file=err)
        return EXIT_TIMEOUT
    except (SendError, KafkaEdgeError) as exc:
        await watcher.stop()
        print(f"error: {exc}", file=err)
        return EXIT_NOT_SENT
    except BaseException:
        await watcher.stop()
        raise
    try:
        if on_sent is not None:
            on_sent(delivery)
        print(f"sent {command.action.value} {command.campaign_id} as command {command.id} "
              f"(key {command.key_id}) to {config.topics.commands}[{delivery.partition}]@{delivery.offset}; "
              f"waiting up to {timeout_s:g} s for results", file=err)
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                results = await watcher.next_results(command.id, min(remaining, 0.5))
            except KafkaError as exc:
                print(f"error: reading results failed: {exc!r}", file=err)
                return EXIT_TIMEOUT
            for result in results:
                print(result.model_dump_json(by_alias=True, exclude_none=True) if as_json
                      else format_result(result), file=out, flush=True)
                code = exit_code(result)
                if code is not None:
                    return code
        print(f"no final result for command {command.id} within {timeout_s:g} s "
              f"(it may still be acted upon)", file=err)
        return EXIT_TIMEOUT
    finally:
        await watcher.stop()


# --- command line --------------------------------------------------------------------------------


def aware_datetime(text: str) -> datetime:
    """argparse type: an ISO 8601 date-time that names its UTC offset."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset (e.g. 2025-03-09T08:00:00+00:00 or ...Z)")
    return value


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """--bootstrap, --topic-prefix, --key-id, --key-env (shared with `campaign-fsm schedule`)."""
    parser.add_argument("--bootstrap", default=None,
                        help=f"Kafka bootstrap host:port[,host:port] (default ${BOOTSTRAP_ENV} or 127.0.0.1:9092)")
    parser.add_argument("--topic-prefix", default="", help="prefix of the service's topic names (default none)")
    parser.add_argument("--key-id", default=None, help=f"signing key id (default ${DEFAULT_KEY_ID_ENV})")
    parser.add_argument("--key-env", default=DEFAULT_KEY_ENV, metavar="VAR",
                        help=f"environment variable holding the signing key (default {DEFAULT_KEY_ENV}); "
                        "keys are never taken from the command line")


def connection_from_args(args: argparse.Namespace, client_id: str) -> tuple[KafkaSettings, Signer]:
    """The Kafka config and signer the arguments name; SendError/SigningKeyError with a clear message."""
    bootstrap = args.bootstrap or os.environ.get(BOOTSTRAP_ENV) or "127.0.0.1:9092"
    try:
        topics = TopicNames.with_prefix(args.topic_prefix)
        config = send_config(bootstrap, topics, client_id)
    except ValueError as exc:
        raise SendError(problem(exc)) from None
    return config, signer_from_env(args.key_id, args.key_env)


def _send(args: argparse.Namespace) -> int:
    try:
        config, signer = connection_from_args(args, "campaign-fsm-send")
        command = signer.sign(Command(
            id=str(uuid.uuid4()), campaign_id=args.campaign_id, action=Action(args.action),
            priority=Priority(args.priority), requested_by=args.requested_by or _principal(),
            issued_at=datetime.now(UTC),
            expected_state=CampaignState(args.expected_state) if args.expected_state else None,
            not_before=args.not_before, recycle=True if args.recycle else None,
        ))
    except (SendError, SigningKeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_SENT
    except ValidationError as exc:  # the contract refused a value (campaign id, requested-by)
        errors = ContractError.from_validation("command", exc).errors
        print("error: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors), file=sys.stderr)
        return EXIT_NOT_SENT
    return asyncio.run(send_and_follow(config, command, timeout_s=args.timeout, as_json=args.json))


def _principal() -> str:
    from_env = os.environ.get(PRINCIPAL_ENV)
    if from_env:
        return from_env
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "campaign-fsm-send"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "send", help="publish one signed command and print its results",
        description="Publish a signed command for one campaign and wait for its results. Exit status: "
        "0 completed, 1 refused or failed, 2 not sent, 3 timed out.")
    parser.add_argument("action", choices=[a.value for a in Action], metavar="ACTION",
                        help="start | stop | pause | resume | reset")
    parser.add_argument("campaign_id", metavar="CAMPAIGN_ID")
    parser.add_argument("--priority", choices=[p.value for p in Priority], default=Priority.STANDARD.value)
    parser.add_argument("--expected-state", choices=[s.value for s in CampaignState], default=None,
                        help="refuse unless the campaign is in this state")
    parser.add_argument("--requested-by", default=None, metavar="NAME",
                        help=f"the principal (default ${PRINCIPAL_ENV} or the login name)")
    parser.add_argument("--not-before", type=aware_datetime, default=None, metavar="ISO",
                        help="hold the command until this instant (with a UTC offset)")
    parser.add_argument("--recycle", action="store_true",
                        help="with start (genesys): begin again at the contact list's first record")
    add_connection_arguments(parser)
    parser.add_argument("--timeout", type=positive, default=60.0, metavar="S",
                        help="seconds to wait for a final result (default 60)")
    parser.add_argument("--json", action="store_true", help="print each result as its wire JSON")
    parser.set_defaults(func=_send)
