"""The demo's fixed facts: its tenant (twelve campaigns on three dialers), who its commands claim
to come from, the key that signs them and how long the stalled stop drains."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ..simulator.tenant import Tenant, parse_tenant

__all__ = ["DEMO_TENANT", "KEY_ID", "PRINCIPAL", "STALL_S", "TRANSITIONAL", "demo_tenant"]

PRINCIPAL = "demo:"  # requestedBy is "demo:<step key>": the topic alone says which step sent what
KEY_ID = "demo-ops"
STALL_S = 140.0  # past a uniform 60 s timeout, inside the predictive 180 s window

TRANSITIONAL = ("STARTING", "PAUSING", "STOPPING")


def _campaign(cid: str, name: str, kind: str, dialer: str, calls: int) -> dict[str, Any]:
    return {"id": cid, "name": name, "dialerType": kind, "dialerId": dialer, "contactListId": f"{cid}-list",
            "activeCalls": calls}


_CAMPAIGNS = [
    _campaign("uk-retention-q3", "UK Retention Q3", "PREDICTIVE", "dlr-pred-east", 40),
    _campaign("card-upsell", "Credit Card Upsell", "PREDICTIVE", "dlr-pred-east", 35),
    _campaign("broadband-winback", "Broadband Win-back", "PREDICTIVE", "dlr-pred-east", 30),
    _campaign("energy-renewals", "Energy Renewals", "PREDICTIVE", "dlr-pred-east", 25),
    _campaign("collections-30d", "Collections 30-60 days", "PROGRESSIVE", "dlr-prog-central", 30),
    _campaign("collections-60d", "Collections 60-90 days", "PROGRESSIVE", "dlr-prog-central", 20),
    _campaign("appt-reminders", "Appointment Reminders", "PROGRESSIVE", "dlr-prog-central", 12),
    _campaign("nps-survey", "NPS Survey", "PROGRESSIVE", "dlr-prog-central", 10),
    _campaign("web-leads", "Web Lead Follow-up", "POWER", "dlr-power-west", 20),
    _campaign("webinar-invites", "Webinar Invites", "POWER", "dlr-power-west", 15),
    _campaign("event-rsvp", "Event RSVP", "POWER", "dlr-power-west", 10),
    _campaign("reactivation", "Dormant Reactivation", "POWER", "dlr-power-west", 20),
]

DEMO_TENANT: Mapping[str, Any] = {
    "dialers": [
        {"id": "dlr-pred-east", "licensedCapacity": 300},
        {"id": "dlr-prog-central", "licensedCapacity": 100},
        {"id": "dlr-power-west", "licensedCapacity": 150},
    ],
    "contactLists": [{"id": c["contactListId"], "name": f"{c['name']} contacts", "size": 5000}
                     for c in _CAMPAIGNS],
    "campaigns": _CAMPAIGNS,
}


def demo_tenant() -> Tenant:
    """A fresh copy of the demo tenant (the simulator mutates it)."""
    return parse_tenant(orjson.loads(orjson.dumps(DEMO_TENANT)), source="demo tenant")
