"""The demo's steps on a profile that lacks an action: skipped with the reason, their situation not judged.

The genesys demo itself (tests/integration/test_demo.py) runs every step now that genesys pauses and
resumes; these tests keep the skipping honest for a profile (or a client) without some action.
"""

from __future__ import annotations

from typing import Any

from adapters.devtools.demo import SITUATIONS, STEPS, check_situations
from adapters.devtools.demo.steps import not_applicable
from schemas.types import Action

_ALL = frozenset({Action.START, Action.STOP, Action.PAUSE, Action.RESUME})
_START_STOP = frozenset({Action.START, Action.STOP})


def _step(key: str) -> Any:
    return next(s for s in STEPS if s.key == key)


def test_a_step_needing_an_action_the_client_lacks_says_which_and_what_is_supported() -> None:
    reason = not_applicable(_step("pause-resume"), "genesys", _START_STOP)
    assert reason == "the genesys profile has no pause or resume action (supported: start, stop)"
    assert not_applicable(_step("pause-resume"), "genesys", _ALL) is None
    assert not_applicable(_step("pause-resume"), "guide", _ALL - {Action.RESUME}) == (
        "the guide profile has no resume action (supported: pause, start, stop)")


def test_steps_that_send_only_starts_and_stops_apply_everywhere() -> None:
    for step in STEPS:
        if step.key != "pause-resume":
            assert not_applicable(step, "genesys", _START_STOP) is None, step.key


def test_a_situation_not_applicable_is_reported_with_its_reason_and_not_judged() -> None:
    situations = check_situations([], [], [], not_applicable={"pause-resume": "no pause here"})
    assert [s.key for s in situations] == [key for key, _ in SITUATIONS]
    skipped = [s for s in situations if not s.applies]
    assert [(s.key, s.ok, s.detail) for s in skipped] == [("pause-resume", True, "not applicable: no pause here")]
    # Every other situation is still judged from the (here: empty) records, so none is seen.
    assert not any(s.ok for s in situations if s.applies)
    assert all(s.applies for s in check_situations([], [], []))
