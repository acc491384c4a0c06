"""The view model: `Snapshot`s of the service's model, its dialer gate and the simulated platform,
for the live view."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from adapters.settings import Settings
from schemas.commands import Command
from schemas.types import CampaignState

from ..tui import CampaignRow, DialerRow, Snapshot
from .feed import Feed
from .scenario import TRANSITIONAL
from .steps import Run

__all__ = ["Viewer", "result_text"]


class Viewer:
    """Builds `Snapshot`s from the service's model, its dialer gate and the simulated platform."""

    def __init__(self, run: Run, settings: Settings, feed: Feed, names: Mapping[str, str]) -> None:
        self._run = run
        self._settings = settings
        self._feed = feed
        self._names = names
        self._windows = settings.tolerance_windows()
        self._t0 = time.monotonic()
        self._sim0 = run.sim.clock.monotonic()
        self.step = "starting up"
        self.narration = "broker, simulator and service are starting"

    def snapshot(self) -> Snapshot:
        run, parts = self._run, self._run.service.parts
        now = run.service.clock.now()
        rows = []
        for sim_campaign in run.sim.tenant.campaigns.values():
            model = parts.orchestrator.campaigns.get(sim_campaign.id) if parts is not None else None
            state = str(model.state) if model is not None else "?"
            window = None
            if state in TRANSITIONAL and model is not None:
                window = self._windows.window(model.dialer_type, CampaignState(state))
            rows.append(CampaignRow(
                sim_campaign.id, self._names.get(sim_campaign.id, sim_campaign.name), sim_campaign.dialer_id,
                sim_campaign.dialer_type.value, state, now - model.entered_at if model is not None else 0.0,
                window, self._note(sim_campaign.id)))
        gate = {s.dialer_id: s for s in parts.orchestrator.gate.stats()} if parts is not None else {}
        dialers = []
        for dialer in run.sim.tenant.dialers.values():
            types = sorted({c.dialer_type.value for c in run.sim.tenant.campaigns_on_dialer(dialer.id)})
            stats = gate.get(dialer.id)
            dialers.append(DialerRow(
                dialer.id, "/".join(types), stats.in_flight if stats else 0,
                self._settings.dispatch.max_in_flight_per_dialer, stats.queued_high if stats else 0,
                stats.queued_standard if stats else 0, run.sim.engine.dialer_calls(dialer.id),
                dialer.licensed_capacity))
        sim_now = run.sim.clock.monotonic()
        reads = [r.sim_time for r in run.sim.traffic.records if r.kind == "read"]
        return Snapshot(
            speed=run.speed, sim_elapsed_s=sim_now - self._sim0, real_elapsed_s=time.monotonic() - self._t0,
            step=self.step, narration=self.narration, campaigns=tuple(rows), dialers=tuple(dialers),
            notifications_up=bool(parts is not None and parts.channels.up),
            reads_per_s=sum(1 for t in reads if t > sim_now - 1.0),
            reads_peak=run.sim.traffic.reads_per_second_peak(clock="sim"),
            read_limit=self._settings.platform.read_limit_per_s,
            commands=len(run.sent), results=len(run.observer.results), events=len(run.observer.events),
            stream=tuple(self._feed.lines),
        )

    def _note(self, campaign_id: str) -> str:
        result = self._run.observer.last_result.get(campaign_id)
        if result is None:
            return ""
        command = self._run.sent.get(str(result.get("commandId")))
        action = command.action.value if command is not None else "?"
        reason = f" {result['reason']}" if result.get("reason") else ""
        return f"{action} {result.get('outcome')}{reason}"


def result_text(sent: Mapping[str, Command]) -> Callable[[Mapping[str, Any]], str]:
    def describe(result: Mapping[str, Any]) -> str:
        command = sent.get(str(result.get("commandId")))
        action = command.action.value if command is not None else "?"
        reason = f" {result['reason']}" if result.get("reason") else ""
        return (f"{result.get('campaignId', '?'):<18} {action:<6} {result.get('outcome')}{reason}  "
                f"{result.get('message', '')}")
    return describe
