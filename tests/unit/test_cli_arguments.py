"""The subcommands' number arguments: one rule and one error text for all of them."""

from __future__ import annotations

import pytest

from adapters.cli import main


@pytest.mark.parametrize(("argv", "text"), [
    (["schedule", "plan.json", "--lead", "-1"], "argument --lead: expected a finite number >= 0, got '-1'"),
    (["simulate", "--stall-seconds", "-1"], "argument --stall-seconds: expected a finite number >= 0, got '-1'"),
    (["schedule", "plan.json", "--lead", "soon"], "argument --lead: expected a finite number >= 0, got 'soon'"),
    (["simulate", "--read-limit", "soon"], "argument --read-limit: expected a finite number >= 0, got 'soon'"),
    (["schedule", "plan.json", "--lead", "nan"], "argument --lead: expected a finite number >= 0, got 'nan'"),
    (["simulate", "--active-campaign-cap", "-2"],
     "argument --active-campaign-cap: expected a whole number >= 0, got '-2'"),
    (["simulate", "--active-campaign-cap", "1.5"],
     "argument --active-campaign-cap: expected a whole number >= 0, got '1.5'"),
    (["simulate", "--time-scale", "0"], "argument --time-scale: expected a finite number > 0, got '0'"),
    (["send", "start", "c-1", "--timeout", "0"], "argument --timeout: expected a finite number > 0, got '0'"),
    (["simulate", "--time-scale", "inf"], "argument --time-scale: expected a finite number > 0, got 'inf'"),
])
def test_a_bad_number_is_refused_in_the_same_words_everywhere(
        argv: list[str], text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert text in capsys.readouterr().err


def test_good_numbers_pass() -> None:
    from adapters.cli.arguments import count, non_negative, positive, probability

    assert (non_negative("0"), non_negative("2.5"), positive("0.1"), probability("1"), count("0")) == (
        0.0, 2.5, 0.1, 1.0, 0)
