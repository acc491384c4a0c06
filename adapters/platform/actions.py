"""How a transition is asked for, on each profile: the `send_action` half of `PlatformClient`.

guide: `POST .../campaigns/{id}/{action}` with an empty JSON object. genesys: the campaign is turned
on or off (`profiles.GENESYS_TURN`, by the state the model leaves: a pause and a stop are both an
off, a resume and a start both an on; a stop of a paused campaign sends nothing), by `POST
.../start|stop` without a body or, with `genesys_status_via_put`, by a `PUT` compare-and-set; a start
with `recycle` first resets the progress (`DELETE .../progress`). Each request is sent once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fsm.ports import (
    ActionReceipt,
    CampaignSnapshot,
    Clock,
    PlatformCapReached,
    PlatformConflict,
    PlatformError,
)
from schemas.platform import GenesysCampaignProgress
from schemas.types import Action, CampaignState

from .answers import cap_refusal, cap_text, json_object
from .profiles import GENESYS_TURN, Profile, campaign_from_payload

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

__all__ = ["ActionsMixin"]

_CAMPAIGNS = "/api/v2/outbound/campaigns"
# Without the state the model leaves: what each action asks for (a stop of a paused campaign then
# sends an off the platform may refuse as already off; the core always names the state).
_GENESYS_DEFAULT_TURN = {Action.START: "on", Action.RESUME: "on", Action.PAUSE: "off", Action.STOP: "off"}
_GENESYS_ROUTE = {"on": "start", "off": "stop"}


class ActionsMixin:
    """Transitions and progress over the client's own reads, writes and error mapping."""

    _profile: Profile
    _clock: Clock
    _via_put: bool

    if TYPE_CHECKING:
        @property
        def supported_actions(self) -> frozenset[Action]: ...

        @property
        def supports_recycle(self) -> bool: ...

        async def get_campaign(self, campaign_id: str, *, priority: bool = False) -> CampaignSnapshot: ...

        async def _get(self, path: str, *, key: str, params: Any = None,
                       priority: bool = False) -> dict[str, Any]: ...

        async def _send_once(self, method: str, path: str, body: Any, *,
                             key: str) -> tuple[httpx.Response, float]: ...

        def _raise_for(self, resp: httpx.Response, what: str, *, sent_at: float | None = None) -> None: ...

        def _translate(self, fn: Callable[[Profile, Any], CampaignSnapshot], payload: dict[str, Any],
                       what: str) -> CampaignSnapshot: ...

    async def send_action(self, campaign_id: str, action: Action, *, source: CampaignState | None = None,
                          recycle: bool = False) -> ActionReceipt:
        """Ask for a transition, exactly once. The receipt says "accepted", never "done".

        genesys: the campaign is turned on or off (`GENESYS_TURN`, by `source`, the state the model
        leaves); a stop of a paused campaign sends nothing. `recycle` (start only) first resets the
        campaign's progress, so dialing begins again at the contact list's first record.
        """
        action = Action(action)
        if action not in self.supported_actions:
            raise ValueError(
                f"the {self._profile.value} profile has no {action.value!r} action "
                f"(supported: {', '.join(sorted(a.value for a in self.supported_actions))})"
            )
        if recycle and (action is not Action.START or not self.supports_recycle):
            raise ValueError(f"recycle is a start option of the genesys profile, not of {self._profile.value} "
                             f"{action.value}")
        if self._profile is Profile.GUIDE:
            return await self._post_action(campaign_id, action, action.value, {})
        key = (action, source or CampaignState.FAILED)  # no source: no pair matches
        turn = GENESYS_TURN[key] if key in GENESYS_TURN else _GENESYS_DEFAULT_TURN[action]
        if recycle:
            await self.reset_progress(campaign_id)
        if turn is None:
            now = self._clock.now()
            return ActionReceipt(campaign_id, action, 0, now, now, method=None)
        if self._via_put:
            sent_at = self._clock.now()
            try:
                await self.set_campaign_status_put(campaign_id, turn)
            except PlatformError as exc:
                if action in (Action.START, Action.RESUME) and cap_text(exc.status, str(exc)):
                    raise PlatformCapReached(str(exc), status=exc.status, sent_at=exc.sent_at) from None
                raise
            answered = self._clock.now()
            path = _campaign_path(campaign_id)
            return ActionReceipt(campaign_id, action, 200, sent_at, answered, path, method="PUT", path=path)
        # Genesys' start and stop routes take no body at all.
        return await self._post_action(campaign_id, action, _GENESYS_ROUTE[turn], None)

    async def _post_action(self, campaign_id: str, action: Action, route: str, body: Any) -> ActionReceipt:
        path = f"{_campaign_path(campaign_id)}/{route}"
        resp, sent_at = await self._send_once("POST", path, body, key=campaign_id)
        answered_at = self._clock.now()
        if not resp.is_success:
            if action in (Action.START, Action.RESUME) and cap_refusal(resp):
                raise PlatformCapReached(f"POST {path}: HTTP {resp.status_code}: the organisation's active-campaign "
                                         "cap is reached", status=resp.status_code, sent_at=sent_at)
            self._raise_for(resp, f"POST {path}", sent_at=sent_at)
        return ActionReceipt(
            campaign_id=campaign_id,
            action=action,
            status=resp.status_code,
            sent_at=sent_at,
            answered_at=answered_at,
            location=resp.headers.get("Location"),
            path=path,
        )

    async def get_progress(self, campaign_id: str) -> GenesysCampaignProgress:
        """genesys GET .../campaigns/{id}/progress: how far through its contact list the campaign is."""
        if self._profile is not Profile.GENESYS:
            raise ValueError("campaign progress exists only in the genesys profile")
        payload = await self._get(f"{_campaign_path(campaign_id)}/progress", key=campaign_id)
        try:
            return GenesysCampaignProgress.model_validate(payload)
        except ValueError as exc:
            raise PlatformError(f"progress of campaign {campaign_id!r}: unusable payload: {exc}") from None

    async def reset_progress(self, campaign_id: str) -> None:
        """genesys DELETE .../campaigns/{id}/progress: recycle, the next dialing begins at record one.
        Safe to repeat (a recycled campaign recycled again is where it was), but Genesys takes at most
        one recycle per campaign every five seconds."""
        if self._profile is not Profile.GENESYS:
            raise ValueError("campaign progress exists only in the genesys profile")
        path = f"{_campaign_path(campaign_id)}/progress"
        resp, sent_at = await self._send_once("DELETE", path, None, key=campaign_id)
        if not resp.is_success:
            self._raise_for(resp, f"DELETE {path}", sent_at=sent_at)

    async def set_campaign_status_put(self, campaign_id: str, campaign_status: str) -> CampaignSnapshot:
        """genesys' older way, as a compare-and-set: read the campaign, PUT it back whole with its
        `version` and the wanted `campaignStatus`.

        Never re-sent. A 409 (a stale `version`: the campaign changed between the read and the PUT,
        or Genesys' eventual consistency answered an older read) or a 400 invalid transition changed
        nothing: the campaign is read again and the `PlatformConflict` carries it as `current`, so
        the caller decides again on the fresh state (fsm/dispatch.py does).
        """
        if self._profile is not Profile.GENESYS:
            raise ValueError("set_campaign_status_put exists only in the genesys profile")
        if campaign_status not in ("on", "off"):
            raise ValueError(f"campaign_status must be 'on' or 'off', got {campaign_status!r}")
        path = _campaign_path(campaign_id)
        current = await self._get(path, key=campaign_id, priority=True)
        if "version" not in current:
            raise PlatformError(f"campaign {campaign_id!r} has no 'version'; the PUT needs one")
        wanted = {**current, "campaignStatus": campaign_status}
        resp, sent_at = await self._send_once("PUT", path, wanted, key=campaign_id)
        if not resp.is_success:
            try:
                self._raise_for(resp, f"PUT {path}", sent_at=sent_at)
            except PlatformConflict as conflict:
                fresh = await self.get_campaign(campaign_id, priority=True)
                raise PlatformConflict(str(conflict), status=conflict.status, sent_at=sent_at,
                                       current=fresh, stale=conflict.status == 409) from None
        updated = json_object(resp, f"PUT {path}")
        return self._translate(campaign_from_payload, updated, f"campaign {campaign_id!r}")


def _segment(value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"an id must be a non-empty string, got {value!r}")
    return quote(value, safe="")


def _campaign_path(campaign_id: str) -> str:
    return f"{_CAMPAIGNS}/{_segment(campaign_id)}"
