"""`campaign-fsm simulate`: argument parsing into a simulator, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.cli import build_parser, main
from adapters.cli.simulate import build_simulator
from adapters.clock import SystemClock
from schemas.types import CampaignState, DialerType

ROOT = Path(__file__).resolve().parents[2]


def test_flags_build_the_simulator_they_describe() -> None:
    args = build_parser().parse_args([
        "simulate", "--profile", "genesys", "--campaigns", "5", "--dialers", "2", "--dialer-types", "power,predictive",
        "--initial-state", "RUNNING", "--time-scale", "40", "--stall", "0.25", "--dialer-limit", "2",
        "--read-limit", "0", "--client-id", "me", "--client-secret", "hush", "--token-ttl", "30",
    ])
    sim = build_simulator(args)
    assert sim.config.profile == "genesys" and sim.config.client_id == "me" and sim.tokens.ttl == 30
    assert isinstance(sim.clock, SystemClock) and sim.clock.time_scale == 40
    assert len(sim.tenant.campaigns) == 5 and set(sim.tenant.dialers) == {"dialer-01", "dialer-02"}
    assert {c.dialer_type for c in sim.tenant.campaigns.values()} == {DialerType.POWER, DialerType.PREDICTIVE}
    assert {c.state for c in sim.tenant.campaigns.values()} == {CampaignState.RUNNING}
    faults = sim.faults.config
    assert (faults.stall_probability, faults.dialer_transition_limit, faults.read_limit_per_s) == (0.25, 2, 0.0)
    assert "hush" not in repr(sim.config)


def test_tenant_file_flag_loads_the_file() -> None:
    args = build_parser().parse_args(["simulate", "--tenant", str(ROOT / "examples" / "tenant.json")])
    assert len(build_simulator(args).tenant.campaigns) == 4


def test_bad_values_are_reported_without_a_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["simulate", "--dialer-types", "TURBO"]) == 2
    assert "--dialer-types: expected PREDICTIVE" in capsys.readouterr().err
    assert main(["simulate", "--tenant", str(tmp_path / "missing.json")]) == 2
    assert "cannot read tenant file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["simulate", "--fail", "1.5"])
    assert "expected a probability within 0..1, got '1.5'" in capsys.readouterr().err

