"""The platform's public API, in the profile the simulator serves (see WIRE.md / docs/platform-profiles.md).

Every request passes the same gate, in order: bearer token (401), then the profile's request limit
(429; see ratelimit.py: the guide counts outbound GETs, 10 per second; genesys counts every request
of the OAuth client, 300 per minute, and answers `inin-ratelimit-*` on every answer), then the
route. Every request is recorded in the traffic log with the campaign's and dialer's state as it
arrived. Engine refusals become the profile's errors:

=============================  ====================================  =============================================
refusal                        guide                                 genesys
=============================  ====================================  =============================================
transition invalid from state  409 campaign.state.conflict           400 bad.request "Invalid transition from <ON>
                                                                     to <ON>" (Genesys' wording; the code is ours)
dialer overloaded (> limit)    409 campaign.state.conflict or 500    same
PUT with a stale version       (no PUT)                              409 conflict
over the request limit         429 too.many.requests                 429 too.many.requests.retry.after
active-campaign cap reached    400 outbound.campaign.active.limit.exceeded (both; the words are a guess)
=============================  ====================================  =============================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from schemas.types import TRANSITIONAL_STATES, Action

from .channels import ChannelError, websocket_endpoint
from .engine import (
    ActiveCampaignCapReached,
    DialerOverloaded,
    EngineError,
    InvalidTransition,
    UnknownCampaign,
    UnknownContactList,
)
from .lines import CAP_CODE, campaign_stats, line_distribution
from .profiles import campaign_errors, contact_list_payload, error_body, genesys_status
from .progress import RecycleTooSoon
from .traffic import RequestKind

if TYPE_CHECKING:
    from .app import Simulator

__all__ = ["api_routes", "error_response", "json_response"]

Handler = Callable[[Request], Awaitable[Response]]

_GUIDE_ACTIONS = {"start": Action.START, "stop": Action.STOP, "pause": Action.PAUSE, "resume": Action.RESUME}
_GENESYS_ACTIONS = {"start": Action.START, "stop": Action.STOP}
_GENESYS_TARGET = {"start": "on", "stop": "off"}  # the campaignStatus an action asks for


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(error_body(status, code, message), status, headers)


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def api_routes(sim: Simulator) -> list[BaseRoute]:
    """The routes of `sim`'s profile, plus the token endpoint and the notification channels."""
    api = _Api(sim)
    base = "/api/v2/outbound"
    routes: list[BaseRoute] = [
        Route("/oauth/token", api.token, methods=["POST"]),
        Route(f"{base}/campaigns", api.gate("read", api.list_campaigns), methods=["GET"]),
        Route(f"{base}/campaigns/{{campaign_id}}", api.gate("read", api.get_campaign), methods=["GET"]),
        Route(f"{base}/contactlists/{{list_id}}", api.gate("read", api.get_contact_list), methods=["GET"]),
        Route(f"{base}/campaigns/{{campaign_id}}/{{action}}", api.gate("command", api.post_action),
              methods=["POST"]),
        Route("/api/v2/notifications/channels", api.gate("notifications", api.create_channel), methods=["POST"]),
        Route("/api/v2/notifications/channels", api.gate("notifications", api.list_channels), methods=["GET"]),
        Route("/api/v2/notifications/channels/{channel_id}", api.gate("notifications", api.head_channel),
              methods=["HEAD"]),
        Route("/api/v2/notifications/channels/{channel_id}/subscriptions",
              api.gate("notifications", api.subscriptions), methods=["GET", "POST", "PUT", "DELETE"]),
        WebSocketRoute("/channels/{channel_id}", api.websocket),
    ]
    if sim.config.profile == "guide":
        routes += [
            Route(f"{base}/campaigns/{{campaign_id}}/errors", api.gate("read", api.get_errors), methods=["GET"]),
            Route(f"{base}/dialers/{{dialer_id}}/stats", api.gate("read", api.get_dialer_stats), methods=["GET"]),
        ]
    else:
        routes += [
            Route(f"{base}/campaigns/{{campaign_id}}", api.gate("command", api.put_campaign), methods=["PUT"]),
            Route(f"{base}/campaigns/{{campaign_id}}/diagnostics", api.gate("read", api.get_errors),
                  methods=["GET"]),
            Route(f"{base}/campaigns/{{campaign_id}}/stats", api.gate("read", api.get_campaign_stats),
                  methods=["GET"]),
            Route(f"{base}/campaigns/{{campaign_id}}/progress", api.gate("read", api.get_progress),
                  methods=["GET"]),
            Route(f"{base}/campaigns/{{campaign_id}}/progress", api.gate("command", api.delete_progress),
                  methods=["DELETE"]),
            Route(f"{base}/campaigns/{{campaign_id}}/linedistribution",
                  api.gate("read", api.get_line_distribution), methods=["GET"]),
        ]
    return routes


class _Api:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.profile = sim.config.profile

    # --- the gate ----------------------------------------------------------------------------------

    def gate(self, kind: RequestKind, handler: Handler) -> Handler:
        sim = self.sim

        async def endpoint(request: Request) -> Response:
            campaign_id = request.path_params.get("campaign_id")
            campaign = sim.tenant.campaigns.get(campaign_id) if campaign_id else None
            dialer_id = campaign.dialer_id if campaign else request.path_params.get("dialer_id")
            arrived = {
                "sim_time": sim.clock.monotonic(),
                "wall_time": sim.wall(),
                "campaign_state": campaign.state.value if campaign else None,
                "campaign_in_flight": bool(campaign and campaign.state in TRANSITIONAL_STATES),
                "dialer_in_flight": sim.engine.in_flight_on(dialer_id) if dialer_id else 0,
            }
            response = await self._serve(kind, handler, request)
            action = request.path_params.get("action") if kind == "command" else None
            if kind == "command" and request.method in ("PUT", "DELETE"):
                action = "put" if request.method == "PUT" else "recycle"
            sim.traffic.add(method=request.method, path=request.url.path, status=response.status_code, kind=kind,
                            campaign_id=campaign_id, dialer_id=dialer_id, action=action, **arrived)
            return response

        return endpoint

    async def _serve(self, kind: RequestKind, handler: Handler, request: Request) -> Response:
        sim = self.sim
        if not sim.tokens.valid(request.headers.get("authorization")):
            return error_response(401, "bad.credentials", "Invalid, missing or expired access token.")
        limit_headers: dict[str, str] = {}
        if kind == "read" or self.profile == "genesys":
            admission = sim.limiter.admit()
            limit_headers = admission.headers()
            if not admission.allowed:
                if self.profile == "guide":
                    return error_response(
                        429, "too.many.requests",
                        f"Rate limit exceeded: at most {admission.limit:g} outbound reads per second per tenant.",
                        limit_headers)
                return error_response(
                    429, "too.many.requests.retry.after",
                    f"Rate limit exceeded the maximum [{admission.limit:g}] requests within "
                    f"[{admission.window:g}] seconds. Retry the request in [{admission.retry_after}] seconds",
                    limit_headers)
        try:
            response = await handler(request)
        except _Refused as refused:
            response = refused.response
        except UnknownCampaign as exc:
            response = error_response(404, "not.found", str(exc))
        except UnknownContactList as exc:
            response = error_response(404, "not.found", str(exc))
        except InvalidTransition as exc:
            response = (error_response(409, "campaign.state.conflict", str(exc)) if self.profile == "guide"
                        else error_response(400, "bad.request", self._invalid_transition(request, exc)))
        except ActiveCampaignCapReached as exc:
            response = error_response(400, CAP_CODE, str(exc))
        except DialerOverloaded as exc:
            response = (error_response(409, "campaign.state.conflict", str(exc)) if exc.status == 409
                        else error_response(500, "internal.server.error", str(exc)))
        except EngineError as exc:
            response = error_response(409, "conflict", str(exc))
        except ChannelError as exc:
            response = error_response(exc.status, exc.code, str(exc))
        response.headers.update(limit_headers)
        return response

    def _invalid_transition(self, request: Request, exc: InvalidTransition) -> str:
        """Genesys' words for a refused status change: `Invalid transition from <COMPLETE> to <OFF>`."""
        campaign = self.sim.tenant.campaigns.get(request.path_params.get("campaign_id", ""))
        current = genesys_status(campaign) if campaign is not None else exc.state.value
        wanted = _GENESYS_TARGET.get(exc.action, exc.action)
        return f"Invalid transition from <{current.upper()}> to <{wanted.upper()}>"

    # --- auth --------------------------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        sim = self.sim
        arrived_sim, arrived_wall = sim.clock.monotonic(), sim.wall()
        # A urlencoded body parsed by hand: starlette's form parser needs python-multipart.
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        if not sim.tokens.credentials_match(request.headers.get("authorization")):
            response = json_response({"error": "invalid_client",
                                      "error_description": "client authentication failed"}, 401)
        elif form.get("grant_type") != ["client_credentials"]:
            response = json_response({"error": "unsupported_grant_type",
                                      "error_description": "only client_credentials is supported"}, 400)
        else:
            response = json_response({"access_token": sim.tokens.mint(), "token_type": "bearer",
                                      "expires_in": max(1, int(sim.tokens.ttl))})
        sim.traffic.add(method="POST", path=request.url.path, status=response.status_code, kind="auth",
                        sim_time=arrived_sim, wall_time=arrived_wall)
        return response

    # --- campaigns ---------------------------------------------------------------------------------

    def _campaign_body(self, campaign_id: str) -> dict[str, Any]:
        return self.sim.campaign_body(self.sim.engine.campaign(campaign_id))

    async def get_campaign(self, request: Request) -> Response:
        return json_response(self._campaign_body(request.path_params["campaign_id"]))

    async def list_campaigns(self, request: Request) -> Response:
        page_size = _int_param(request, "pageSize", 25, 1)
        page_number = _int_param(request, "pageNumber", 1, 1)
        page_size = min(page_size, self.sim.config.max_page_size)
        ids = list(self.sim.tenant.campaigns)
        # `id` filters, repeated (`id=a&id=b`, as the API documents an array) or joined with commas
        # (as the SDK's to_path_value sends a list): only those campaigns, unknown ids left out.
        wanted = {part for raw in request.query_params.getlist("id") for part in raw.split(",") if part}
        if wanted:
            ids = [cid for cid in ids if cid in wanted]
        chunk = ids[(page_number - 1) * page_size: page_number * page_size]
        total = len(ids)
        return json_response({
            "entities": [self._campaign_body(cid) for cid in chunk],
            "pageNumber": page_number, "pageSize": page_size, "total": total,
            "pageCount": (total + page_size - 1) // page_size,
        })

    async def post_action(self, request: Request) -> Response:
        campaign_id = request.path_params["campaign_id"]
        actions = _GUIDE_ACTIONS if self.profile == "guide" else _GENESYS_ACTIONS
        action = actions.get(request.path_params["action"])
        if action is None:
            return error_response(404, "not.found", f"no such operation: {request.url.path}")
        self.sim.engine.request(campaign_id, action)
        location = f"/api/v2/outbound/campaigns/{campaign_id}"
        if self.profile == "guide":
            return json_response({}, 202, {"Location": location})
        return Response(status_code=202, headers={"Location": location})

    async def put_campaign(self, request: Request) -> Response:
        """Genesys' older way: PUT the whole campaign with its `version` and the wanted `campaignStatus`."""
        sim = self.sim
        campaign = sim.engine.campaign(request.path_params["campaign_id"])
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return error_response(400, "bad.request", "the body is not valid JSON")
        if not isinstance(body, dict):
            return error_response(400, "bad.request", "the body must be a campaign object")
        version = body.get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            return error_response(400, "bad.request", "version is required and must be an integer")
        if version != campaign.version:
            return error_response(409, "conflict",
                                  f"campaign {campaign.id} was modified: version {version} is stale")
        wanted = body.get("campaignStatus")
        current = genesys_status(campaign)
        if isinstance(body.get("name"), str) and body["name"]:
            campaign.name = body["name"]
        if wanted is None or wanted == current:
            sim.engine.force_state(campaign.id)  # a plain update: version + 1, notified
        elif wanted == "on":
            sim.engine.request(campaign.id, Action.START)
        elif wanted == "off":
            sim.engine.request(campaign.id, Action.STOP)
        else:
            raise InvalidTransition(campaign.id, campaign.state, str(wanted))
        return json_response(self._campaign_body(campaign.id))

    async def get_progress(self, request: Request) -> Response:
        """genesys `CampaignProgress`: how far through its contact list the campaign is."""
        engine = self.sim.engine
        campaign = engine.campaign(request.path_params["campaign_id"])
        assert engine.progress is not None  # the genesys profile always keeps it
        contact_list = self.sim.tenant.contact_lists.get(campaign.contact_list_id)
        return json_response(engine.progress.payload(campaign, engine.list_size(campaign),
                                                     contact_list.name if contact_list else campaign.contact_list_id))

    async def delete_progress(self, request: Request) -> Response:
        """genesys recycle: the campaign's next record is the list's first. Nothing is turned on."""
        try:
            self.sim.engine.recycle(request.path_params["campaign_id"])
        except RecycleTooSoon as exc:
            return error_response(400, "bad.request", str(exc))
        return Response(status_code=204)

    async def get_errors(self, request: Request) -> Response:
        campaign = self.sim.engine.campaign(request.path_params["campaign_id"])
        return json_response(campaign_errors(self.profile, campaign))

    async def get_campaign_stats(self, request: Request) -> Response:
        campaign = self.sim.engine.campaign(request.path_params["campaign_id"])
        return json_response(campaign_stats(self.sim.tenant, campaign))

    async def get_line_distribution(self, request: Request) -> Response:
        campaign = self.sim.engine.campaign(request.path_params["campaign_id"])
        only_active = request.query_params.get("includeOnlyActiveCampaigns", "").lower() == "true"
        return json_response(line_distribution(self.sim.tenant, campaign, only_active=only_active))

    async def get_contact_list(self, request: Request) -> Response:
        contact_list = self.sim.engine.contact_list(request.path_params["list_id"])
        return json_response(contact_list_payload(self.profile, contact_list))

    async def get_dialer_stats(self, request: Request) -> Response:
        dialer_id = request.path_params["dialer_id"]
        dialer = self.sim.tenant.dialers.get(dialer_id)
        if dialer is None:
            return error_response(404, "not.found", f"dialer {dialer_id} not found")
        return json_response({"id": dialer.id, "activeCalls": self.sim.engine.dialer_calls(dialer.id),
                              "licensedCapacity": dialer.licensed_capacity})

    # --- notifications -----------------------------------------------------------------------------

    async def create_channel(self, request: Request) -> Response:
        scheme = "wss" if request.url.scheme == "https" else "ws"
        channel = self.sim.hub.create(f"{scheme}://{request.url.netloc}")
        return json_response(channel.to_json())

    async def list_channels(self, request: Request) -> Response:
        """The SDK's ChannelEntityListing: every channel of this OAuth client."""
        return json_response({"entities": [ch.to_json() for ch in self.sim.hub.channels.values()]})

    async def head_channel(self, request: Request) -> Response:
        """200 if the channel exists, 404 if not (no body either way, as HEAD)."""
        exists = self.sim.hub.get(request.path_params["channel_id"]) is not None
        if exists:
            self.sim.hub.channel(request.path_params["channel_id"])  # a check counts as a use
        return Response(status_code=200 if exists else 404)

    async def subscriptions(self, request: Request) -> Response:
        hub = self.sim.hub
        channel_id = request.path_params["channel_id"]
        if request.method in ("POST", "PUT"):
            topics = _topics(await request.body())
            ignore = request.query_params.get("ignoreErrors", "").lower() == "true"
            states = hub.subscribe(channel_id, topics, replace=request.method == "PUT", ignore_errors=ignore)
        elif request.method == "DELETE":
            hub.unsubscribe_all(channel_id)
            return Response(status_code=204)
        else:
            states = hub.topic_states(channel_id)
        return json_response({"entities": [t.to_json() for t in states]})

    async def websocket(self, websocket: WebSocket) -> None:
        await websocket_endpoint(websocket, self.sim.hub)


def _int_param(request: Request, name: str, default: int, minimum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _Refused(error_response(400, "bad.request", f"{name} must be an integer, got {raw!r}")) from None
    if value < minimum:
        raise _Refused(error_response(400, "bad.request", f"{name} must be >= {minimum}, got {value}"))
    return value


def _topics(raw: bytes) -> list[str]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Refused(error_response(400, "bad.request", "the body is not valid JSON")) from None
    if not isinstance(data, list) or not all(isinstance(t, dict) and isinstance(t.get("id"), str) for t in data):
        raise _Refused(error_response(400, "bad.request", 'expected a list of {"id": topic} objects'))
    return [t["id"] for t in data]
