"""Command ids over the real broker and service (issue 13, failures 2 and 3): a result's `commandId`
is the id exactly as sent, and the same id re-published in a new record is answered REFUSED
REPLAYED on the results topic (the docs promise it; a redelivery of the *same* record stays quiet).

Written against the unsigned service so the very same test runs on the old signing rule too (it
was checked there: see the commit that added it).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest

from adapters.devtools.brokers import BrokerHandle
from adapters.devtools.simulator.tenant import generate_tenant
from schemas.types import CampaignState
from tests.integration.harness import Run, e2e

pytestmark = pytest.mark.integration


def _posts(run: Run, campaign_id: str) -> list[str]:
    return [f"{r.action} {r.campaign_id}" for r in run.sim.traffic.records
            if r.kind == "command" and r.campaign_id == campaign_id]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _results(run: Run, command_id: str) -> list[tuple[str, str | None]]:
    return [(r["outcome"], r.get("reason")) for r in run.results if r["commandId"] == command_id]


async def test_ids_come_back_as_sent_and_a_re_sent_id_is_refused_replayed(
        broker: BrokerHandle, unique_name: Callable[[str], str]) -> None:
    tenant = generate_tenant(1, 1, state=CampaignState.STOPPED)
    async with e2e(broker, unique_name, tenant=tenant) as run:
        cid = "campaign-0001"
        upper = str(uuid.uuid4()).upper()
        # Written by hand, as a producer in another language would (milliseconds, upper-case id).
        start = orjson.dumps({"id": upper, "campaignId": cid, "action": "start", "priority": "HIGH",
                              "requestedBy": "ids-test", "issuedAt": _now()})
        await run.send_raw(cid, start)
        await run.until(lambda: ("COMPLETED", None) in _results(run, upper), timeout=60,
                        what="the start's results, under the id as sent")
        assert _results(run, upper) == [("ACCEPTED", None), ("COMPLETED", None)]
        assert not any(r["commandId"] == upper.lower() for r in run.results), "not lower-cased"

        # The same command again, in a new record: a re-send, not a redelivery.
        await run.send_raw(cid, start)
        await run.until(lambda: ("REFUSED", "REPLAYED") in _results(run, upper), timeout=30,
                        what="the re-sent id answered REFUSED REPLAYED")
        # The same UUID spelt in lower case is the same id.
        respelt = {**orjson.loads(start), "id": upper.lower(), "action": "stop", "issuedAt": _now()}
        await run.send_raw(cid, orjson.dumps(respelt))
        await run.until(lambda: ("REFUSED", "REPLAYED") in _results(run, upper.lower()), timeout=30,
                        what="the re-spelt id answered REFUSED REPLAYED")
        assert _posts(run, cid) == [f"start {cid}"], "neither re-send reached the platform"
        assert _results(run, upper) == [("ACCEPTED", None), ("COMPLETED", None), ("REFUSED", "REPLAYED")]
