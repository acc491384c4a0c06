"""The two platform profiles, translated into the core's value types (fsm/ports.py).

A profile is one dialect of the platform API. `guide` is the API as the design guide shows it: a
`state` field already in the seven states. `genesys` is the real Genesys Cloud API as its public SDK
models it: a `campaignStatus` string, a `dialingMode`, the dialer instance as the `edgeGroup`,
errors from `/diagnostics`, load from the campaign's `/stats`. Everything the core sees is
profile-free: `CampaignSnapshot`, `ContactListSnapshot`, `DialerLoad`, errors as `{code, message}`.

Load on genesys (there is no dialer object): the dialer key is the campaign's edge group or site, and
its load is read from `GET .../campaigns/{id}/linedistribution` (`line_distribution_load`): the calls
in use are `maxOutboundLineCount - availableOutboundLines`, the capacity `maxOutboundLineCount` (the
group's lines under Max Line Utilization) unless configuration overrides it. Where that route is
missing (SDK < 207 platforms), `/stats` `linesUtilization.totalAvailableOutboundLines` against the
configured capacity.

Genesys `campaignStatus` -> state (SDK model `Campaign.campaign_status`)::

    on               RUNNING    (Genesys has no "starting": a start shows "on" at once)
    off              STOPPED, or PAUSED after a pause of ours (Genesys' off is a pause: turned on
                     again, the campaign continues at its next record); our intent decides
    stopping         STOPPING, or PAUSING after a pause of ours; likewise
    complete         STOPPED    (the contact list ran out; halt contacts-exhausted)
    forced_off       STOPPED    (the platform forced it off; halt forced-off)
    forced_stopping  STOPPING   (likewise, draining)
    invalid          FAILED     (the campaign's configuration is broken)
    anything else    None       (unknown: recorded as `platform_status`, never fatal)

How each action is sent on Genesys (`GENESYS_TURN`, by the state the model leaves): start (STOPPED)
and resume (PAUSED) turn the campaign on, pause and stop (RUNNING) turn it off, a stop of a PAUSED
campaign sends nothing (it is off already: only our intent changes). A start with `recycle` first
resets the progress (`DELETE .../progress`), so it begins at the first record.

Genesys `dialingMode` -> dialer type: predictive, progressive and power map by name; `preview`
is agent-paced like progressive; anything else (agentless, external, a mode we have not met) is
treated as PREDICTIVE, the type with the longest tolerance windows, so an unknown mode is never
declared FAILED early (the guide's trap of uniform short timeouts).

Contact lists. guide: ready when `state` is ACTIVE and `importStatus` COMPLETED; IMPORTING,
LOCKED or an import IN_PROGRESS are transient locks. genesys: ready when `importStatus` is absent
or its state is neither IN_PROGRESS nor FAILED; IN_PROGRESS is a transient lock (Genesys shows a
locked list that way); FAILED is not ready and not transient.

Payloads parse tolerantly (schemas/platform.py); a payload that still does not fit raises
`ContractError` naming the bad field, never anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError

from fsm.ports import CampaignSnapshot, ContactListSnapshot, DialerLoad
from schemas.base import ContractError
from schemas.platform import (
    DialerStats,
    GenesysCampaign,
    GenesysCampaignDiagnostics,
    GenesysCampaignStats,
    GenesysContactList,
    GenesysLineDistribution,
    GuideCampaign,
    GuideCampaignErrors,
    GuideContactList,
    RestErrorDetail,
)
from schemas.types import Action, CampaignState, DialerType, Halt

__all__ = [
    "GENESYS_DIALING_MODES",
    "GENESYS_HALTS",
    "GENESYS_INTENT_DECIDES",
    "GENESYS_STATUS_STATES",
    "GENESYS_TURN",
    "SUPPORTED_ACTIONS",
    "SUPPORTS_RECYCLE",
    "UNKNOWN_DIALER_ID",
    "Profile",
    "campaign_from_payload",
    "contact_list_from_payload",
    "dialer_load_from_payload",
    "errors_from_payload",
    "genesys_state",
    "line_distribution_load",
]


class Profile(StrEnum):
    GUIDE = "guide"
    GENESYS = "genesys"


# Statuses that cannot tell a pause from a stop: the campaign's recorded intent reads them.
GENESYS_INTENT_DECIDES = frozenset({"off", "stopping"})
# Statuses that name the platform's own reason for not dialing.
GENESYS_HALTS: Mapping[str, Halt] = {
    "complete": Halt.CONTACTS_EXHAUSTED, "forced_off": Halt.FORCED_OFF, "forced_stopping": Halt.FORCED_OFF,
}
# (action, state the model leaves) -> the campaignStatus asked for (POST /start = on, /stop = off),
# or None: nothing to send. Only these pairs are legal commands (fsm/table.py).
GENESYS_TURN: Mapping[tuple[Action, CampaignState], str | None] = {
    (Action.START, CampaignState.STOPPED): "on",
    (Action.RESUME, CampaignState.PAUSED): "on",
    (Action.PAUSE, CampaignState.RUNNING): "off",
    (Action.STOP, CampaignState.RUNNING): "off",
    (Action.STOP, CampaignState.PAUSED): None,
}

GENESYS_STATUS_STATES: Mapping[str, CampaignState] = {
    "on": CampaignState.RUNNING,
    "off": CampaignState.STOPPED,
    "complete": CampaignState.STOPPED,
    "forced_off": CampaignState.STOPPED,
    "stopping": CampaignState.STOPPING,
    "forced_stopping": CampaignState.STOPPING,
    "invalid": CampaignState.FAILED,
}

GENESYS_DIALING_MODES: Mapping[str, DialerType] = {
    "predictive": DialerType.PREDICTIVE,
    "progressive": DialerType.PROGRESSIVE,
    "power": DialerType.POWER,
    "preview": DialerType.PROGRESSIVE,
}

# Genesys has no pause or resume route: a pause is a turn off (it keeps the position), a resume a
# turn on (it continues from it); our intent tells the two offs apart.
SUPPORTED_ACTIONS: Mapping[Profile, frozenset[Action]] = {
    Profile.GUIDE: frozenset({Action.START, Action.STOP, Action.PAUSE, Action.RESUME}),
    Profile.GENESYS: frozenset({Action.START, Action.STOP, Action.PAUSE, Action.RESUME}),
}
# Only Genesys keeps a campaign's progress through its contact list (`GET`/`DELETE .../progress`).
SUPPORTS_RECYCLE: Mapping[Profile, bool] = {Profile.GUIDE: False, Profile.GENESYS: True}

# A campaign whose payload names no dialer instance. All such campaigns share this one group, so
# the per-dialer concurrency limit still holds for them (conservatively) instead of not at all.
UNKNOWN_DIALER_ID = "(unknown-dialer)"

_GUIDE_READY_STATE = "ACTIVE"
_GUIDE_READY_IMPORT = "COMPLETED"
_GUIDE_TRANSIENT_STATES = frozenset({"IMPORTING", "LOCKED"})
_TRANSIENT_IMPORT = "IN_PROGRESS"
_FAILED_IMPORT = "FAILED"


def genesys_state(campaign_status: str) -> CampaignState | None:
    """The state a Genesys `campaignStatus` means, or None when we do not know the value."""
    return GENESYS_STATUS_STATES.get(campaign_status.strip().lower())


def _parse_model(model: type[BaseModel], payload: Any) -> Any:
    if not isinstance(payload, Mapping):
        raise ContractError(model.__name__, [{"field": "(message)", "message": "expected a JSON object",
                                             "type": "object_type"}])
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise ContractError.from_validation(model.__name__, exc) from None


def _rest_errors(items: list[RestErrorDetail]) -> tuple[dict[str, str], ...]:
    return tuple({"code": e.error, "message": e.details or ""} for e in items)


def campaign_from_payload(profile: Profile | str, payload: Any) -> CampaignSnapshot:
    """A campaign payload (GET .../campaigns/{id} or a notification body) as a `CampaignSnapshot`."""
    if Profile(profile) is Profile.GUIDE:
        g: GuideCampaign = _parse_model(GuideCampaign, payload)
        return CampaignSnapshot(
            id=g.id,
            state=g.state,
            platform_status=g.state.value,
            dialer_type=g.dialer_type,
            dialer_id=g.dialer_id or UNKNOWN_DIALER_ID,
            contact_list_id=g.contact_list_id,
            errors=tuple({"code": e.code, "message": e.message} for e in g.errors),
        )
    c: GenesysCampaign = _parse_model(GenesysCampaign, payload)
    mode = (c.dialing_mode or "").strip().lower()
    dialer = c.edge_group or c.site
    status = c.campaign_status.strip().lower()
    return CampaignSnapshot(
        id=c.id,
        state=genesys_state(c.campaign_status),
        intent_decides=status in GENESYS_INTENT_DECIDES,
        halt=GENESYS_HALTS.get(status),
        platform_status=c.campaign_status,
        dialer_type=GENESYS_DIALING_MODES.get(mode, DialerType.PREDICTIVE),
        dialer_id=dialer.id if dialer is not None else UNKNOWN_DIALER_ID,
        contact_list_id=c.contact_list.id if c.contact_list is not None else None,
        errors=_rest_errors(c.errors),
        version=c.version,
    )


def errors_from_payload(profile: Profile | str, payload: Any) -> list[dict[str, str]]:
    """guide GET .../errors or genesys GET .../diagnostics, as `[{code, message}]`."""
    if Profile(profile) is Profile.GUIDE:
        g: GuideCampaignErrors = _parse_model(GuideCampaignErrors, payload)
        return [{"code": e.code, "message": e.message} for e in g.errors]
    d: GenesysCampaignDiagnostics = _parse_model(GenesysCampaignDiagnostics, payload)
    return list(_rest_errors(d.campaign_errors))


def contact_list_from_payload(profile: Profile | str, payload: Any) -> ContactListSnapshot:
    """GET .../contactlists/{id} (or a contact-list notification body) as a `ContactListSnapshot`."""
    if Profile(profile) is Profile.GUIDE:
        g: GuideContactList = _parse_model(GuideContactList, payload)
        state, imp = g.state.strip().upper(), g.import_status.strip().upper()
        return ContactListSnapshot(
            id=g.id,
            ready=state == _GUIDE_READY_STATE and imp == _GUIDE_READY_IMPORT,
            locked=state in _GUIDE_TRANSIENT_STATES or imp == _TRANSIENT_IMPORT,
            detail=f"state={g.state} importStatus={g.import_status}",
        )
    c: GenesysContactList = _parse_model(GenesysContactList, payload)
    status = c.import_status
    import_state = (status.state or "").strip().upper() if status is not None else ""
    if status is None or not import_state:
        detail = "importStatus=none"
    else:
        detail = f"importStatus={status.state}"
        if status.percent_complete is not None:
            detail += f" percentComplete={status.percent_complete}"
        if status.failure_reason:
            detail += f" failureReason={status.failure_reason}"
    return ContactListSnapshot(
        id=c.id,
        ready=import_state not in (_TRANSIENT_IMPORT, _FAILED_IMPORT),
        locked=import_state == _TRANSIENT_IMPORT,
        detail=detail,
    )


def dialer_load_from_payload(
    profile: Profile | str, payload: Any, *, dialer_id: str, capacity: int | None = None
) -> DialerLoad:
    """guide GET .../dialers/{id}/stats, or genesys GET .../campaigns/{id}/stats plus configured capacity.

    A guide `licensedCapacity` of 0 is read as unknown: a zero capacity would defer every change.
    genesys: the lines in use are the configured capacity less `linesUtilization.totalAvailableOutboundLines`
    (the edge group's or site's); without both, the campaign's own `outstandingCalls`, a lower bound.
    """
    if Profile(profile) is Profile.GUIDE:
        s: DialerStats = _parse_model(DialerStats, payload)
        return DialerLoad(dialer_id=s.id, active_calls=s.active_calls, capacity=s.licensed_capacity or None)
    st: GenesysCampaignStats = _parse_model(GenesysCampaignStats, payload)
    lines = st.lines_utilization
    available = lines.total_available_outbound_lines if lines is not None else None
    if capacity and available is not None:
        return DialerLoad(dialer_id=dialer_id, active_calls=max(0, capacity - available), capacity=capacity)
    return DialerLoad(dialer_id=dialer_id, active_calls=max(0, st.outstanding_calls or 0), capacity=capacity)


def line_distribution_load(payload: Any, *, dialer_id: str, capacity: int | None = None) -> DialerLoad:
    """genesys GET .../campaigns/{id}/linedistribution as the load of the campaign's edge group or site.

    `capacity` (configuration) overrides `maxOutboundLineCount`; the lines in use always come from
    the platform. A distribution without both counts is unknown load: it never defers.
    """
    d: GenesysLineDistribution = _parse_model(GenesysLineDistribution, payload)
    most, available = d.max_outbound_line_count, d.available_outbound_lines
    if most is None or available is None:
        return DialerLoad(dialer_id=dialer_id, active_calls=0, capacity=None)
    return DialerLoad(dialer_id=dialer_id, active_calls=max(0, most - available),
                      capacity=capacity or (most if most > 0 else None))
