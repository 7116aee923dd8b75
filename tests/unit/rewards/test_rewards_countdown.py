"""The `countdown` verifier: equations over given numbers, evaluated with a node whitelist."""

import pytest

from rewards.base import CORRECT, ERROR, INCORRECT
from rewards.countdown import verify_countdown

ROW = {"numbers": [3, 7, 25, 50], "target": 82}  # 50 + 25 + 7 = 82; (50 - 25) * 3 + 7 = 82


@pytest.mark.parametrize(
    "completion,expected,reason",
    [
        ("<answer>50 + 25 + 7</answer>", CORRECT, ""),
        ("<answer>(50 - 25) * 3 + 7</answer>", CORRECT, ""),
        ("thinking...\n<answer> 7 + 25 + 50 = 82 </answer>", CORRECT, ""),
        ("<answer>82 = 50 + 25 + 7</answer>", CORRECT, ""),  # the side with the numbers counts
        ("Let me try.\n(50 − 25) × 3 + 7", CORRECT, ""),  # last line; unicode operators
        (
            "<answer>50 + 25 + 7</answer> then <answer>50 + 25</answer>",
            INCORRECT,
            "misses the target",
        ),  # the last answer block counts: 75
        ("<answer>50 + 25 + 3</answer>", INCORRECT, "misses the target"),
        ("<answer>50 + 25 + 7 + 7 - 7</answer>", INCORRECT, "uses numbers not given"),  # 7 twice
        ("<answer>82</answer>", INCORRECT, "uses numbers not given"),
        ("<answer>50 + 32</answer>", INCORRECT, "uses numbers not given"),
        ("<answer>50 ** 1 + 25 + 7</answer>", INCORRECT, "no valid expression"),  # no powers
        ("<answer>__import__('os').system('true')</answer>", INCORRECT, "no valid expression"),
        ("<answer>(lambda: 82)()</answer>", INCORRECT, "no valid expression"),
        ("<answer>50 + 25 + 7.0</answer>", INCORRECT, "no valid expression"),  # integers only
        ("<answer>7 / (25 - 25)</answer>", INCORRECT, "no valid expression"),
        ("<answer>" + "(" * 5000 + "7" + ")" * 5000 + "</answer>", INCORRECT, "answer too long"),
        ("", INCORRECT, "no answer"),
    ],
)
def test_countdown_cases(completion, expected, reason):
    outcome = verify_countdown(completion, "82", ROW)
    assert (outcome.status, outcome.reason) == (expected, reason)


def test_division_is_exact_not_floating():
    # 25 * (7 / 3) * 3 = 175 exactly; in floats 7 / 3 is rounded and the product can miss.
    row = {"numbers": [25, 7, 3, 3], "target": 175}
    assert verify_countdown("<answer>25 * (7 / 3) * 3</answer>", "", row).status == CORRECT


def test_use_all_requires_every_number():
    row = dict(ROW, use_all=True)
    assert (
        verify_countdown("<answer>50 + 25 + 7</answer>", "82", row).reason
        == "does not use every number"
    )
    # (50 - 25) * 3 + 7 = 25 * 3 + 7 = 82 uses each of 3, 7, 25, 50 once.
    assert verify_countdown("<answer>(50 - 25) * 3 + 7</answer>", "82", row).status == CORRECT


def test_gold_is_the_target_when_the_row_has_none():
    assert verify_countdown("<answer>3 * 7</answer>", "21", {"numbers": [3, 7]}).status == CORRECT


def test_bad_rows_are_errors_not_wrong_answers():
    for row in ({"target": 5}, {"numbers": [1, "x"], "target": 5}, {"numbers": [1, 2]}):
        assert verify_countdown("<answer>1 + 2</answer>", "", row).status == ERROR
