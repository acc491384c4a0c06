"""In-memory doubles of the ports for unit tests of the orchestrator (no sockets, virtual time)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from fsm.ports import (
    ActionReceipt,
    CampaignSnapshot,
    ContactListSnapshot,
    DialerLoad,
    PlatformConflict,
    PlatformError,
    PlatformNotFound,
)
from fsm.testing import FakeClock
from schemas.commands import CommandResult
from schemas.types import Action, CampaignState, DialerType

S = CampaignState
_OPENS = {Action.START: S.STARTING, Action.RESUME: S.STARTING, Action.PAUSE: S.PAUSING, Action.STOP: S.STOPPING}
_FROM = {Action.START: {S.STOPPED}, Action.RESUME: {S.PAUSED}, Action.PAUSE: {S.RUNNING},
         Action.STOP: {S.RUNNING, S.PAUSED}}


@dataclass
class FakeCampaign:
    id: str
    state: CampaignState
    dialer_type: DialerType = DialerType.PREDICTIVE
    dialer_id: str = "dialer-1"
    contact_list_id: str = "list-1"
    errors: list[dict[str, str]] = field(default_factory=list)
    status: str | None = None  # overrides the platform status word (unknown statuses)


class FakePlatform:
    """The platform as a dict. Transitions open on POST and finish when a test says so."""

    def __init__(self, clock: FakeClock, campaigns: list[FakeCampaign]) -> None:
        self.clock = clock
        self.campaigns = {c.id: c for c in campaigns}
        self.lists: dict[str, ContactListSnapshot] = {}
        self.loads: dict[str, DialerLoad] = {}
        self.errors: dict[str, list[dict[str, str]]] = {}
        self.calls: list[tuple[float, str, str]] = []  # (monotonic time, call, id)
        self.post_failure: dict[str, PlatformError] = {}  # campaign id -> raise instead of a 202
        self.execute_despite_failure: set[str] = set()  # the POST "times out" but was executed
        # Called once a POST was executed, before its answer reaches the caller (a kill point).
        self.after_post: Callable[[str], None] | None = None
        self.budget_spent = False  # reads_wait(): True as in a storm, when every read waits its turn

    @property
    def profile(self) -> str:
        return "guide"

    @property
    def supported_actions(self) -> frozenset[Action]:
        return frozenset(Action) - {Action.RESET}

    def _log(self, call: str, ident: str) -> None:
        self.calls.append((self.clock.monotonic(), call, ident))

    def posts(self, campaign_id: str | None = None) -> list[tuple[float, str, str]]:
        return [c for c in self.calls if c[1].startswith("POST") and (campaign_id is None or c[2] == campaign_id)]

    def reads(self) -> int:
        return sum(1 for c in self.calls if c[1].startswith("GET"))

    def snapshot(self, campaign: FakeCampaign) -> CampaignSnapshot:
        return CampaignSnapshot(
            campaign.id, None if campaign.status else campaign.state, campaign.status or campaign.state.value,
            campaign.dialer_type, campaign.dialer_id, campaign.contact_list_id, tuple(campaign.errors),
        )

    async def get_campaign(self, campaign_id: str) -> CampaignSnapshot:
        self._log("GET campaign", campaign_id)
        if campaign_id not in self.campaigns:
            raise PlatformNotFound(f"no campaign {campaign_id}", status=404)
        return self.snapshot(self.campaigns[campaign_id])

    async def list_campaigns(self) -> list[CampaignSnapshot]:
        self._log("GET campaigns", "*")
        return [self.snapshot(c) for c in self.campaigns.values()]

    @property
    def supports_recycle(self) -> bool:
        return False

    def reads_wait(self) -> bool:
        return self.budget_spent

    async def send_action(self, campaign_id: str, action: Action, *, source: CampaignState | None = None,
                          recycle: bool = False) -> ActionReceipt:
        self._log(f"POST {action.value}", campaign_id)
        sent = self.clock.now()
        campaign = self.campaigns[campaign_id]
        failure = self.post_failure.pop(campaign_id, None)
        if failure is not None:
            if campaign_id in self.execute_despite_failure:
                campaign.state = _OPENS[action]
            raise failure
        if campaign.state not in _FROM[action]:
            raise PlatformConflict(f"{action.value} not allowed from {campaign.state}", status=409)
        campaign.state = _OPENS[action]
        if self.after_post is not None:
            self.after_post(campaign_id)
        return ActionReceipt(campaign_id, action, 202, sent, self.clock.now(), f"/campaigns/{campaign_id}")

    async def get_errors(self, campaign_id: str) -> list[dict[str, str]]:
        self._log("GET errors", campaign_id)
        return list(self.errors.get(campaign_id, []))

    async def get_contact_list(self, contact_list_id: str) -> ContactListSnapshot:
        self._log("GET contactlist", contact_list_id)
        return self.lists.get(contact_list_id, ContactListSnapshot(contact_list_id, True, False, "ACTIVE/COMPLETED"))

    async def get_dialer_load(self, dialer_id: str, campaign_id: str) -> DialerLoad:
        self._log("GET dialer", dialer_id)
        return self.loads.get(dialer_id, DialerLoad(dialer_id, 0, 100))


class MemorySink:
    """Collects what the orchestrator publishes, in order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.results: list[CommandResult] = []
        self.state: dict[str, dict[str, Any]] = {}
        # Every call as one durable write: (event or None, snapshot or None, results). A process
        # killed at any point has made exactly a prefix of these durable.
        self.writes: list[tuple[dict[str, Any] | None, dict[str, Any] | None, tuple[CommandResult, ...]]] = []

    async def state_changed(self, event: dict[str, Any], snapshot: dict[str, Any],
                            results: Sequence[CommandResult] = ()) -> None:
        self.events.append(orjson.loads(orjson.dumps(event)))  # what a consumer would read
        self.state[snapshot["campaignId"]] = snapshot
        self.results.extend(results)
        self.writes.append((self.events[-1], snapshot, tuple(results)))

    async def state_saved(self, snapshot: dict[str, Any], results: Sequence[CommandResult] = ()) -> None:
        self.state[snapshot["campaignId"]] = snapshot
        self.results.extend(results)
        self.writes.append((None, snapshot, tuple(results)))

    async def command_result(self, result: CommandResult) -> None:
        self.results.append(result)
        self.writes.append((None, None, (result,)))

    def durable_records(self) -> list[dict[str, Any]]:
        """The latest `campaign.state` record per campaign, as a restart would read them back."""
        return [orjson.loads(orjson.dumps(record)) for record in self.state.values()]

    def of(self, campaign_id: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.events if e["subject"] == campaign_id]

    def outcomes(self, command_id: object) -> list[tuple[str, str | None]]:
        return [(r.outcome.value, r.reason.value if r.reason else None) for r in self.results
                if str(r.command_id) == str(command_id)]


class FakeNotifications:
    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.campaign_topics: set[str] = set()
        self.list_topics: set[str] = set()
        self.not_live: set[str] = set()  # campaigns whose topic was rejected (polled instead)

    async def subscribe_campaigns(self, campaign_ids: list[str]) -> None:
        self.campaign_topics.update(campaign_ids)

    async def subscribe_contact_lists(self, contact_list_ids: list[str]) -> None:
        self.list_topics.update(contact_list_ids)

    async def unsubscribe_campaigns(self, campaign_ids: list[str]) -> None:
        self.campaign_topics.difference_update(campaign_ids)

    async def unsubscribe_contact_lists(self, contact_list_ids: list[str]) -> None:
        self.list_topics.difference_update(contact_list_ids)

    def live(self, campaign_id: str) -> bool:
        return campaign_id not in self.not_live
