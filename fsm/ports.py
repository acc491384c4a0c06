"""Every port the core talks through, in one file: the platform, notifications, the clock.

The core (`fsm/`) is written against these Protocols only. Adapters (`adapters/`) implement them
over HTTP, WebSocket and Kafka; tests implement them with fakes. The value types here are the
platform's answers already translated out of either API profile, so no rule in the core needs to
know whether it talks to the guide's API or to Genesys Cloud.

Platform exceptions (raised by a `Platform`, caught by the core)::

    PlatformError                 any failure talking to the platform
    ├── PlatformConflict          409, or 400 "invalid transition": re-read the campaign, then decide
    ├── PlatformUnavailable       5xx, timeout, connection failure (retriable for reads only)
    ├── PlatformRateLimited       429 that outlived the client's own retries
    ├── PlatformNotFound          404: the campaign, list or dialer does not exist
    ├── PlatformCapReached        a start refused: the organisation runs its maximum of active campaigns
    └── PlatformAuthError         the OAuth client was refused
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from schemas.commands import CommandResult
from schemas.types import Action, CampaignState, DialerType, Halt

__all__ = [
    "ActionReceipt",
    "CampaignSnapshot",
    "Clock",
    "ContactListSnapshot",
    "DialerLoad",
    "EventSink",
    "ManagedSink",
    "Notification",
    "NotificationListener",
    "Notifications",
    "Platform",
    "PlatformAuthError",
    "PlatformCapReached",
    "PlatformConflict",
    "PlatformError",
    "PlatformNotFound",
    "PlatformRateLimited",
    "PlatformUnavailable",
]


# --- time ----------------------------------------------------------------------------------------


class Clock(Protocol):
    """Injected time. `now()` is wall time (event timestamps); `monotonic()` orders deadlines.

    A test clock advances instantly inside `sleep`, so hours of backoff run in milliseconds.
    """

    def now(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


# --- platform values -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CampaignSnapshot:
    """A campaign as the platform reports it. `state` is None for a status we cannot map.

    `intent_decides`: the status means STOPPED or PAUSED (STOPPING or PAUSING) and the platform
    cannot say which (Genesys `off`, `stopping`): our recorded intent decides (`Campaign.intent`).
    `halt`: the platform's own reason for not dialing, when it names one (the list ran out, forced off).
    """

    id: str
    state: CampaignState | None
    platform_status: str
    dialer_type: DialerType
    dialer_id: str
    contact_list_id: str | None
    errors: tuple[dict[str, str], ...] = ()
    version: int | None = None
    intent_decides: bool = False
    halt: Halt | None = None


@dataclass(frozen=True, slots=True)
class ContactListSnapshot:
    """Ready means a transition may be issued. `locked` means a transient block (import, lock)."""

    id: str
    ready: bool
    locked: bool
    detail: str


@dataclass(frozen=True, slots=True)
class DialerLoad:
    """Live call load of a dialer instance. `capacity` None means unknown (never defers)."""

    dialer_id: str
    active_calls: int
    capacity: int | None


@dataclass(frozen=True, slots=True)
class ActionReceipt:
    """The platform accepted (202) a transition request: accepted, never done.

    `method` and `path` name the request that moves the campaign; `method` None when the move needs
    none (Genesys: a stop of a paused campaign, already `off`, only changes our intent).
    """

    campaign_id: str
    action: Action
    status: int
    sent_at: float
    answered_at: float
    location: str | None = None
    method: str | None = "POST"
    path: str | None = None


# --- platform exceptions -------------------------------------------------------------------------


class PlatformError(Exception):
    """Any failure talking to the platform. Messages never contain credentials or tokens."""

    retriable = False

    def __init__(self, message: str, *, status: int | None = None, sent_at: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.sent_at = sent_at


class PlatformConflict(PlatformError):
    """409 or 400-invalid-transition: the platform's state differs from what we assumed.

    Nothing was changed. `current` is the campaign as read again right after the refusal, when the
    platform client read it (a compare-and-set PUT does): the core decides again on it. `stale`
    says the refusal was a stale `version` of a compare-and-set (a genesys PUT answered 409), not
    a transition the campaign's state does not allow (the guide's 409, any 400).
    """

    def __init__(self, message: str, *, status: int | None = None, sent_at: float | None = None,
                 current: CampaignSnapshot | None = None, stale: bool = False) -> None:
        super().__init__(message, status=status, sent_at=sent_at)
        self.current = current
        self.stale = stale


class PlatformUnavailable(PlatformError):
    """5xx, timeout or connection failure. A POST that ends here may or may not have been executed."""

    retriable = True


class PlatformRateLimited(PlatformError):
    retriable = True

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = 429) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class PlatformNotFound(PlatformError):
    pass


class PlatformAuthError(PlatformError):
    pass


class PlatformCapReached(PlatformError):
    """A start (or resume) refused because the organisation already runs its maximum of active
    campaigns (Genesys: 50 voice). Nothing was done; a later attempt may find a place."""


# --- the platform port ---------------------------------------------------------------------------


@runtime_checkable
class Platform(Protocol):
    """The dialing platform, in either profile. Requests go through the request budget (fsm/request_budget.py).

    `send_action` POSTs exactly once: it never re-sends, whatever happens. After a failure the
    caller reads the campaign before deciding anything (a 202 may have been lost on the way back).
    """

    @property
    def profile(self) -> str: ...

    @property
    def supported_actions(self) -> frozenset[Action]: ...

    @property
    def supports_recycle(self) -> bool:
        """Whether a start may begin again at the contact list's first record (`Command.recycle`)."""
        ...

    async def get_campaign(self, campaign_id: str) -> CampaignSnapshot: ...

    async def list_campaigns(self) -> list[CampaignSnapshot]: ...

    async def send_action(self, campaign_id: str, action: Action, *, source: CampaignState | None = None,
                          recycle: bool = False) -> ActionReceipt:
        """`source`: the state the model moves from (Genesys sends a pause and a stop alike, and a stop
        of a paused campaign not at all). `recycle`: reset the campaign's progress before a start."""
        ...

    async def get_errors(self, campaign_id: str) -> list[dict[str, str]]: ...

    async def get_contact_list(self, contact_list_id: str) -> ContactListSnapshot: ...

    async def get_dialer_load(self, dialer_id: str, campaign_id: str) -> DialerLoad: ...

    def reads_wait(self) -> bool:
        """Whether a read asked for now would wait for the request budget (a storm spends it)."""
        ...


# --- notifications -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notification:
    """A hint that something changed. `campaign` is set for campaign topics, `contact_list_id` for lists."""

    topic: str
    received_at: float
    campaign: CampaignSnapshot | None = None
    contact_list_id: str | None = None
    body: dict[str, object] = field(default_factory=dict)


NotificationListener = Callable[[Notification], Awaitable[None]]


class Notifications(Protocol):
    """The platform's notification channel(s). `up` is False whenever events may be missed;
    `live(id)` is False for a campaign whose changes are not pushed even while up (its topic was
    rejected, or found no room within the channel cap): that one is polled."""

    @property
    def up(self) -> bool: ...

    def live(self, campaign_id: str) -> bool: ...

    async def subscribe_campaigns(self, campaign_ids: list[str]) -> None: ...

    async def subscribe_contact_lists(self, contact_list_ids: list[str]) -> None: ...

    async def unsubscribe_campaigns(self, campaign_ids: list[str]) -> None: ...

    async def unsubscribe_contact_lists(self, contact_list_ids: list[str]) -> None: ...


# --- outputs -------------------------------------------------------------------------------------


class EventSink(Protocol):
    """Where the core's output goes: state changes, command results, the latest state per campaign.

    `state_changed` must keep per-campaign order (events of one campaign are published in sequence
    order) and must not return before the event is durable (acknowledged, or in a durable outbox).

    `results` ride with the record change that decides them (the event that settles a transition,
    the record that holds or lets go of a command) and are made durable *together* with it, in that
    order: a process killed in between must not leave an event without its command's result, or a
    command let go without a result at all. Sinks publish them after the event and the snapshot.
    """

    async def state_changed(self, event: dict[str, object], snapshot: dict[str, object],
                            results: Sequence[CommandResult] = ()) -> None: ...

    async def state_saved(self, snapshot: dict[str, object], results: Sequence[CommandResult] = ()) -> None:
        """The campaign's record changed without a state change (a command held or let go)."""
        ...

    async def command_result(self, result: CommandResult) -> None: ...


class ManagedSink(EventSink, Protocol):
    """An `EventSink` the service runs: started before the core, stopped after it.

    `wait_drained` is True once everything taken so far is delivered (False if `timeout` ran out);
    `depth` counts what waits for delivery, `undeliverable` what was set aside for good (alarms);
    `healthy` is False once it can no longer take or deliver anything (its worker ended): the
    service's readiness.
    """

    @property
    def depth(self) -> int: ...

    @property
    def healthy(self) -> bool: ...

    @property
    def undeliverable(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def wait_drained(self, timeout: float | None = None) -> bool: ...  # noqa: ASYNC109
