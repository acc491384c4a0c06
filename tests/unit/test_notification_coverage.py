"""The core and what the notification channels cover (issue 14, item 6): a campaign whose topic the
platform rejected is polled while the channels are up; campaigns given away are unsubscribed."""

from __future__ import annotations

from fsm import CampaignMachine
from fsm.orchestrator import Orchestrator, OrchestratorConfig
from fsm.testing import FakeClock
from schemas.types import Action, CampaignState
from tests.fakes import FakeCampaign, FakeNotifications, FakePlatform, MemorySink
from tests.unit.test_orchestrator import World

S = CampaignState


async def _world(campaigns: list[FakeCampaign], notes: FakeNotifications) -> World:
    clock = FakeClock(auto_advance=True)
    platform = FakePlatform(clock, campaigns)
    sink = MemorySink()
    orch = Orchestrator(machine=CampaignMachine(), platform=platform, sink=sink, clock=clock,
                        notifications=notes, config=OrchestratorConfig(seed=7))
    await orch.start(())
    return World(orch, platform, sink, clock, notes)


def _polls(w: World, campaign_id: str, after: float) -> int:
    return sum(1 for t, call, ident in w.platform.calls
               if call == "GET campaign" and ident == campaign_id and t > after)


async def test_a_campaign_without_live_notifications_is_polled_while_the_channels_are_up() -> None:
    notes = FakeNotifications(up=True)
    notes.not_live.add("c2")  # its topic was answered Rejected
    w = await _world([FakeCampaign("c1", S.STOPPED), FakeCampaign("c2", S.STOPPED, contact_list_id="l2")], notes)
    try:
        await w.send("c1", Action.START)
        await w.send("c2", Action.START)
        await w.clock.sleep(1)
        posted = max(t for t, _, _ in w.platform.posts())
        await w.clock.sleep(40)
        assert _polls(w, "c2", posted) >= 4, "no notification will come for c2: backoff polling"
        assert _polls(w, "c1", posted) <= 1, "c1 is pushed: only the safety poll"
        await w.orch.on_notifications_state(False)
        await w.orch.on_notifications_state(True)
        before = _polls(w, "c2", posted)
        await w.clock.sleep(40)
        assert _polls(w, "c2", posted) - before >= 2, "coming back up does not put c2 on the safety poll"
    finally:
        await w.orch.close()


async def test_campaigns_given_away_are_unsubscribed_with_lists_no_one_kept_uses() -> None:
    notes = FakeNotifications(up=True)
    w = await _world([FakeCampaign("c1", S.STOPPED, contact_list_id="shared"),
                      FakeCampaign("c2", S.STOPPED, contact_list_id="shared"),
                      FakeCampaign("c3", S.STOPPED, contact_list_id="own")], notes)
    try:
        assert notes.campaign_topics == {"c1", "c2", "c3"} and notes.list_topics == {"shared", "own"}
        gone = await w.orch.release(lambda campaign_id: campaign_id == "c1")
        assert sorted(gone) == ["c2", "c3"]
        assert notes.campaign_topics == {"c1"}
        assert notes.list_topics == {"shared"}  # c1 still uses it
    finally:
        await w.orch.close()
