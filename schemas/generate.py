"""JSON Schema documents for every message, generated from the pydantic models into `docs/schemas/`.

One file per message. A test regenerates them in memory and fails if the committed files differ,
so the published contract cannot go stale.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel

from .commands import Command, CommandResult
from .events import CampaignStateChangedEvent
from .platform import (
    DialerStats,
    GenesysCampaign,
    GenesysCampaignDiagnostics,
    GenesysCampaignStats,
    GenesysContactList,
    GenesysLineDistribution,
    GuideCampaign,
    GuideCampaignErrors,
    GuideContactList,
    NotificationEnvelope,
)
from .state import CampaignStateRecord

__all__ = ["MESSAGES", "render_schemas", "write_schemas"]

# file stem -> model. Our own messages first, then the platform payloads we parse.
MESSAGES: dict[str, type[BaseModel]] = {
    "command": Command,
    "command-result": CommandResult,
    "campaign-state-changed": CampaignStateChangedEvent,
    "campaign-state": CampaignStateRecord,
    "platform-guide-campaign": GuideCampaign,
    "platform-guide-campaign-errors": GuideCampaignErrors,
    "platform-guide-contact-list": GuideContactList,
    "platform-guide-dialer-stats": DialerStats,
    "platform-genesys-campaign": GenesysCampaign,
    "platform-genesys-contact-list": GenesysContactList,
    "platform-genesys-campaign-diagnostics": GenesysCampaignDiagnostics,
    "platform-genesys-campaign-stats": GenesysCampaignStats,
    "platform-genesys-campaign-line-distribution": GenesysLineDistribution,
    "platform-notification": NotificationEnvelope,
}


def render_schemas() -> dict[str, bytes]:
    """File name -> JSON Schema bytes (draft 2020-12, wire names, stable key order)."""
    out = {}
    for stem, model in MESSAGES.items():
        schema = model.model_json_schema(by_alias=True, mode="validation")
        schema["$id"] = f"https://campaign-fsm.dev/schemas/{stem}.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[f"{stem}.json"] = orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    return out


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in render_schemas().items():
        path = directory / name
        path.write_bytes(content)
        written.append(path)
    return written
