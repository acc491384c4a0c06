"""The platform REST client: the `Platform` port (fsm/ports.py) over HTTP, for both API profiles.

Built on `httpx.AsyncClient`; the constructor takes an optional `httpx.AsyncBaseTransport`, so unit
tests hand it an `httpx.MockTransport` and integration tests nothing (real sockets). Payloads are
translated by `adapters/platform/profiles.py`; this module only moves them and maps failures.

The request budget (fsm/request_budget.py) is the profile's: genesys counts every request of the
OAuth client, 300 per 60 s by default, so every GET, POST, PUT and DELETE (the notification-channel
calls included) spends from it; the guide limits reads only, 10 per second, so only GETs spend. A
request is sent inside its grant (key = the campaign, contact list or dialer it is about; writes
in the priority lane), held until its answer is back so the budget counts it where the platform
may have counted it. On genesys every answer's `inin-ratelimit-count` / `-allowed` / `-reset`
resynchronise the budget with the platform's own count, which includes other instances of the same
client (the guide names no such headers).

Reads (GET) are safe to repeat; after a grant:

- 5xx, timeouts and connection errors are retried with exponential backoff and jitter, a bounded
  number of times, then raised as `PlatformUnavailable`;
- 429 (`too.many.requests`, or `too.many.requests.retry.after` for a per-resource limit) is waited
  out: `Retry-After` and `inin-ratelimit-reset` say how long (the longer one wins), and the wait is
  imposed on the budget as a whole (`defer`), because the limit is the client's;
  after a bounded number of waits, or a wait longer than `max_retry_after`, `PlatformRateLimited`;
- 401 fetches a new token and sends once more;
- 404 -> `PlatformNotFound`, 409 and 400-invalid-transition -> `PlatformConflict` (Genesys words
  the 400 `Invalid transition from <COMPLETE> to <OFF>`: recognised by status and message).

Login: tokens come from `login_url` + `/oauth/token`. Genesys serves them from `login.<region>`, not
`api.<region>`; without a `login_url` the genesys profile derives it from `base_url` as the SDK does
(adapters/platform/oauth.py `login_url_for`), the guide profile uses `base_url`.

Transitions (POST start|stop|pause|resume, or genesys' older PUT with `version`) are sent exactly
once. A 202 means "accepted", never "done": `send_action` returns an `ActionReceipt` and the caller
watches the campaign. On a timeout, 5xx, 429 or connection error the client raises and does not
re-send: the request may have been executed even though no answer came back, and only a fresh
read of the campaign can tell (the public SDK re-sends POSTs on 429 through its retry policy; this
client must not). The one exception is 401: the platform checks the bearer token before it looks
at the request, so a 401 proves the transition was not processed; the client fetches a new token
and sends once more, and a second 401 raises `PlatformAuthError`.

Time: the injected `Clock` times backoff, token expiry and receipts. The platform's rate limit is
in real seconds, so when the clock is scaled (a service sharing a time factor with the simulator),
pass a `budget` built on a real-time clock; one budget may be shared by every client of an OAuth client.

Exceptions raised (all from fsm/ports.py)::

    PlatformError            a 4xx we have no better name for, or an unusable payload
    ├── PlatformConflict     409, 400 invalid transition, 409 stale version on PUT
    ├── PlatformUnavailable  5xx, timeout, connection failure (reads: after the retries)
    ├── PlatformRateLimited  429 (POST: at once; GET: after the bounded waits)
    ├── PlatformNotFound     404
    └── PlatformAuthError    the OAuth client or its token was refused
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import httpx

from fsm.backoff import Backoff
from fsm.ports import (
    CampaignSnapshot,
    Clock,
    ContactListSnapshot,
    DialerLoad,
    PlatformAuthError,
    PlatformConflict,
    PlatformError,
    PlatformNotFound,
    PlatformRateLimited,
    PlatformUnavailable,
)
from fsm.request_budget import Grant, RequestBudget
from schemas.base import ContractError
from schemas.platform import ChannelTopicListing, NotificationChannel
from schemas.types import Action

from ..clock import SystemClock
from .actions import _CAMPAIGNS, ActionsMixin, _campaign_path, _segment
from .answers import error_fields, invalid_transition, json_object, rate_headers, retry_after
from .oauth import TokenManager, login_url_for
from .profiles import (
    SUPPORTED_ACTIONS,
    SUPPORTS_RECYCLE,
    Profile,
    campaign_from_payload,
    contact_list_from_payload,
    dialer_load_from_payload,
    errors_from_payload,
    line_distribution_load,
)

__all__ = ["DEFAULT_BUDGET", "ClientStats", "PlatformClient"]

_log = logging.getLogger(__name__)

_CONTACT_LISTS = "/api/v2/outbound/contactlists"
_DIALERS = "/api/v2/outbound/dialers"
_CHANNELS = "/api/v2/notifications/channels"
_LIST_KEY = "(campaign-list)"
_CHANNEL_KEY = "(notification-channels)"
# Requests per window of each profile's budget (see the module docstring).
DEFAULT_BUDGET: Mapping[Profile, tuple[int, float]] = {Profile.GUIDE: (10, 1.0), Profile.GENESYS: (300, 60.0)}
_MAX_PAGES = 10_000
_T = TypeVar("_T")


@dataclass(slots=True)
class ClientStats:
    """What the client saw. `http_5xx_unretried` counts 5xx answers handed to the caller as errors."""

    gets_sent: int = 0
    get_retries: int = 0
    writes_sent: int = 0
    http_429: int = 0
    http_5xx: int = 0
    http_5xx_unretried: int = 0
    reauths: int = 0


class PlatformClient(ActionsMixin):
    """The dialing platform over REST, in the `guide` or `genesys` profile."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        profile: Profile | str = Profile.GUIDE,
        clock: Clock | None = None,
        budget: RequestBudget | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        request_limit: int | None = None,
        request_window: float | None = None,
        request_margin: float = 0.05,
        login_url: str | None = None,
        max_get_attempts: int = 5,
        max_rate_limit_waits: int = 5,
        max_retry_after: float = 60.0,
        backoff_base: float = 0.25,
        backoff_cap: float = 8.0,
        dialer_capacity: Mapping[str, int] | None = None,
        genesys_status_via_put: bool = False,
        page_size: int = 100,
        rng: random.Random | None = None,
    ) -> None:
        try:
            self._profile = Profile(profile)
        except ValueError:
            raise ValueError(f"unknown platform profile {profile!r}: expected 'guide' or 'genesys'") from None
        if max_get_attempts < 1 or max_rate_limit_waits < 0:
            raise ValueError("max_get_attempts must be >= 1 and max_rate_limit_waits >= 0")
        if not 1 <= page_size <= 500:
            raise ValueError(f"page_size must be within 1..500, got {page_size}")
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._owns_budget = budget is None
        if budget is None:
            limit, window = DEFAULT_BUDGET[self._profile]
            budget = RequestBudget(self._clock, request_limit or limit, request_window or window, request_margin)
        self._budget = budget
        # Genesys counts every method against the client's budget and says its count in headers;
        # the guide's limit is on reads, and the guide names no such headers.
        self._writes_spend = self._resyncs = self._profile is Profile.GENESYS
        self._http = httpx.AsyncClient(
            base_url=base_url, transport=transport, timeout=timeout, headers={"Accept": "application/json"}
        )
        if login_url is None:
            login_url = login_url_for(base_url) if self._profile is Profile.GENESYS else base_url
        self._login_url = login_url.rstrip("/")
        self._tokens = TokenManager(self._http, client_id, client_secret, self._clock,
                                    token_url=f"{self._login_url}/oauth/token")
        self._base_url = base_url
        self._max_get_attempts = max_get_attempts
        self._max_rate_limit_waits = max_rate_limit_waits
        self._max_retry_after = max_retry_after
        # +-20 % after the cap, so many readers never retry in lockstep.
        self._retry = Backoff(backoff_base, 2.0, backoff_cap, max_tries=None, jitter=0.2)
        self._capacity = dict(dialer_capacity or {})
        self._via_put = genesys_status_via_put and self._profile is Profile.GENESYS
        self._page_size = page_size
        self._rng = rng if rng is not None else random.Random()
        self.stats = ClientStats()
        self._line_distribution = True  # False once the platform showed it has no such route

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> PlatformClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_budget:
            await self._budget.aclose()
        await self._http.aclose()

    # --- the Platform port -----------------------------------------------------------------------

    @property
    def profile(self) -> str:
        return self._profile.value

    @property
    def supported_actions(self) -> frozenset[Action]:
        return SUPPORTED_ACTIONS[self._profile]

    @property
    def supports_recycle(self) -> bool:
        return SUPPORTS_RECYCLE[self._profile]

    @property
    def clock(self) -> Clock:
        return self._clock

    def reads_wait(self) -> bool:
        return not self.budget.free_now()

    @property
    def budget(self) -> RequestBudget:
        return self._budget

    @property
    def login_url(self) -> str:
        return self._login_url

    @property
    def tokens(self) -> TokenManager:
        return self._tokens

    async def get_campaign(self, campaign_id: str, *, priority: bool = False) -> CampaignSnapshot:
        payload = await self._get(_campaign_path(campaign_id), key=campaign_id, priority=priority)
        return self._translate(campaign_from_payload, payload, f"campaign {campaign_id!r}")

    async def list_campaigns(self) -> list[CampaignSnapshot]:
        """Every campaign of the tenant, page by page. An entity that does not parse is logged and skipped."""
        out: list[CampaignSnapshot] = []
        for page in range(1, _MAX_PAGES + 1):
            body = await self._get(_CAMPAIGNS, key=_LIST_KEY, params={"pageSize": self._page_size,
                                                                      "pageNumber": page})
            entities = body.get("entities")
            out.extend(self._entities(body, f"campaign page {page}"))
            page_count = body.get("pageCount")
            if not entities or not isinstance(page_count, int) or page >= page_count:
                break
        return out

    async def get_campaigns(self, campaign_ids: Sequence[str]) -> list[CampaignSnapshot]:
        """Many campaigns by id, up to `page_size` (100 on Genesys) per request: `GET .../campaigns`
        with repeated `id` filters (the SDK's `get_outbound_campaigns(id=[...], page_size=...)`).

        Ids the platform does not list (deleted, never there) are simply absent from the answer; an
        entity that does not parse is logged and skipped, as in `list_campaigns`.
        """
        for cid in campaign_ids:
            _segment(cid)  # a bad id is refused before anything is sent
        unique = list(dict.fromkeys(campaign_ids))
        out: list[CampaignSnapshot] = []
        for start in range(0, len(unique), self._page_size):
            chunk = unique[start:start + self._page_size]
            params = httpx.QueryParams([("id", cid) for cid in chunk] + [("pageSize", len(chunk)), ("pageNumber", 1)])
            body = await self._get(_CAMPAIGNS, key=_LIST_KEY, params=params)
            out.extend(self._entities(body, f"campaigns by id ({len(chunk)})"))
        return out

    def _entities(self, body: dict[str, Any], what: str) -> list[CampaignSnapshot]:
        entities = body.get("entities")
        if not isinstance(entities, list):
            raise PlatformError(f"{what}: 'entities' is missing or not a list")
        out: list[CampaignSnapshot] = []
        for entity in entities:
            try:
                out.append(campaign_from_payload(self._profile, entity))
            except ContractError as exc:
                _log.warning("skipping a campaign the platform listed in an unusable shape: %s", exc)
        return out

    async def get_errors(self, campaign_id: str) -> list[dict[str, str]]:
        suffix = "errors" if self._profile is Profile.GUIDE else "diagnostics"
        payload = await self._get(f"{_campaign_path(campaign_id)}/{suffix}", key=campaign_id)
        return self._translate(errors_from_payload, payload, f"errors of campaign {campaign_id!r}")

    async def get_contact_list(self, contact_list_id: str, *, priority: bool = False) -> ContactListSnapshot:
        path = f"{_CONTACT_LISTS}/{_segment(contact_list_id)}"
        payload = await self._get(path, key=f"contactlist:{contact_list_id}", priority=priority)
        return self._translate(contact_list_from_payload, payload, f"contact list {contact_list_id!r}")

    async def get_dialer_load(self, dialer_id: str, campaign_id: str) -> DialerLoad:
        """guide: the dialer's own stats. genesys: the line distribution of the campaign's edge group or
        site (`get_line_load`), configuration overriding its capacity."""
        if self._profile is Profile.GENESYS:
            return await self.get_line_load(dialer_id, campaign_id)
        payload = await self._get(f"{_DIALERS}/{_segment(dialer_id)}/stats", key=f"dialer:{dialer_id}")
        try:
            return dialer_load_from_payload(
                self._profile, payload, dialer_id=dialer_id, capacity=self._capacity.get(dialer_id)
            )
        except ContractError as exc:
            raise PlatformError(f"dialer {dialer_id!r}: unusable payload: {exc}") from exc

    # --- notification channel REST calls (used by adapters/platform/notifications.py) ------------

    async def create_notification_channel(self) -> NotificationChannel:
        """POST /api/v2/notifications/channels. A lost answer only leaks a channel that expires."""
        resp, sent_at = await self._send_once("POST", _CHANNELS, None, key=_CHANNEL_KEY)
        if not resp.is_success:
            self._raise_for(resp, f"POST {_CHANNELS}", sent_at=sent_at)
        try:
            return NotificationChannel.model_validate(json_object(resp, f"POST {_CHANNELS}"))
        except ValueError as exc:
            raise PlatformError(f"notification channel answer is unusable: {exc}") from None

    async def set_channel_topics(self, channel_id: str, topics: list[str], *, replace: bool) -> dict[str, str]:
        """PUT (replace=True) or POST (add) the channel's topic subscriptions. Returns the topics the
        platform Rejected, each with its reason: `ignoreErrors=true` makes it subscribe the others
        and answer each topic's state (the SDK's ChannelTopic) instead of failing the whole request."""
        path = f"{_CHANNELS}/{_segment(channel_id)}/subscriptions"
        resp, sent_at = await self._send_once("PUT" if replace else "POST", f"{path}?ignoreErrors=true",
                                              [{"id": t} for t in topics], key=_CHANNEL_KEY)
        if not resp.is_success:
            self._raise_for(resp, f"subscriptions of channel {channel_id!r}", sent_at=sent_at)
        try:
            return ChannelTopicListing.model_validate(json_object(resp, f"subscriptions of {channel_id!r}")).rejected()
        except ValueError as exc:
            raise PlatformError(f"subscription answer of channel {channel_id!r} is unusable: {exc}") from None

    # --- reads -----------------------------------------------------------------------------------

    async def _get(
        self, path: str, *, key: str, params: httpx.QueryParams | Mapping[str, Any] | None = None,
        priority: bool = False,
    ) -> dict[str, Any]:
        failures = 0
        rate_waits = 0
        reauthed = False
        what = f"GET {path}"
        while True:
            token = await self._tokens.token()
            try:
                # The grant is held until the answer is back: the limiter then knows the platform
                # counted this read, however late after the grant it left.
                async with self._budget.spend(key, priority=priority) as grant:
                    self.stats.gets_sent += 1
                    resp = await self._http.get(path, params=params, headers=_bearer(token))
                    self._resync(grant, resp)
            except httpx.HTTPError as exc:
                failures += 1
                if failures >= self._max_get_attempts:
                    raise PlatformUnavailable(
                        f"{what}: {type(exc).__name__} after {failures} attempts"
                    ) from None
                await self._retry_pause(failures, what, type(exc).__name__)
                continue
            status = resp.status_code
            if resp.is_success:
                return json_object(resp, what)
            if status == 401 and not reauthed:
                reauthed = True
                self.stats.reauths += 1
                self._tokens.invalidate(token)
                continue
            if status == 429:
                self.stats.http_429 += 1
                wait = retry_after(resp)
                if wait is None:
                    wait = self._backoff(rate_waits + 1)
                rate_waits += 1
                if rate_waits > self._max_rate_limit_waits or wait > self._max_retry_after:
                    raise PlatformRateLimited(f"{what}: HTTP 429 after {rate_waits} waits", retry_after=wait)
                _log.warning("%s: HTTP 429 %s, the client waits %.2fs", what, error_fields(resp)[0], wait)
                self._budget.defer(wait)
                continue
            if status >= 500:
                self.stats.http_5xx += 1
                failures += 1
                if failures >= self._max_get_attempts:
                    self.stats.http_5xx_unretried += 1
                    self._raise_for(resp, what)
                await self._retry_pause(failures, what, f"HTTP {status}")
                continue
            self._raise_for(resp, what)

    async def _retry_pause(self, failures: int, what: str, why: str) -> None:
        delay = self._backoff(failures)
        self.stats.get_retries += 1
        _log.info("%s: %s, retry %d in %.2fs", what, why, failures, delay)
        await self._clock.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """The delay before retry `attempt` (1-based)."""
        return self._retry.delay(attempt - 1, self._rng)

    # --- writes ----------------------------------------------------------------------------------

    async def _send_once(self, method: str, path: str, body: Any, *, key: str) -> tuple[httpx.Response, float]:
        """One write. Re-sent only after a 401, which proves the platform did not process it."""
        for attempt in (1, 2):
            token = await self._tokens.token()  # a failure here means nothing was sent
            try:
                async with self._spending(key) as grant:
                    sent_at = self._clock.now()
                    self.stats.writes_sent += 1
                    resp = await self._http.request(method, path, json=body, headers=_bearer(token))
                    if grant is not None:
                        self._resync(grant, resp)
            except httpx.TimeoutException:
                raise PlatformUnavailable(
                    f"{method} {path}: no answer in time; it may have been executed: re-read before deciding",
                    sent_at=sent_at,
                ) from None
            except httpx.HTTPError as exc:
                raise PlatformUnavailable(
                    f"{method} {path}: {type(exc).__name__}; re-read before deciding", sent_at=sent_at
                ) from None
            if resp.status_code == 401 and attempt == 1:
                self.stats.reauths += 1
                self._tokens.invalidate(token)
                continue
            if resp.status_code >= 500:
                self.stats.http_5xx += 1
                self.stats.http_5xx_unretried += 1
            elif resp.status_code == 429:
                self.stats.http_429 += 1
                wait = retry_after(resp)
                if wait is not None:
                    self._budget.defer(min(wait, self._max_retry_after))
            return resp, sent_at
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.asynccontextmanager
    async def _spending(self, key: str) -> AsyncIterator[Grant | None]:
        """A write's grant: from the budget where the profile counts writes (genesys), else none."""
        if not self._writes_spend:
            yield None
            return
        async with self._budget.spend(key, priority=True) as grant:
            yield grant

    def _resync(self, grant: Grant, resp: httpx.Response) -> None:
        """The platform's own count of this client's requests, when the answer carries it."""
        counted = rate_headers(resp) if self._resyncs else None
        if counted is not None:
            count, allowed, reset = counted
            self._budget.resync(grant, count=count, allowed=allowed, reset_after=reset)

    # --- translation -----------------------------------------------------------------------------

    def _translate(self, fn: Callable[[Profile, Any], _T], payload: dict[str, Any], what: str) -> _T:
        try:
            return fn(self._profile, payload)
        except ContractError as exc:
            raise PlatformError(f"{what}: unusable payload: {exc}") from exc

    def _raise_for(self, resp: httpx.Response, what: str, *, sent_at: float | None = None) -> None:
        status = resp.status_code
        code, message = error_fields(resp)
        text = f"{what}: HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        if status == 404:
            raise PlatformNotFound(text, status=status, sent_at=sent_at)
        if status == 409 or (status == 400 and invalid_transition(code, message)):
            raise PlatformConflict(text, status=status, sent_at=sent_at)
        if status == 429:
            raise PlatformRateLimited(text, retry_after=retry_after(resp))
        if status >= 500:
            raise PlatformUnavailable(text, status=status, sent_at=sent_at)
        if status in (401, 403):
            raise PlatformAuthError(text, status=status, sent_at=sent_at)
        raise PlatformError(text, status=status, sent_at=sent_at)

    # --- genesys line load (issue 14, item 5) ------------------------------------------------------

    async def get_line_load(self, dialer_id: str, campaign_id: str) -> DialerLoad:
        """The load of a campaign's edge group or site (`dialer_id`), read through that campaign.

        `GET .../campaigns/{id}/linedistribution` (SDK >= 207) speaks for the whole group. A platform
        without that route (404 while the campaign exists) is read from `/stats` `linesUtilization`
        from then on. One read per call: callers cache per dialer (fsm/dispatch.py, `load_ttl`).
        """
        key = f"dialer:{dialer_id}"
        capacity = self._capacity.get(dialer_id)
        if self._line_distribution:
            try:
                payload = await self._get(f"{_campaign_path(campaign_id)}/linedistribution", key=key)
            except PlatformNotFound:
                stats = await self._get(f"{_campaign_path(campaign_id)}/stats", key=key)
                self._line_distribution = False
                _log.warning("this platform has no campaign line distribution: edge-group load from /stats "
                             "linesUtilization and the configured capacity instead")
                return self._load(lambda p: dialer_load_from_payload(
                    Profile.GENESYS, p, dialer_id=dialer_id, capacity=capacity), stats, dialer_id)
            return self._load(lambda p: line_distribution_load(p, dialer_id=dialer_id, capacity=capacity),
                              payload, dialer_id)
        stats = await self._get(f"{_campaign_path(campaign_id)}/stats", key=key)
        return self._load(lambda p: dialer_load_from_payload(Profile.GENESYS, p, dialer_id=dialer_id,
                                                             capacity=capacity), stats, dialer_id)

    @staticmethod
    def _load(parse: Callable[[dict[str, Any]], DialerLoad], payload: dict[str, Any], dialer_id: str) -> DialerLoad:
        try:
            return parse(payload)
        except ContractError as exc:
            raise PlatformError(f"dialer {dialer_id!r}: unusable payload: {exc}") from exc

    def __repr__(self) -> str:
        return (
            f"PlatformClient(profile={self._profile.value!r}, base_url={self._base_url!r}, "
            f"client_id={self._tokens.client_id!r})"
        )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
