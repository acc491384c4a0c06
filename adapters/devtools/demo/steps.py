"""The scripted run: what a step can do (`Run`: send commands, look at the platform, wait for
observed facts) and the nine steps (`STEPS`), in order."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from adapters.cli.send import publish_command
from adapters.kafka import Producer, TopicNames
from adapters.service import Service
from adapters.signing import Signer
from fsm.orchestrator import Orchestrator
from fsm.windows import DEFAULT_WINDOWS
from schemas.commands import Command
from schemas.types import Action, CampaignState, DialerType, Priority

from ..simulator import Simulator
from .feed import Feed, Observer
from .scenario import KEY_ID, PRINCIPAL, STALL_S

__all__ = ["STEPS", "Run", "StepFailed", "not_applicable"]

_TERMINAL = ("COMPLETED", "REFUSED", "FAILED")


class StepFailed(Exception):
    """A scripted step did not see what it waited for. The message names it."""


class Run:
    """What a step can do: send commands, look at the platform, and wait for observed facts."""

    def __init__(self, *, sim: Simulator, service: Service, producer: Producer, topics: TopicNames,
                 signer: Signer, observer: Observer, feed: Feed, speed: float,
                 sent: dict[str, Command]) -> None:
        self.sim = sim
        self.service = service
        self.producer = producer
        self.topics = topics
        self.signer = signer
        self.observer = observer
        self.feed = feed
        self.speed = speed
        self.step_key = "setup"
        self.sent = sent

    @property
    def orchestrator(self) -> Orchestrator:
        assert self.service.parts is not None
        return self.service.parts.orchestrator

    async def send(self, campaign_id: str, action: Action, *, priority: Priority = Priority.STANDARD,
                   signed: bool = True) -> Command:
        command = Command(id=str(uuid.uuid4()), campaign_id=campaign_id, action=action, priority=priority,
                          requested_by=PRINCIPAL + self.step_key, issued_at=datetime.now(UTC))
        if signed:
            command = self.signer.sign(command)
        self.sent[str(command.id)] = command
        await publish_command(self.producer, self.topics, command)
        self.feed.emit("command", f"{campaign_id:<18} {action.value:<6} {priority.value}"
                                  f"{' (signed ' + KEY_ID + ')' if signed else ' UNSIGNED'}")
        return command

    def results(self, command: Command) -> list[dict[str, Any]]:
        wanted = str(command.id)
        return [r for r in self.observer.results if r.get("commandId") == wanted]

    def state(self, campaign_id: str) -> str:
        campaign = self.orchestrator.campaigns.get(campaign_id)
        return str(campaign.state) if campaign is not None else "?"

    def entered(self, campaign_id: str, state: str, command: Command | None = None) -> bool:
        """Whether an event on the topic moved `campaign_id` to `state` (for `command`, if given)."""
        for event in self.observer.events:
            data = event.get("data") or {}
            if data.get("campaignId") == campaign_id and data.get("to") == state and (
                    command is None or data.get("commandId") == str(command.id)):
                return True
        return False

    def real_seconds(self, sim_seconds: float) -> float:
        """A timeout in real seconds for something that takes `sim_seconds` of platform time."""
        return 15.0 + 3.0 * sim_seconds / self.speed

    async def until(self, predicate: Callable[[], bool], what: str, sim_seconds: float = 30.0) -> None:
        limit = self.real_seconds(sim_seconds)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise StepFailed(f"waited {limit:.0f} s and never saw {what}")
            self.observer.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.observer.changed.wait(), min(remaining, 0.2))

    async def expect(self, command: Command, outcome: str, *, reason: str | None = None,
                     sim_seconds: float = 60.0) -> dict[str, Any]:
        """Wait for `outcome` (and `reason`) on this command; a different final outcome fails the step."""
        label = f"{command.action.value} {command.campaign_id}"
        found: list[dict[str, Any]] = []

        def settled() -> bool:
            for r in self.results(command):
                if r.get("outcome") == outcome and (reason is None or r.get("reason") == reason):
                    found.append(r)
                    return True
                if r.get("outcome") in _TERMINAL:
                    found.append(r)
                    return True
            return False

        await self.until(settled, f"{outcome}{' ' + reason if reason else ''} for {label}", sim_seconds)
        result = found[0]
        if result.get("outcome") != outcome or (reason is not None and result.get("reason") != reason):
            got = f"{result.get('outcome')}{' ' + str(result['reason']) if result.get('reason') else ''}"
            raise StepFailed(f"{label}: expected {outcome}{' ' + reason if reason else ''}, got {got}: "
                             f"{result.get('message')}")
        return result

    async def all_completed(self, commands: Sequence[Command], what: str, sim_seconds: float) -> None:
        await asyncio.gather(*(self.expect(c, "COMPLETED", sim_seconds=sim_seconds) for c in commands))
        self.feed.emit("info", f"{what}: {len(commands)} COMPLETED")


async def _shift_start(run: Run) -> None:
    ids = ["uk-retention-q3", "card-upsell", "broadband-winback", "energy-renewals",
           "collections-30d", "appt-reminders", "web-leads", "webinar-invites"]
    commands = [await run.send(cid, Action.START) for cid in ids]
    await run.all_completed(commands, "shift start", sim_seconds=150)


async def _unsigned(run: Run) -> None:
    command = await run.send("uk-retention-q3", Action.STOP, signed=False)
    await run.expect(command, "REFUSED", reason="UNSIGNED", sim_seconds=5)
    if run.state("uk-retention-q3") != "RUNNING":
        raise StepFailed("uk-retention-q3 left RUNNING after an unsigned stop")


async def _pause_resume(run: Run) -> None:
    cid = "card-upsell"
    pause = await run.send(cid, Action.PAUSE)
    await run.expect(pause, "COMPLETED", sim_seconds=120)
    resume = await run.send(cid, Action.RESUME)
    await run.expect(resume, "COMPLETED", sim_seconds=60)


async def _start_while_stopping(run: Run) -> None:
    cid = "broadband-winback"
    stop = await run.send(cid, Action.STOP)
    await run.until(lambda: run.entered(cid, "STOPPING", stop), f"{cid} STOPPING", sim_seconds=30)
    start = await run.send(cid, Action.START)
    await run.expect(start, "REFUSED", reason="TRANSITION_IN_FLIGHT", sim_seconds=10)
    await run.expect(stop, "COMPLETED", sim_seconds=180)
    again = await run.send(cid, Action.START)
    await run.expect(again, "COMPLETED", sim_seconds=60)


async def _locked_list(run: Run) -> None:
    cid = "reactivation"
    list_id = run.sim.campaign(cid).contact_list_id
    run.sim.set_contact_list(list_id, state="LOCKED")
    run.feed.emit("info", f"platform: contact list {list_id} LOCKED (an import holds it)")
    start = await run.send(cid, Action.START)
    await run.expect(start, "DEFERRED", reason="CONTACT_LIST_NOT_READY", sim_seconds=10)
    if run.entered(cid, "STARTING", start):
        raise StepFailed(f"{cid} started while its contact list was locked")
    run.sim.set_contact_list(list_id, state="ACTIVE")
    run.feed.emit("info", f"platform: contact list {list_id} ACTIVE again")
    await run.expect(start, "COMPLETED", sim_seconds=60)


async def _over_capacity(run: Run) -> None:
    dialer = "dlr-prog-central"
    capacity = run.sim.tenant.dialers[dialer].licensed_capacity
    run.sim.engine.force_state("collections-30d", active_calls=75)
    calls = run.sim.engine.dialer_calls(dialer)
    run.feed.emit("info", f"platform: call surge on {dialer}: {calls} of {capacity} lines busy")
    standard = await run.send("collections-60d", Action.START)
    await run.expect(standard, "DEFERRED", reason="DIALER_OVER_CAPACITY", sim_seconds=10)
    high = await run.send("nps-survey", Action.START, priority=Priority.HIGH)
    await run.expect(high, "COMPLETED", sim_seconds=60)
    if run.entered("collections-60d", "STARTING", standard):
        raise StepFailed("the STANDARD start went ahead while the dialer was over capacity")
    run.sim.engine.force_state("collections-30d", active_calls=30)
    calls = run.sim.engine.dialer_calls(dialer)
    run.feed.emit("info", f"platform: surge over on {dialer}: {calls} of {capacity} lines busy")
    await run.expect(standard, "COMPLETED", sim_seconds=90)


async def _stalled_stop(run: Run) -> None:
    cid = "uk-retention-q3"
    run.sim.next_transition(cid, "stall", duration=STALL_S)
    window = DEFAULT_WINDOWS[DialerType.PREDICTIVE].stopping
    run.feed.emit("info", f"platform: the next stop of {cid} drains for {STALL_S:.0f} s (window {window:.0f} s)")
    stop = await run.send(cid, Action.STOP)
    await run.expect(stop, "COMPLETED", sim_seconds=STALL_S + 60)
    if run.entered(cid, "FAILED"):
        raise StepFailed(f"{cid} was marked FAILED inside its tolerance window")


async def _failure_reset(run: Run) -> None:
    cid = "event-rsvp"
    errors = [{"code": "dialer.trunk.unavailable", "message": "No outbound SIP trunk is available for this dialer."}]
    if run.sim.config.profile == "genesys":
        # Genesys has no starting status: a start shows `on` at once (the start COMPLETED) and a
        # failure only later, as an observation. A stop's failure is seen within its transition
        # (`stopping` -> `invalid`), so there the transition that fails is a stop.
        start = await run.send(cid, Action.START)
        await run.expect(start, "COMPLETED", sim_seconds=30)
        # Armed while the start is still in flight inside the simulator, the failure would be the start's.
        await run.until(lambda: run.sim.campaign(cid).state is CampaignState.RUNNING,
                        f"{cid} RUNNING inside the simulator", sim_seconds=30)
        run.sim.next_transition(cid, "fail", errors=errors)
        failing = await run.send(cid, Action.STOP)
    else:
        run.sim.next_transition(cid, "fail", errors=errors)
        failing = await run.send(cid, Action.START)
    await run.expect(failing, "FAILED", sim_seconds=30)
    # The operator clears the fault in the platform's console; that console sends no notification,
    # so the model still says FAILED until the reset, which confirms the state with one read.
    run.sim.faults.drop_topic = f"v2.outbound.campaigns.{cid}"
    run.sim.faults.drop_next = 1
    run.sim.set_state(cid, CampaignState.STOPPED, errors=[])
    run.feed.emit("info", f"platform: operator cleared the fault on {cid} (now STOPPED, no errors)")
    reset = await run.send(cid, Action.RESET, priority=Priority.HIGH)
    await run.expect(reset, "COMPLETED", sim_seconds=10)
    retry = await run.send(cid, Action.START)
    await run.expect(retry, "COMPLETED", sim_seconds=30)


async def _stop_storm(run: Run) -> None:
    dialing = [cid for cid, c in run.orchestrator.campaigns.items() if c.state in ("RUNNING", "PAUSED")]
    commands = [await run.send(cid, Action.STOP) for cid in sorted(dialing)]
    await run.all_completed(commands, "stop storm", sim_seconds=400)


@dataclass(frozen=True, slots=True)
class _Step:
    key: str
    title: str
    narration: str
    run: Callable[[Run], Awaitable[None]]
    needs: frozenset[Action] = frozenset()  # platform actions the step sends beyond start and stop


def not_applicable(step: _Step, profile: str, supported: frozenset[Action]) -> str | None:
    """Why `step` does not apply to a platform that supports `supported` (None: it applies).

    Decided from the running client's supported actions, not from the profile's name, so a profile
    that gains an action (pause and resume on genesys) runs the steps that need it.
    """
    missing = sorted(a.value for a in step.needs - supported)
    if not missing:
        return None
    return (f"the {profile} profile has no {' or '.join(missing)} action "
            f"(supported: {', '.join(sorted(a.value for a in supported))})")


STEPS: tuple[_Step, ...] = (
    _Step("shift-start", "shift start", "08:00: eight campaigns start at once; each dialer takes two at a "
          "time, STANDARD commands 15 s apart", _shift_start),
    _Step("unsigned", "unsigned command", "a stop without a signature arrives: refused before any platform call",
          _unsigned),
    _Step("pause-resume", "pause and resume", "card-upsell pauses (its predictive buffer drains), then resumes",
          _pause_resume, needs=frozenset({Action.PAUSE, Action.RESUME})),
    _Step("start-while-stopping", "start during a stop", "broadband-winback is stopping; a start arrives "
          "before STOPPED: refused TRANSITION_IN_FLIGHT, accepted once stopped", _start_while_stopping),
    _Step("locked-list", "locked contact list", "reactivation's contact list is locked by an import: the "
          "start waits (DEFERRED), then proceeds when the list is released", _locked_list),
    _Step("over-capacity", "dialer over 80 %", "a call surge takes dlr-prog-central over 80 %: STANDARD "
          "waits, HIGH goes at once", _over_capacity),
    _Step("stalled-stop", "stalled predictive stop", "uk-retention-q3's stop drains for 140 s: longer than a "
          "uniform 60 s timeout, inside the predictive 180 s window: not FAILED", _stalled_stop),
    _Step("failure-reset", "failure and reset", "event-rsvp's start FAILS on the platform (no SIP trunk; on "
          "genesys, which shows no starting status, its stop does); after the fix, a reset returns it to STOPPED "
          "and the start is retried", _failure_reset),
    _Step("stop-storm", "stop storm", "end of shift: every campaign still dialing is stopped at once; "
          "two in flight per dialer, the rest queued", _stop_storm),
)
