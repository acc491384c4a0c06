"""The simulated tenant: dialer instances, contact lists and campaigns, from a JSON file or generated.

Tenant file format (JSON, camelCase; unknown keys are refused so a typo is caught)::

    {
      "dialers": [
        {"id": "dialer-1", "licensedCapacity": 200}
      ],
      "contactLists": [
        {"id": "list-1", "name": "Retention", "state": "ACTIVE", "importStatus": "COMPLETED", "size": 5000}
      ],
      "campaigns": [
        {"id": "campaign-1", "name": "Q3 Retention", "dialerType": "PREDICTIVE", "dialerId": "dialer-1",
         "contactListId": "list-1", "state": "STOPPED", "activeCalls": 40}
      ]
    }

* `dialers[].licensedCapacity` (>= 0, default 100): reported by the guide's dialer stats endpoint; in
  genesys, the edge group's (or site's) lines. `maxLineUtilization` (0 < x <= 1, default 1.0): the
  share of them outbound may use (Genesys' Outbound Settings), for genesys' `/linedistribution`.
* `contactLists[].state`: ACTIVE | IMPORTING | LOCKED (default ACTIVE); `importStatus`: COMPLETED |
  IN_PROGRESS | FAILED (default COMPLETED); `size` default 1000.
* `campaigns[].dialerType`: PREDICTIVE | PROGRESSIVE | POWER; `state`: one of the seven states
  (default STOPPED; a transitional state finishes on its own after start-up); `activeCalls` (default 0)
  is the call load the campaign carries while dialing: it is reported while RUNNING, PAUSING and
  STOPPING (draining to zero) and sets how long a predictive drain takes. `name` defaults to the id,
  `rules` (object) to the guide's example dialer rules, `errors` to [].
* Every `dialerId` and `contactListId` must name an entry of the same file; ids are unique.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from schemas.types import CampaignState, DialerType

__all__ = [
    "ListImportStatus",
    "ListState",
    "SimCampaign",
    "SimContactList",
    "SimDialer",
    "Tenant",
    "TenantError",
    "generate_tenant",
    "load_tenant",
    "parse_tenant",
]

ListState = Literal["ACTIVE", "IMPORTING", "LOCKED"]
ListImportStatus = Literal["COMPLETED", "IN_PROGRESS", "FAILED"]


class TenantError(ValueError):
    """A tenant file or generator setting that cannot describe a tenant. The message names each problem."""


def _default_rules(dialer_type: DialerType) -> dict[str, Any]:
    if dialer_type is DialerType.PREDICTIVE:
        return {"dialerRules": {"abandonRate": 0.03, "maxAbandonRate": 0.05, "dialRatio": 10}}
    return {"dialerRules": {"dialRatio": 1}}


# --- runtime objects -----------------------------------------------------------------------------


@dataclass(slots=True)
class SimDialer:
    id: str
    licensed_capacity: int = 100
    max_line_utilization: float = 1.0


@dataclass(slots=True)
class SimContactList:
    """A contact list. It blocks campaigns while importing or locked (guide, edge case 1)."""

    id: str
    name: str = ""
    state: ListState = "ACTIVE"
    import_status: ListImportStatus = "COMPLETED"
    size: int = 1000
    version: int = 1

    @property
    def ready(self) -> bool:
        return self.state == "ACTIVE" and self.import_status == "COMPLETED"

    @property
    def blocking(self) -> bool:
        """Transient contention: holds STARTING and STOPPING campaigns until released."""
        return self.state in ("IMPORTING", "LOCKED") or self.import_status == "IN_PROGRESS"


@dataclass(slots=True)
class SimCampaign:
    """A campaign as the platform holds it. `status_override` forces a raw Genesys campaignStatus."""

    id: str
    name: str
    dialer_type: DialerType
    dialer_id: str
    contact_list_id: str
    state: CampaignState = CampaignState.STOPPED
    active_calls: int = 0
    rules: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    version: int = 1
    status_override: str | None = None
    # While STOPPED, Genesys' own reason when it names one: "complete" (the list ran out) or
    # "forced_off" (the platform forced it off); None is a plain `off`. Cleared when it starts again.
    halt: str | None = None

    @property
    def current_calls(self) -> int:
        """Calls live now: the configured load while dialing or draining, none when idle."""
        if self.state in (CampaignState.RUNNING, CampaignState.PAUSING, CampaignState.STOPPING):
            return self.active_calls
        return 0


@dataclass(slots=True)
class Tenant:
    dialers: dict[str, SimDialer] = field(default_factory=dict)
    contact_lists: dict[str, SimContactList] = field(default_factory=dict)
    campaigns: dict[str, SimCampaign] = field(default_factory=dict)

    def campaigns_on_dialer(self, dialer_id: str) -> list[SimCampaign]:
        return [c for c in self.campaigns.values() if c.dialer_id == dialer_id]

    def to_document(self) -> dict[str, Any]:
        """The tenant in the file format (round-trips through `parse_tenant`)."""
        return {
            "dialers": [{"id": d.id, "licensedCapacity": d.licensed_capacity,
                         "maxLineUtilization": d.max_line_utilization} for d in self.dialers.values()],
            "contactLists": [
                {"id": cl.id, "name": cl.name, "state": cl.state, "importStatus": cl.import_status,
                 "size": cl.size}
                for cl in self.contact_lists.values()
            ],
            "campaigns": [
                {"id": c.id, "name": c.name, "dialerType": c.dialer_type.value, "dialerId": c.dialer_id,
                 "contactListId": c.contact_list_id, "state": c.state.value, "activeCalls": c.active_calls,
                 "rules": c.rules, "errors": c.errors}
                for c in self.campaigns.values()
            ],
        }


# --- the file format -----------------------------------------------------------------------------


class _FileModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class _DialerDoc(_FileModel):
    id: str = Field(min_length=1)
    licensed_capacity: int = Field(default=100, ge=0)
    max_line_utilization: float = Field(default=1.0, gt=0, le=1)


class _ContactListDoc(_FileModel):
    id: str = Field(min_length=1)
    name: str | None = None
    state: ListState = "ACTIVE"
    import_status: ListImportStatus = "COMPLETED"
    size: int = Field(default=1000, ge=0)


class _ErrorDoc(_FileModel):
    code: str
    message: str = ""


class _CampaignDoc(_FileModel):
    id: str = Field(min_length=1)
    name: str | None = None
    dialer_type: DialerType
    dialer_id: str
    contact_list_id: str
    state: CampaignState = CampaignState.STOPPED
    active_calls: int = Field(default=0, ge=0)
    rules: dict[str, Any] | None = None
    errors: list[_ErrorDoc] = Field(default_factory=list)


class _TenantDoc(_FileModel):
    dialers: list[_DialerDoc] = Field(min_length=1)
    contact_lists: list[_ContactListDoc] = Field(default_factory=list)
    campaigns: list[_CampaignDoc] = Field(default_factory=list)


def parse_tenant(data: Any, *, source: str = "tenant") -> Tenant:
    """Build a tenant from the decoded JSON document, or raise TenantError naming every problem."""
    try:
        doc = _TenantDoc.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or '(document)'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise TenantError(f"{source}: " + "; ".join(problems)) from None
    problems = []
    tenant = Tenant()
    for d in doc.dialers:
        if d.id in tenant.dialers:
            problems.append(f"dialers: duplicate id {d.id!r}")
        tenant.dialers[d.id] = SimDialer(d.id, d.licensed_capacity, d.max_line_utilization)
    for cl in doc.contact_lists:
        if cl.id in tenant.contact_lists:
            problems.append(f"contactLists: duplicate id {cl.id!r}")
        tenant.contact_lists[cl.id] = SimContactList(cl.id, cl.name or cl.id, cl.state, cl.import_status, cl.size)
    for i, c in enumerate(doc.campaigns):
        if c.id in tenant.campaigns:
            problems.append(f"campaigns.{i}: duplicate id {c.id!r}")
        if c.dialer_id not in tenant.dialers:
            problems.append(f"campaigns.{i} ({c.id}): dialerId {c.dialer_id!r} is not in dialers")
        if c.contact_list_id not in tenant.contact_lists:
            problems.append(f"campaigns.{i} ({c.id}): contactListId {c.contact_list_id!r} is not in contactLists")
        tenant.campaigns[c.id] = SimCampaign(
            id=c.id, name=c.name or c.id, dialer_type=c.dialer_type, dialer_id=c.dialer_id,
            contact_list_id=c.contact_list_id, state=c.state, active_calls=c.active_calls,
            rules=c.rules if c.rules is not None else _default_rules(c.dialer_type),
            errors=[{"code": e.code, "message": e.message} for e in c.errors],
        )
    if problems:
        raise TenantError(f"{source}: " + "; ".join(problems))
    return tenant


def load_tenant(path: str | Path) -> Tenant:
    """Read a tenant file. A missing file, bad JSON or a bad field is a TenantError, never a traceback."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise TenantError(f"{p}: cannot read tenant file: {exc.strerror or exc}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise TenantError(f"{p}: not valid JSON: {exc}") from None
    return parse_tenant(data, source=str(p))


_TYPES = (DialerType.PREDICTIVE, DialerType.PROGRESSIVE, DialerType.POWER)


def generate_tenant(
    campaigns: int,
    dialers: int = 1,
    *,
    dialer_types: tuple[DialerType, ...] = _TYPES,
    state: CampaignState = CampaignState.STOPPED,
    licensed_capacity: int = 100,
    max_active_calls: int = 60,
    seed: int | None = 0,
) -> Tenant:
    """A tenant of `campaigns` campaigns spread round-robin over `dialers` dialers, one contact list each.

    Ids are stable (`campaign-0001`, `dialer-01`, `list-0001`); dialer types cycle through
    `dialer_types`; each campaign's `activeCalls` is drawn from 0..max_active_calls with `seed`.
    """
    if campaigns < 0:
        raise TenantError(f"--campaigns must be >= 0, got {campaigns}")
    if dialers < 1:
        raise TenantError(f"--dialers must be >= 1, got {dialers}")
    if not dialer_types:
        raise TenantError("at least one dialer type is needed")
    rng = random.Random(seed)
    tenant = Tenant()
    width = max(4, len(str(campaigns)))
    dialer_ids = [f"dialer-{i + 1:02d}" for i in range(dialers)]
    for did in dialer_ids:
        tenant.dialers[did] = SimDialer(did, licensed_capacity)
    for i in range(campaigns):
        cid = f"campaign-{i + 1:0{width}d}"
        lid = f"list-{i + 1:0{width}d}"
        dtype = dialer_types[i % len(dialer_types)]
        tenant.contact_lists[lid] = SimContactList(lid, f"Contacts {i + 1}")
        tenant.campaigns[cid] = SimCampaign(
            id=cid, name=f"Campaign {i + 1}", dialer_type=dtype, dialer_id=dialer_ids[i % dialers],
            contact_list_id=lid, state=state, active_calls=rng.randint(0, max_active_calls),
            rules=_default_rules(dtype),
        )
    return tenant
