"""PUT as compare-and-set, decided in the core (issue 14, item 7): a stale version (409) is judged
again on the fresh campaign the platform client reports, and sent once more only if still right;
an invalid transition (400) is resolved from the fresh campaign, never re-sent."""

from __future__ import annotations

from fsm.ports import PlatformConflict
from schemas.types import Action, CampaignState
from tests.fakes import FakeCampaign
from tests.unit.test_orchestrator import _world

S = CampaignState


async def test_a_stale_version_with_the_command_still_legal_is_sent_once_more() -> None:
    w = await _world([FakeCampaign("c1", S.STOPPED)])
    try:
        fresh = w.platform.snapshot(w.platform.campaigns["c1"])  # renamed meanwhile: still off
        w.platform.post_failure["c1"] = PlatformConflict("409 version", status=409, current=fresh, stale=True)
        command = await w.send("c1", Action.START)
        await w.clock.sleep(5)
        assert len(w.platform.posts("c1")) == 2, "decided again on the fresh campaign, then sent once more"
        assert w.orch.campaigns["c1"].current is S.STARTING
        await w.finish("c1", S.RUNNING, notify=False)
        await w.clock.sleep(60)
        assert w.sink.outcomes(command.id)[-1] == ("COMPLETED", None)
    finally:
        await w.orch.close()


async def test_a_stale_version_after_someone_else_moved_the_campaign_is_not_resent() -> None:
    w = await _world([FakeCampaign("c1", S.STOPPED)])
    try:
        original = w.platform.send_action

        async def someone_else_started_it(campaign_id: str, action: Action, **options: object) -> object:
            # Another tool started the campaign between our read and our PUT: the version moved.
            w.platform.campaigns[campaign_id].state = S.RUNNING
            fresh = w.platform.snapshot(w.platform.campaigns[campaign_id])
            w.platform.post_failure[campaign_id] = PlatformConflict("409", status=409, current=fresh, stale=True)
            return await original(campaign_id, action, **options)  # type: ignore[arg-type]

        w.platform.send_action = someone_else_started_it  # type: ignore[method-assign,assignment]
        command = await w.send("c1", Action.START)
        await w.clock.sleep(5)
        assert len(w.platform.posts("c1")) == 1, "the fresh state decides: never a blind re-send"
        assert w.orch.campaigns["c1"].current is S.RUNNING
        assert w.sink.outcomes(command.id)[-1][0] in ("REFUSED", "COMPLETED")
    finally:
        await w.orch.close()


async def test_stale_versions_without_end_fail_after_a_bounded_number_of_decisions() -> None:
    w = await _world([FakeCampaign("c1", S.STOPPED)])
    try:
        fresh = w.platform.snapshot(w.platform.campaigns["c1"])
        original = w.platform.send_action

        async def always_stale(campaign_id: str, action: Action, **options: object) -> object:
            w.platform.post_failure[campaign_id] = PlatformConflict("409", status=409, current=fresh, stale=True)
            return await original(campaign_id, action, **options)  # type: ignore[arg-type]

        w.platform.send_action = always_stale  # type: ignore[method-assign,assignment]
        command = await w.send("c1", Action.START)
        await w.clock.sleep(5)
        assert len(w.platform.posts("c1")) == 3
        assert w.sink.outcomes(command.id)[-1] == ("FAILED", "PLATFORM_CONFLICT")
        assert w.orch.campaigns["c1"].current is S.STOPPED
    finally:
        await w.orch.close()


async def test_an_invalid_transition_is_resolved_from_the_fresh_campaign_not_resent() -> None:
    w = await _world([FakeCampaign("c1", S.STOPPED)])
    try:
        fresh = w.platform.snapshot(w.platform.campaigns["c1"])
        w.platform.post_failure["c1"] = PlatformConflict("Invalid transition from <COMPLETE> to <ON>", status=400,
                                                         current=fresh)
        command = await w.send("c1", Action.START)
        await w.clock.sleep(5)
        assert len(w.platform.posts("c1")) == 1
        assert w.sink.outcomes(command.id)[-1] == ("FAILED", "PLATFORM_CONFLICT")
    finally:
        await w.orch.close()
