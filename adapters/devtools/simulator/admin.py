"""The admin API: the test's hand on the simulated platform. No auth; never recorded as traffic.

==========================================  ==============================================================
endpoint                                    body (JSON) -> answer
==========================================  ==============================================================
GET  /admin/state                           -> profile, simTime, campaigns, contactLists, dialers, channels
GET  /admin/faults                          -> the fault settings (camelCase, see faults.FaultConfig)
POST /admin/faults                          partial settings, e.g. {"stallProbability": 0.5} -> settings
POST /admin/campaigns/{id}/state            {"state"?, "errors"?, "activeCalls"?, "campaignStatus"?}
                                            force a state (manual reset out of FAILED), errors, load,
                                            or a raw genesys campaignStatus -> the campaign
POST /admin/campaigns/{id}/transition       {"outcome": "normal"|"stall"|"fail", "durationSeconds"?,
                                            "errors"?: [{"code","message"}]} -> {"appliedTo":
                                            "current"|"next"}: the transition in flight, else the next
POST /admin/campaigns/{id}/release          finish a stalled or held transition now -> {"released": bool}
POST /admin/campaigns/{id}/force-off        genesys: the platform forces it off at once (`forced_off`)
                                            -> the campaign
POST /admin/contactlists/{id}               {"state"?: ACTIVE|IMPORTING|LOCKED, "importStatus"?:
                                            COMPLETED|IN_PROGRESS|FAILED, "releaseAfterSeconds"?}
POST /admin/dialers/{id}                    {"licensedCapacity": n}
POST /admin/notifications/drop              {"count": n, "topic"?: t}: drop the next n notifications
POST /admin/notifications/close             {"channelId"?, "announce": true, "graceSeconds"?, "code"?}:
                                            socket_closing then close (announce) or close at once
GET  /admin/notifications                   -> the notification log (delivered / dropped / no_socket)
POST /admin/notifications/reject            {"topics": [pattern, ...]}: subscriptions to matching topics
                                            (exact, or a prefix ending in `*`) are Rejected from now on
                                            (replaces the list; [] permits all) -> {"rejected": [...]}
POST /admin/channels/{id}/expire            the channel's lifetime ends now
POST /admin/tokens/revoke                   every issued token becomes invalid (401 next)
GET  /admin/traffic                         -> {"summary", "requests", "inFlight"}
DELETE /admin/traffic                       forget the traffic recorded so far
POST /admin/clock/advance                   {"seconds": s}: only with a manual clock
==========================================  ==============================================================

Simulated seconds everywhere. Bad input is a 400 naming the field, an unknown id a 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from fsm.testing import FakeClock
from schemas.types import CampaignState

from .api import error_response, json_response
from .channels import ChannelError
from .engine import EngineError, UnknownCampaign, UnknownContactList
from .faults import TransitionOverride
from .profiles import contact_list_payload
from .tenant import ListImportStatus, ListState

if TYPE_CHECKING:
    from .app import Simulator

__all__ = ["admin_routes"]


class _BadInput(Exception):
    pass


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _BadInput("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _BadInput("the body must be a JSON object")
    return data


def _number(data: dict[str, Any], key: str, *, minimum: float = 0.0, optional: bool = True) -> float | None:
    value = data.get(key)
    if value is None:
        if optional:
            return None
        raise _BadInput(f"{key} is required")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise _BadInput(f"{key} must be a number >= {minimum:g}, got {value!r}")
    return float(value)


def _errors(data: dict[str, Any]) -> list[dict[str, str]] | None:
    value = data.get("errors")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(e, dict) and isinstance(e.get("code"), str) for e in value):
        raise _BadInput('errors must be a list of {"code": str, "message": str}')
    return [{"code": e["code"], "message": str(e.get("message", ""))} for e in value]


def _choice(data: dict[str, Any], key: str, options: tuple[str, ...]) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if value not in options:
        raise _BadInput(f"{key} must be one of {', '.join(options)}, got {value!r}")
    return cast(str, value)


def admin_routes(sim: Simulator) -> list[BaseRoute]:
    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                result: Response = await handler(request)
                return result
            except _BadInput as exc:
                return error_response(400, "bad.request", str(exc))
            except ValueError as exc:
                return error_response(400, "bad.request", str(exc))
            except (UnknownCampaign, UnknownContactList) as exc:
                return error_response(404, "not.found", str(exc))
            except ChannelError as exc:
                return error_response(exc.status, exc.code, str(exc))
            except EngineError as exc:
                return error_response(409, "conflict", str(exc))
        return endpoint

    async def state(request: Request) -> Response:
        return json_response(sim.snapshot())

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            sim.faults.config.update(await _body(request))
        return json_response(sim.faults.config.to_json())

    async def campaign_state(request: Request) -> Response:
        data = await _body(request)
        raw_state = _choice(data, "state", tuple(s.value for s in CampaignState))
        calls = _number(data, "activeCalls")
        status = data.get("campaignStatus")
        if status is not None and not isinstance(status, str):
            raise _BadInput("campaignStatus must be a string")
        campaign = sim.engine.force_state(
            request.path_params["campaign_id"], CampaignState(raw_state) if raw_state else None,
            errors=_errors(data), active_calls=None if calls is None else int(calls), status_override=status)
        return json_response(sim.campaign_body(campaign))

    async def transition(request: Request) -> Response:
        data = await _body(request)
        outcome = _choice(data, "outcome", ("normal", "stall", "fail")) or "normal"
        errors = _errors(data) or []
        override = TransitionOverride(outcome, _number(data, "durationSeconds"), tuple(errors))  # type: ignore[arg-type]
        current = sim.engine.override(request.path_params["campaign_id"], override)
        return json_response({"appliedTo": "current" if current else "next"})

    async def release(request: Request) -> Response:
        return json_response({"released": sim.engine.release(request.path_params["campaign_id"])})

    async def force_off(request: Request) -> Response:
        return json_response(sim.campaign_body(sim.engine.force_off(request.path_params["campaign_id"])))

    async def contact_list(request: Request) -> Response:
        data = await _body(request)
        list_state = _choice(data, "state", ("ACTIVE", "IMPORTING", "LOCKED"))
        import_status = _choice(data, "importStatus", ("COMPLETED", "IN_PROGRESS", "FAILED"))
        updated = sim.engine.set_contact_list(
            request.path_params["list_id"], state=cast(ListState | None, list_state),
            import_status=cast(ListImportStatus | None, import_status),
            release_after=_number(data, "releaseAfterSeconds"))
        return json_response(contact_list_payload(sim.config.profile, updated))

    async def dialer(request: Request) -> Response:
        dialer_id = request.path_params["dialer_id"]
        found = sim.tenant.dialers.get(dialer_id)
        if found is None:
            return error_response(404, "not.found", f"dialer {dialer_id} not found")
        capacity = _number(await _body(request), "licensedCapacity", optional=False)
        found.licensed_capacity = int(cast(float, capacity))
        return json_response({"id": found.id, "licensedCapacity": found.licensed_capacity})

    async def drop(request: Request) -> Response:
        data = await _body(request)
        count = int(cast(float, _number(data, "count", optional=False)))
        topic = data.get("topic")
        if topic is not None and not isinstance(topic, str):
            raise _BadInput("topic must be a string")
        sim.faults.drop_next, sim.faults.drop_topic = count, topic
        return json_response({"dropNext": count, "topic": topic})

    async def close(request: Request) -> Response:
        data = await _body(request)
        channel_id = data.get("channelId")
        if channel_id is not None and not isinstance(channel_id, str):
            raise _BadInput("channelId must be a string")
        announce = data.get("announce", True)
        if not isinstance(announce, bool):
            raise _BadInput("announce must be true or false")
        code = data.get("code")
        if code is not None and (isinstance(code, bool) or not isinstance(code, int) or not 1000 <= code <= 4999):
            raise _BadInput("code must be a WebSocket close code (1000..4999)")
        if announce:
            closed = sim.hub.announce_close(channel_id, grace=_number(data, "graceSeconds"), code=code or 1001)
        else:
            closed = sim.hub.close_now(channel_id, code=code or 1011)
        return json_response({"sockets": closed})

    async def reject(request: Request) -> Response:
        topics = (await _body(request)).get("topics")
        if not isinstance(topics, list) or not all(isinstance(t, str) and t for t in topics):
            raise _BadInput("topics must be a list of non-empty strings")
        sim.hub.rejected = list(topics)
        return json_response({"rejected": sim.hub.rejected})

    async def notifications(request: Request) -> Response:
        return json_response([r.to_json() for r in sim.hub.log])

    async def expire(request: Request) -> Response:
        channel_id = request.path_params["channel_id"]
        if not sim.hub.expire(channel_id):
            return error_response(404, "not.found", f"channel {channel_id} not found")
        return json_response({"expired": channel_id})

    async def revoke(request: Request) -> Response:
        return json_response({"revoked": sim.tokens.revoke_all()})

    async def traffic(request: Request) -> Response:
        if request.method == "DELETE":
            sim.traffic.clear()
            return Response(status_code=204)
        return json_response({
            "summary": sim.traffic.summary(),
            "requests": [r.to_json() for r in sim.traffic.records],
            "inFlight": [s.to_json() for s in sim.traffic.in_flight_timeline],
        })

    async def advance(request: Request) -> Response:
        if not isinstance(sim.clock, FakeClock):
            return error_response(409, "conflict", "the clock is real-time; advance needs a manual clock")
        seconds = cast(float, _number(await _body(request), "seconds", optional=False))
        return json_response({"fired": sim.advance(seconds), "simTime": sim.clock.monotonic()})

    return [
        Route("/admin/state", guarded(state), methods=["GET"]),
        Route("/admin/faults", guarded(faults), methods=["GET", "POST"]),
        Route("/admin/campaigns/{campaign_id}/state", guarded(campaign_state), methods=["POST"]),
        Route("/admin/campaigns/{campaign_id}/transition", guarded(transition), methods=["POST"]),
        Route("/admin/campaigns/{campaign_id}/release", guarded(release), methods=["POST"]),
        Route("/admin/campaigns/{campaign_id}/force-off", guarded(force_off), methods=["POST"]),
        Route("/admin/contactlists/{list_id}", guarded(contact_list), methods=["POST"]),
        Route("/admin/dialers/{dialer_id}", guarded(dialer), methods=["POST"]),
        Route("/admin/notifications/drop", guarded(drop), methods=["POST"]),
        Route("/admin/notifications/close", guarded(close), methods=["POST"]),
        Route("/admin/notifications/reject", guarded(reject), methods=["POST"]),
        Route("/admin/notifications", guarded(notifications), methods=["GET"]),
        Route("/admin/channels/{channel_id}/expire", guarded(expire), methods=["POST"]),
        Route("/admin/tokens/revoke", guarded(revoke), methods=["POST"]),
        Route("/admin/traffic", guarded(traffic), methods=["GET", "DELETE"]),
        Route("/admin/clock/advance", guarded(advance), methods=["POST"]),
    ]
