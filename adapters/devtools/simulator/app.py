"""The simulator handle: one tenant, one profile, one clock, and the ASGI app that serves them.

`Simulator` wires the parts (engine, notification hub, tokens, request limiter, traffic log, faults)
and exposes them to Python tests; `Simulator.app` is the Starlette application serving the
profile's API, the notification WebSockets and the admin API. Mount it in unit tests with
`httpx.ASGITransport(sim.app)` (no socket; drive time with a `FakeClock` and `sim.advance`), or
serve it over TCP with `adapters.devtools.simulator.server.run_simulator`.

Two kinds of time: campaign physics, heartbeats, socket closing and channel lifetime run on the
simulated `clock` (scaled); the token lifetime and the 10 reads/s window run on `wall` (real
seconds), because they are the API's rules, not the dialer's.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from fsm.ports import Clock
from fsm.testing import FakeClock
from schemas.types import TRANSITIONAL_STATES, CampaignState

from ...clock import SystemClock
from .admin import admin_routes
from .api import api_routes, error_response
from .auth import TokenStore
from .channels import Hub
from .clock import Scheduler
from .engine import Engine, Timing
from .faults import FaultConfig, FaultInjector, TransitionOverride
from .profiles import Profile, campaign_payload, contact_list_payload, genesys_status
from .ratelimit import RequestLimiter
from .tenant import SimCampaign, SimContactList, Tenant, generate_tenant
from .traffic import InFlightSample, TrafficLog

__all__ = ["Simulator", "SimulatorConfig", "StateRecord"]


@dataclass(slots=True)
class SimulatorConfig:
    """Everything but the tenant and the clock. Times in simulated seconds except `token_ttl` (wall)."""

    profile: Profile = "guide"
    client_id: str = "campaign-fsm-sim"
    client_secret: str = field(default="campaign-fsm-sim-secret", repr=False)
    token_ttl: float = 3600.0
    heartbeat_seconds: float = 30.0
    channel_ttl: float = 86_400.0
    max_topics: int = 1000
    max_channels: int = 20  # per OAuth client, as Genesys (channels.MAX_CHANNELS)
    max_page_size: int = 100
    seed: int | None = 0
    faults: FaultConfig = field(default_factory=FaultConfig)
    timing: Timing = field(default_factory=Timing)
    # "sim": the request limit's window runs on the simulated clock, so a client sharing the time
    # scale is held to the limit per *simulated* second or minute (rates in the simulation's clock).
    rate_clock: Literal["wall", "sim"] = "wall"
    # The organisation's cap on active campaigns (Genesys: 50 voice); None: no cap (simulator/lines.py).
    active_campaign_cap: int | None = None

    def __post_init__(self) -> None:
        if self.rate_clock not in ("wall", "sim"):
            raise ValueError(f"rate_clock must be 'wall' or 'sim', got {self.rate_clock!r}")
        if self.profile not in ("guide", "genesys"):
            raise ValueError(f"profile must be 'guide' or 'genesys', got {self.profile!r}")
        for name in ("token_ttl", "heartbeat_seconds", "channel_ttl"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_topics < 1 or self.max_page_size < 1 or self.max_channels < 1:
            raise ValueError("max_topics, max_page_size and max_channels must be >= 1")
        if self.active_campaign_cap is not None and self.active_campaign_cap < 1:
            raise ValueError(f"active_campaign_cap must be None or >= 1, got {self.active_campaign_cap!r}")


@dataclass(frozen=True, slots=True)
class StateRecord:
    """One state change the platform made (or was forced into), in order."""

    sim_time: float
    wall_time: float
    campaign_id: str
    state: CampaignState
    status: str  # the genesys campaignStatus shown at that moment


class Simulator:
    """The simulated platform. Build one, then serve `app` (see module docstring).

    Parameters: `tenant` (default: 3 generated campaigns on 1 dialer), `config`, `clock` (default
    `SystemClock(time_scale, start=0.0)`), `wall` (real seconds; default `time.monotonic`, or the fake
    clock's own time when `clock` is a `FakeClock`, so unit tests of the rate limit are deterministic).

    Served by uvicorn, the app's lifespan starts and stops the timer driver. Mounted with
    `httpx.ASGITransport` (no lifespan): with a `FakeClock` nothing needs starting (call
    `advance`); with a real-time clock, wrap the test in `async with sim:`.
    """

    def __init__(
        self,
        tenant: Tenant | None = None,
        config: SimulatorConfig | None = None,
        *,
        clock: Clock | None = None,
        wall: Callable[[], float] | None = None,
        time_scale: float = 1.0,
    ) -> None:
        self.config = config or SimulatorConfig()
        self.tenant = tenant if tenant is not None else generate_tenant(3, 1)
        self.clock: Clock = clock if clock is not None else SystemClock(time_scale, start=0.0)
        self.wall: Callable[[], float] = wall or (
            self.clock.monotonic if isinstance(self.clock, FakeClock) else time.monotonic)
        self.scheduler = Scheduler(self.clock)
        self.faults = FaultInjector(self.config.faults, self.config.seed)
        self.traffic = TrafficLog()
        self.history: list[StateRecord] = []
        self._published: dict[str, int] = {}
        self._imports: dict[str, tuple[str, int]] = {}  # list id -> the import progress last announced
        self.tokens = TokenStore(self.config.client_id, self.config.client_secret, self.config.token_ttl, self.wall)
        rate_time = self.clock.monotonic if self.config.rate_clock == "sim" else self.wall
        if self.config.profile == "genesys":
            self.limiter = RequestLimiter(lambda: self.faults.config.request_limit_per_min, rate_time, 60.0)
        else:
            self.limiter = RequestLimiter(lambda: self.faults.config.read_limit_per_s, rate_time, 1.0)
        self.hub = Hub(self.scheduler, self.faults, heartbeat_seconds=self.config.heartbeat_seconds,
                       channel_ttl=self.config.channel_ttl, max_topics=self.config.max_topics,
                       max_channels=self.config.max_channels)
        self.engine = Engine(self.tenant, self.scheduler, timing=self.config.timing, faults=self.faults,
                             on_campaign=self._campaign_changed, on_contact_list=self._list_changed,
                             on_in_flight=self._in_flight_changed, visible=self.config.profile == "genesys",
                             progress=self.config.profile == "genesys")
        self.engine.active_campaign_cap = self.config.active_campaign_cap
        self.app = Starlette(
            routes=[*api_routes(self), *admin_routes(self)],
            exception_handlers={HTTPException: _http_error},  # type: ignore[dict-item]
            lifespan=self._lifespan,
        )
        self._started = False

    def __repr__(self) -> str:
        return (f"Simulator(profile={self.config.profile!r}, campaigns={len(self.tenant.campaigns)}, "
                f"clock={self.clock!r})")

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the scheduler's driver (real-time clocks only). Idempotent; the app's lifespan calls it."""
        if not self._started:
            self._started = True
            if not isinstance(self.clock, FakeClock):
                self.scheduler.start()

    async def stop(self) -> None:
        """Close every notification socket and stop the driver."""
        self.hub.close_all()
        await self.scheduler.stop()
        self._started = False

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def transport(self) -> httpx.ASGITransport:
        """The mock-transport seam: `httpx.AsyncClient(transport=sim.transport(), base_url="http://sim")`."""
        return httpx.ASGITransport(self.app)

    # --- time --------------------------------------------------------------------------------------

    def advance(self, seconds: float) -> int:
        """Fake clock only: move simulated time, firing every timer at its due time. Returns timers fired."""
        return self.scheduler.advance(seconds)

    # --- conveniences for tests --------------------------------------------------------------------

    def mint_token(self) -> str:
        """A valid bearer token without going through /oauth/token."""
        return self.tokens.mint()

    def state_of(self, campaign_id: str) -> CampaignState:
        return self.engine.campaign(campaign_id).state

    def campaign(self, campaign_id: str) -> SimCampaign:
        return self.engine.campaign(campaign_id)

    def contact_list(self, list_id: str) -> SimContactList:
        return self.engine.contact_list(list_id)

    def set_state(self, campaign_id: str, state: CampaignState, **kwargs: Any) -> SimCampaign:
        """Force a state (see Engine.force_state). Notifies subscribers."""
        return self.engine.force_state(campaign_id, state, **kwargs)

    def set_contact_list(self, list_id: str, **kwargs: Any) -> SimContactList:
        """state=ACTIVE|IMPORTING|LOCKED, import_status=..., release_after=seconds (Engine.set_contact_list)."""
        return self.engine.set_contact_list(list_id, **kwargs)

    def next_transition(self, campaign_id: str, outcome: str = "normal", duration: float | None = None,
                        errors: list[dict[str, str]] | tuple[dict[str, str], ...] = ()) -> bool:
        """Arm (or apply to the one in flight: returns True) a stall, a failure or a duration override."""
        if outcome not in ("normal", "stall", "fail"):
            raise ValueError(f"outcome must be normal, stall or fail, got {outcome!r}")
        return self.engine.override(campaign_id, TransitionOverride(outcome, duration, tuple(errors)))  # type: ignore[arg-type]

    def in_flight(self, dialer_id: str) -> int:
        return self.engine.in_flight_on(dialer_id)

    def force_off(self, campaign_id: str) -> SimCampaign:
        """genesys: the platform forces the campaign off (`forced_off`). Notifies subscribers."""
        return self.engine.force_off(campaign_id)

    def contacts_called(self, campaign_id: str) -> int:
        """genesys: the campaign's position in its contact list (`numberOfContactsCalled`)."""
        campaign = self.engine.campaign(campaign_id)
        if self.engine.progress is None:
            raise ValueError("only the genesys profile keeps campaign progress")
        return self.engine.progress.called(campaign.id, self.engine.list_size(campaign))

    def campaign_body(self, campaign: SimCampaign) -> dict[str, Any]:
        """The campaign as the served profile shows it (GET, notifications, admin answers)."""
        return campaign_payload(self.config.profile, campaign, self.tenant.contact_lists.get(campaign.contact_list_id),
                                self.tenant.dialers.get(campaign.dialer_id))

    def snapshot(self) -> dict[str, Any]:
        """What GET /admin/state answers."""
        now = self.clock.monotonic()
        campaigns = []
        for c in self.tenant.campaigns.values():
            t = self.engine.transitions.get(c.id)
            campaigns.append({
                "id": c.id, "name": c.name, "state": c.state.value, "campaignStatus": genesys_status(c),
                "dialerType": c.dialer_type.value, "dialerId": c.dialer_id, "contactListId": c.contact_list_id,
                "activeCalls": c.active_calls, "currentCalls": c.current_calls, "version": c.version,
                "errors": c.errors,
                "transition": None if t is None else {
                    "kind": t.kind, "target": t.target.value, "startedAt": t.started_at, "due": t.due,
                    "held": t.held, "outcome": t.outcome.outcome,
                },
            })
        return {
            "profile": self.config.profile,
            "simTime": now,
            "campaigns": campaigns,
            "contactLists": [{"id": cl.id, "name": cl.name, "state": cl.state, "importStatus": cl.import_status,
                              "ready": cl.ready, "version": cl.version} for cl in self.tenant.contact_lists.values()],
            "dialers": [{"id": d.id, "licensedCapacity": d.licensed_capacity,
                         "activeCalls": self.engine.dialer_calls(d.id), "inFlight": self.engine.in_flight_on(d.id)}
                        for d in self.tenant.dialers.values()],
            "channels": [{"id": ch.id, "topics": len(ch.topics), "connections": len(ch.connections),
                          "expires": ch.expires_rfc3339, "lastUsed": ch.last_used}
                         for ch in self.hub.channels.values()],
            "evictedChannels": list(self.hub.evicted),
            "rejectedTopics": list(self.hub.rejected),
            "faults": self.faults.config.to_json(),
        }

    # --- listeners ---------------------------------------------------------------------------------

    def _campaign_changed(self, campaign: SimCampaign) -> None:
        self.history.append(StateRecord(self.clock.monotonic(), self.wall(), campaign.id, campaign.state,
                                        genesys_status(campaign)))
        if self._published.get(campaign.id) == campaign.version:
            return  # nothing a client can see changed (genesys: a start finishing behind `on`)
        self._published[campaign.id] = campaign.version
        body = self.campaign_body(campaign)
        if self.config.profile == "genesys":
            body = _notified(body)  # the SDK's DialerCampaignConfigChangeCampaign has no selfUri
        self.hub.publish(f"v2.outbound.campaigns.{campaign.id}", body)

    def _list_changed(self, contact_list: SimContactList) -> None:
        body = contact_list_payload(self.config.profile, contact_list)
        if self.config.profile == "genesys":
            # The SDK's DialerContactlistConfigChangeContactList: no selfUri, and its importStatus
            # names its fields as the importstatus topic does (importState, percentageComplete).
            body = _notified(body)
            status = body.pop("importStatus", None)
            if isinstance(status, dict):
                body["importStatus"] = {"importState": status.get("state"), "totalRecords": status.get("totalRecords"),
                                        "completedRecords": status.get("completedRecords"),
                                        "percentageComplete": status.get("percentComplete"),
                                        **({"failureReason": status["failureReason"]}
                                           if "failureReason" in status else {})}
        self.hub.publish(f"v2.outbound.contactlists.{contact_list.id}", body)
        if self.config.profile == "genesys":
            self._announce_import(contact_list)

    def _announce_import(self, contact_list: SimContactList) -> None:
        """`v2.outbound.contactlists.{id}.importstatus` (the SDK's ContactlistImportStatusImportStatus)
        whenever the import's progress changes. The SDK knows only IN_PROGRESS and FAILED, so an
        import that finished is announced as IN_PROGRESS at 100 % (the list then has no importStatus)."""
        if contact_list.import_status == "FAILED":
            progress = ("FAILED", 0)
        elif contact_list.blocking:
            progress = ("IN_PROGRESS", 50)
        else:
            progress = ("IN_PROGRESS", 100)
        before = self._imports.get(contact_list.id, ("IN_PROGRESS", 100))
        self._imports[contact_list.id] = progress
        if progress == before:
            return
        state, percent = progress
        body: dict[str, Any] = {"importState": state, "totalRecords": contact_list.size,
                                "completedRecords": contact_list.size * percent // 100, "percentageComplete": percent}
        if state == "FAILED":
            body["failureReason"] = "The import job failed."
        self.hub.publish(f"v2.outbound.contactlists.{contact_list.id}.importstatus", body)

    def _in_flight_changed(self, campaign: SimCampaign, count: int) -> None:
        self.traffic.note_in_flight(InFlightSample(self.clock.monotonic(), self.wall(), campaign.dialer_id,
                                                   campaign.id, count))

    def states(self, campaign_id: str) -> list[CampaignState]:
        """The states a campaign went through, in order (from `history`)."""
        return [r.state for r in self.history if r.campaign_id == campaign_id]

    def in_flight_campaigns(self) -> list[str]:
        return [c.id for c in self.tenant.campaigns.values() if c.state in TRANSITIONAL_STATES]


def _notified(value: Any) -> Any:
    """A REST body as a genesys notification carries it: without the `selfUri`s."""
    if isinstance(value, dict):
        return {k: _notified(v) for k, v in value.items() if k != "selfUri"}
    if isinstance(value, list):
        return [_notified(v) for v in value]
    return value


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 405 and request.url.path.startswith("/api/"):
        # A GET on a POST-only action path is a resource that does not exist, as the platform says it.
        return error_response(404, "not.found", f"Not Found: {request.method} {request.url.path}")
    code = {404: "not.found", 405: "method.not.allowed"}.get(exc.status_code, "bad.request")
    return error_response(exc.status_code, code, f"{exc.detail}: {request.method} {request.url.path}")
