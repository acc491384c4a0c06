"""Contract: the public SDK PureCloudPlatformClientV2, pointed at the simulator in genesys profile.

The SDK is synchronous; it runs in a worker thread against the in-process server. It obtains its
token from the simulator's /oauth/token itself (`get_client_credentials_token`), then reads a
campaign and a contact list and must get typed objects with the fields the client relies on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.devtools.simulator import SimulatorConfig, parse_tenant, run_simulator
from adapters.devtools.simulator.engine import Timing

pytestmark = pytest.mark.integration

PureCloud = pytest.importorskip("PureCloudPlatformClientV2")

TENANT = {
    "dialers": [{"id": "edge-group-1", "licensedCapacity": 100}],
    "contactLists": [{"id": "list-ready", "name": "Ready list"},
                     {"id": "list-locked", "name": "Locked list", "state": "LOCKED"}],
    "campaigns": [
        {"id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "name": "Q3 Customer Retention", "dialerType": "PREDICTIVE",
         "dialerId": "edge-group-1", "contactListId": "list-ready", "state": "RUNNING", "activeCalls": 12},
        {"id": "progressive-1", "name": "Progressive", "dialerType": "PROGRESSIVE", "dialerId": "edge-group-1",
         "contactListId": "list-locked", "state": "STOPPED"},
    ],
}


def _read_with_sdk(url: str, client_id: str, client_secret: str) -> dict[str, Any]:
    api_client = PureCloud.ApiClient(host=url)
    api_client.get_client_credentials_token(client_id, client_secret)
    outbound = PureCloud.OutboundApi(api_client)
    return {
        "token": api_client.access_token,
        "running": outbound.get_outbound_campaign("a1b2c3d4-e5f6-7890-abcd-ef1234567890"),
        "stopped": outbound.get_outbound_campaign("progressive-1"),
        "ready": outbound.get_outbound_contactlist("list-ready"),
        "locked": outbound.get_outbound_contactlist("list-locked"),
    }


async def test_sdk_reads_typed_campaign_and_contact_list() -> None:
    config = SimulatorConfig(profile="genesys", client_id="sdk-client", client_secret="sdk-secret")
    async with run_simulator(parse_tenant(TENANT), config) as (url, sim):
        got = await asyncio.to_thread(_read_with_sdk, url, "sdk-client", "sdk-secret")
    assert got["token"] and sim.tokens.valid(f"Bearer {got['token']}")

    running = got["running"]
    assert isinstance(running, PureCloud.Campaign)
    assert running.id == "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
    assert running.name == "Q3 Customer Retention"
    assert running.campaign_status == "on"
    assert running.dialing_mode == "predictive"
    assert running.version == 1
    assert isinstance(running.contact_list, PureCloud.DomainEntityRef)
    assert running.contact_list.id == "list-ready" and running.contact_list.name == "Ready list"
    assert running.edge_group.id == "edge-group-1"
    assert running.self_uri == "/api/v2/outbound/campaigns/a1b2c3d4-e5f6-7890-abcd-ef1234567890"
    assert (got["stopped"].campaign_status, got["stopped"].dialing_mode) == ("off", "progressive")

    ready = got["ready"]
    assert isinstance(ready, PureCloud.ContactList)
    assert (ready.id, ready.name, ready.version, ready.size) == ("list-ready", "Ready list", 1, 1000)
    assert ready.import_status is None
    locked = got["locked"]
    assert isinstance(locked.import_status, PureCloud.ImportStatus)
    assert locked.import_status.state == "IN_PROGRESS"
    assert locked.import_status.percent_complete == 50

    reads = sim.traffic.select(kind="read")
    assert [r.status for r in reads] == [200, 200, 200, 200]
    assert sim.traffic.records[0].kind == "auth"


def _progress_with_sdk(url: str, client_id: str, client_secret: str, campaign_id: str) -> dict[str, Any]:
    api_client = PureCloud.ApiClient(host=url)
    api_client.get_client_credentials_token(client_id, client_secret)
    outbound = PureCloud.OutboundApi(api_client)
    before = outbound.get_outbound_campaign_progress(campaign_id)
    outbound.post_outbound_campaign_stop(campaign_id)  # our pause and our stop: Genesys' off
    recycled = outbound.delete_outbound_campaign_progress(campaign_id)
    after = outbound.get_outbound_campaign_progress(campaign_id)
    return {"before": before, "recycled": recycled, "after": after,
            "campaign": outbound.get_outbound_campaign(campaign_id)}


async def test_sdk_reads_progress_and_recycles() -> None:
    """Issue 14: GET .../progress deserialises into the SDK's CampaignProgress; the SDK's own
    delete_outbound_campaign_progress (recycle) and post_outbound_campaign_stop are served."""
    config = SimulatorConfig(profile="genesys", client_id="sdk-client", client_secret="sdk-secret",
                             timing=Timing(records_per_second=1000.0))
    campaign_id = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
    async with run_simulator(parse_tenant(TENANT), config, time_scale=1.0) as (url, sim):
        await asyncio.sleep(0.05)  # ~50 records dialled
        got = await asyncio.to_thread(_progress_with_sdk, url, "sdk-client", "sdk-secret", campaign_id)
        sim.force_off("progressive-1")
        forced = await asyncio.to_thread(_read_with_sdk, url, "sdk-client", "sdk-secret")
    before, after = got["before"], got["after"]
    assert isinstance(before, PureCloud.CampaignProgress) and isinstance(after, PureCloud.CampaignProgress)
    assert before.campaign.id == campaign_id and before.contact_list.id == "list-ready"
    assert before.total_number_of_contacts == 1000 and before.number_of_contacts_called > 0
    assert 0 <= before.percentage <= 100
    assert got["recycled"] is None
    assert after.number_of_contacts_called == 0, "recycled: back to record one"
    assert got["campaign"].campaign_status in ("stopping", "off")
    assert forced["stopped"].campaign_status == "forced_off"  # an allowed value of Campaign.campaign_status
    assert [r.status for r in sim.traffic.records if r.kind == "command"] == [202, 204]


# --- every route the genesys profile serves, in the SDK's model for it (issue 14, item 9) -----------

import functools  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import httpx  # noqa: E402
from starlette.routing import Route  # noqa: E402

from adapters.devtools.simulator import Simulator  # noqa: E402
from adapters.platform import NotificationChannels, PlatformClient  # noqa: E402
from schemas.types import Action, CampaignState  # noqa: E402


@dataclass(frozen=True)
class SdkMethod:
    """One method of the SDK's OutboundApi / NotificationsApi as it calls the platform."""

    name: str
    verb: str
    template: str  # e.g. /api/v2/outbound/campaigns/{campaignId}
    query: frozenset[str]  # the query parameter names it may send
    response_type: str | None

    def matches(self, verb: str, path: str) -> bool:
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(self.template)) + "$"
        return verb == self.verb and re.match(pattern, path) is not None


@functools.cache
def _sdk_methods() -> tuple[SdkMethod, ...]:
    """Every method of the two API classes, read from the SDK's own source: the path template, the
    verb, the query names and the response type it passes to `ApiClient.call_api`."""
    methods = []
    for api_class in (PureCloud.OutboundApi, PureCloud.NotificationsApi):
        source = inspect.getsource(inspect.getmodule(api_class))  # type: ignore[arg-type]
        for block in re.split(r"\n    def ", source)[1:]:
            name = block.split("(", 1)[0]
            call = re.search(r"call_api\(resource_path, '(\w+)'.*?response_type=('([^']+)'|None)", block, re.S)
            path = re.search(r"resource_path = '([^']+)'", block)
            if name.startswith("_") or call is None or path is None:
                continue
            methods.append(SdkMethod(name, call.group(1), path.group(1),
                                     frozenset(re.findall(r"query_params\['(\w+)'\]", block)), call.group(3)))
    return tuple(methods)


def _sdk_method(verb: str, path: str) -> SdkMethod | None:
    found = [m for m in _sdk_methods() if m.matches(verb, path)]
    # A literal segment beats a parameter (GET .../campaigns/progress is not .../campaigns/{id}).
    found.sort(key=lambda m: m.template.count("{"))
    return found[0] if found else None


def _strict(data: Any, klass: str, where: str) -> list[str]:
    """What in `data` the SDK's model `klass` would not hold: unknown keys, wrong types, enum values
    it does not know (the SDK turns those into "outdated_sdk_version" silently)."""
    if data is None:
        return []
    if klass.startswith("list["):
        if not isinstance(data, list):
            return [f"{where}: a list expected, got {type(data).__name__}"]
        return [p for i, item in enumerate(data) for p in _strict(item, klass[5:-1], f"{where}[{i}]")]
    if klass.startswith("dict("):
        inner = klass[5:-1].split(", ", 1)[1]
        return [p for k, v in data.items() for p in _strict(v, inner, f"{where}.{k}")]
    primitive = {"str": str, "int": int, "float": (int, float), "bool": bool, "datetime": str, "date": str,
                 "object": object}
    if klass in primitive:
        ok = isinstance(data, primitive[klass]) and not (klass in ("int", "float") and isinstance(data, bool))
        return [] if ok else [f"{where}: {klass} expected, got {data!r}"]
    model = getattr(PureCloud, klass)()
    if not isinstance(data, dict):
        return [f"{where}: a {klass} object expected, got {type(data).__name__}"]
    attributes = {json_name: attr for attr, json_name in model.attribute_map.items()}
    problems = []
    for key, value in data.items():
        attr = attributes.get(key)
        if attr is None:
            problems.append(f"{where}.{key}: not a field of the SDK's {klass}")
            continue
        kind = model.swagger_types[attr]
        problems += _strict(value, kind, f"{where}.{key}")
        if kind == "str" and isinstance(value, str):
            setattr(model, attr, value)  # the setter checks enum values
            if getattr(model, attr) == "outdated_sdk_version":
                problems.append(f"{where}.{key}: {value!r} is not a value the SDK's {klass} knows")
    return problems


class _SdkResponse:
    def __init__(self, body: bytes) -> None:
        self.data = body

    def getheader(self, name: str) -> str:
        return "application/json"


def _deserialised(body: bytes, klass: str) -> Any:
    """The SDK's own path: ApiClient.deserialize, as its API methods call it."""
    return PureCloud.ApiClient().deserialize(_SdkResponse(body), klass)


def _served_routes(sim: Simulator) -> list[tuple[str, str]]:
    out = []
    for route in sim.app.routes:
        if not isinstance(route, Route) or not route.path.startswith("/api/"):
            continue
        methods = set(route.methods or ())
        if "GET" in methods:
            methods.discard("HEAD")  # starlette's implicit HEAD of a GET route
        out += [(verb, route.path) for verb in sorted(methods)]
    return out


async def test_every_route_served_on_genesys_answers_in_the_sdks_model() -> None:
    config = SimulatorConfig(profile="genesys", client_id="sdk-client", client_secret="sdk-secret")
    tenant = parse_tenant(TENANT)
    async with run_simulator(tenant, config) as (url, sim), httpx.AsyncClient(base_url=url, timeout=10) as http:
        http.headers["Authorization"] = f"Bearer {sim.mint_token()}"
        # A channel subscribed to everything, read without a socket: the notification bodies.
        observer = sim.hub.create()
        sim.hub.subscribe(observer.id, [*(f"v2.outbound.campaigns.{c}" for c in sim.tenant.campaigns),
                                        "v2.outbound.contactlists.list-locked",
                                        "v2.outbound.contactlists.list-locked.importstatus"], replace=True)
        observed = sim.hub.attach(observer)
        channel = (await http.post("/api/v2/notifications/channels")).json()["id"]
        values = {"campaign_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "list_id": "list-locked",
                  "channel_id": channel}
        served = _served_routes(sim)
        checked: dict[tuple[str, str], str] = {}
        problems: list[str] = []
        for verb, template in served:
            path = template
            if "{action}" in template:  # the stopped campaign: start it, then stop it (at once: `on`)
                paths = [template.replace("{campaign_id}", "progressive-1").replace("{action}", a)
                         for a in ("start", "stop")]
            else:
                for name, value in values.items():
                    path = path.replace("{" + name + "}", value)
                paths = [path]
            for concrete in paths:
                method = _sdk_method(verb, concrete)
                if method is None:
                    problems.append(f"{verb} {template}: no method of the SDK's OutboundApi/NotificationsApi")
                    continue
                kwargs: dict[str, Any] = {}
                if verb in ("PUT", "POST") and method.template.endswith("/subscriptions"):
                    kwargs["json"] = [{"id": "v2.outbound.campaigns.progressive-1"}]
                elif verb == "PUT":
                    current = (await http.get(concrete)).json()
                    kwargs["json"] = {**current, "name": "Renamed"}
                response = await http.request(verb, concrete, **kwargs)
                if response.status_code >= 400:
                    problems.append(f"{verb} {concrete}: HTTP {response.status_code} {response.text[:200]}")
                    continue
                checked[(verb, template)] = f"{method.name} ({method.response_type})"
                if method.response_type is None:
                    continue
                assert _deserialised(response.content, method.response_type) is not None
                problems += _strict(response.json(), method.response_type, f"{verb} {concrete}")
        sim.set_contact_list("list-locked", state="IMPORTING", import_status="IN_PROGRESS")
        sim.set_contact_list("list-locked", state="ACTIVE", import_status="FAILED")
        kinds = {".importstatus": "ContactlistImportStatusImportStatus",
                 "v2.outbound.contactlists.": "DialerContactlistConfigChangeContactList",
                 "v2.outbound.campaigns.": "DialerCampaignConfigChangeCampaign"}
        seen: set[str] = set()
        while not observed.queue.empty():
            raw = observed.queue.get_nowait()
            if not isinstance(raw, str):
                continue
            message = json.loads(raw)
            topic = message["topicName"]
            klass = next((k for part, k in kinds.items() if part in topic), None)
            if klass is not None:
                seen.add(klass)
                problems += _strict(message["eventBody"], klass, f"notification {topic}")
    assert not problems, "\n".join(problems)
    assert set(checked) == set(served), f"not checked: {set(served) - set(checked)}"
    assert seen == set(kinds.values())


class _Recording(httpx.AsyncBaseTransport):
    """A real HTTP transport that notes every request: verb, path and query names."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[tuple[str, str, frozenset[str]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path,
                              frozenset(k for k, _ in request.url.params.multi_items())))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_every_request_our_client_makes_is_a_method_of_the_sdk() -> None:
    config = SimulatorConfig(profile="genesys", client_id="sdk-client", client_secret="sdk-secret")
    recording = _Recording()
    running, stopped = "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "progressive-1"
    async with run_simulator(parse_tenant(TENANT), config, time_scale=50.0) as (url, sim):
        client = PlatformClient(url, "sdk-client", "sdk-secret", profile="genesys", transport=recording)
        async with client:
            await client.list_campaigns()
            await client.get_campaign(running)
            await client.get_errors(running)
            await client.get_contact_list("list-ready")
            await client.get_dialer_load("edge-group-1", running)
            await client.send_action(stopped, Action.START)
            await client.send_action(stopped, Action.STOP)
            await client.set_campaign_status_put(running, "off")
            notes: list[object] = []

            async def listener(note: object) -> None:
                notes.append(note)

            channels = NotificationChannels(client, listener)
            async with channels:
                await channels.subscribe_campaigns([running])
                await channels.subscribe_contact_lists(["list-ready"])
                async with asyncio.timeout(10):
                    while not channels.up:  # noqa: ASYNC110 - the socket connects on its own
                        await asyncio.sleep(0.02)
                await channels.subscribe_campaigns([stopped])  # POST: added to the channel
                await channels.unsubscribe_campaigns([stopped])  # PUT: what the channel keeps
        assert sim.state_of(running) in (CampaignState.STOPPING, CampaignState.STOPPED)
    problems = []
    seen: set[str] = set()
    for verb, path, query in recording.requests:
        if (verb, path) == ("POST", "/oauth/token"):
            continue  # ApiClient.get_client_credentials_token, not an API method (checked above)
        method = _sdk_method(verb, path)
        if method is None:
            problems.append(f"{verb} {path}: no method of the SDK's OutboundApi/NotificationsApi")
        elif not query <= method.query:
            problems.append(f"{verb} {path}: query {sorted(query - method.query)} unknown to {method.name} "
                            f"(it knows {sorted(method.query)})")
        else:
            seen.add(method.name)
    assert not problems, "\n".join(problems)
    assert seen >= {"get_outbound_campaigns", "get_outbound_campaign", "get_outbound_campaign_diagnostics",
                    "get_outbound_contactlist", "get_outbound_campaign_linedistribution",
                        "post_outbound_campaign_start",
                    "post_outbound_campaign_stop", "put_outbound_campaign", "post_notifications_channels",
                    "put_notifications_channel_subscriptions", "post_notifications_channel_subscriptions"}, seen
