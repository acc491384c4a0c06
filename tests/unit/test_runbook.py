"""docs/runbook.md: one section per trap and edge case of the guide, each naming what the operator
sees (metrics and codes that exist) and what to do. A renamed metric or reason code fails here."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from adapters.config_doc import config_rows
from adapters.platform import ClientStats
from schemas.types import Action, Anomaly, CampaignState, DialerType, Outcome, Priority, ReasonCode

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbook.md"

# The design guide's traps (sections 1-4) and edge cases, plus the service's own failure modes.
REQUIRED_SECTIONS = (
    "Start right after stop",
    "A 202 is not success",
    "Thundering herd and 429",
    "Predictive vs progressive tolerance windows",
    "Contact list locked (edge case 1)",
    "Dialer contention: 409 and 500 (edge case 2)",
    "Dialer capacity above 80 %",
    "FAILED and reset",
    "Notifications down",
    "Restart in the middle of a transition",
    "Broker unreachable",
)
# What each section must name, at least: the signal the operator actually gets for that situation.
MUST_MENTION = {
    "Start right after stop": {"TRANSITION_IN_FLIGHT"},
    "A 202 is not success": {"STARTING", "campaign_fsm_campaigns"},
    "Thundering herd and 429": {'kind="http_429"'},
    "Predictive vs progressive tolerance windows": {"TRANSITION_DELAYED", "TOLERANCE_EXCEEDED"},
    "Contact list locked (edge case 1)": {"CONTACT_LIST_NOT_READY", "DEFERRAL_EXPIRED"},
    "Dialer contention: 409 and 500 (edge case 2)": {"campaign_fsm_in_flight", "campaign_fsm_dialer_queue_depth",
                                                     "PLATFORM_CONFLICT", "PLATFORM_ERROR"},
    "Dialer capacity above 80 %": {"DIALER_OVER_CAPACITY", "HIGH"},
    "FAILED and reset": {"TRANSITION_FAILED", "ILLEGAL_TRANSITION", "campaign-fsm send reset"},
    "Notifications down": {"campaign_fsm_notifications_up", "poll"},
    "Restart in the middle of a transition": {"campaign_fsm_ready", "reconcile", 'kind="writes_sent"'},
    "Broker unreachable": {"campaign_fsm_outbox_depth"},
}
_CODES = {m.value for enum in (ReasonCode, Anomaly, Outcome, CampaignState, Priority, DialerType) for m in enum}
# Platform words that appear in backticks but are not our codes (contact-list states and statuses).
_PLATFORM_WORDS = {"ACTIVE", "IMPORTING", "LOCKED"}


def _sections() -> dict[str, str]:
    text = RUNBOOK.read_text()
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def _defined_metrics() -> set[str]:
    source = (ROOT / "adapters" / "service" / "metrics.py").read_text()
    return set(re.findall(r"[\"'](campaign_fsm_[a-z0-9_]+)[\"']", source))


def test_every_trap_and_edge_case_has_a_section() -> None:
    sections = _sections()
    missing = [s for s in REQUIRED_SECTIONS if s not in sections]
    assert not missing, f"docs/runbook.md lacks sections: {missing}"


@pytest.mark.parametrize("title", REQUIRED_SECTIONS)
def test_each_section_says_what_is_seen_and_what_to_do(title: str) -> None:
    body = _sections()[title]
    assert "**What you see.**" in body and "**What to do.**" in body, title
    seen = body.split("**What to do.**")[0]
    assert re.search(r"campaign_fsm_[a-z0-9_]+", seen), f"{title}: name the metric the operator watches"
    codes = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", seen)) & _CODES
    assert codes or "`cause`" in seen, f"{title}: name the events, results or codes the operator sees"
    for needle in MUST_MENTION[title]:
        assert needle in body, f"{title}: should mention {needle}"


def test_every_metric_named_exists() -> None:
    defined = _defined_metrics()
    assert len(defined) >= 8, "could not read the metric names from adapters/service/metrics.py"
    named = set(re.findall(r"campaign_fsm_[a-z0-9_]+", RUNBOOK.read_text()))
    assert named, "the runbook names no metric"
    assert named <= defined, f"the runbook names metrics the service does not export: {sorted(named - defined)}"
    assert defined <= named, f"metrics the runbook does not explain: {sorted(defined - named)}"


def test_every_request_kind_label_exists() -> None:
    kinds = {f.name for f in dataclasses.fields(ClientStats)}
    named = set(re.findall(r'kind="([a-z0-9_]+)"', RUNBOOK.read_text()))
    named |= set(re.findall(r"`([a-z0-9]+_[a-z0-9_]+)`", RUNBOOK.read_text())) & kinds
    assert named, "the runbook names no request kind"
    assert named <= kinds, f"unknown campaign_fsm_platform_requests kinds: {sorted(named - kinds)}"


def test_every_code_named_exists() -> None:
    named = {c for c in re.findall(r"`([A-Z][A-Z0-9_]{2,})`", RUNBOOK.read_text())
             if not c.startswith("CAMPAIGN_FSM_")}
    unknown = named - _CODES - _PLATFORM_WORDS
    assert not unknown, f"codes in the runbook that schemas/types.py does not define: {sorted(unknown)}"
    assert {"TRANSITION_IN_FLIGHT", "CONTACT_LIST_NOT_READY", "TRANSITION_DELAYED"} <= named


def test_every_action_and_setting_named_exists() -> None:
    text = RUNBOOK.read_text()
    for action in re.findall(r"campaign-fsm send ([a-z]+)", text):
        assert action in {a.value for a in Action}, action
    rows = {r.path for r in config_rows()}
    envs = {r.env for r in config_rows() if r.env}
    keys = re.findall(r"`((?:platform|kafka|dispatch|windows|auth|http)\.[a-z_.*]+)`", text)
    assert keys, "the runbook names no setting"
    for key in keys:
        assert key in rows or (key.endswith("*") and any(r.startswith(key.rstrip("*")) for r in rows)), \
            f"no setting {key}"
    for env in re.findall(r"CAMPAIGN_FSM_[A-Z0-9_]+", text):
        assert env in envs, f"no environment variable {env}"
