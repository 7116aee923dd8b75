"""The full real-data sweep: every MATH-500, Minerva and GSM8K reference solution against its
own gold answer (through math-verify, no exact-text shortcut) and against the next row's
different gold answer. 1-2 minutes on 2 cores; the unit tier runs fixed strides."""

import sys
from pathlib import Path

import pytest

# Same checks, exception lists and pool fixture as the unit-tier sample.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "rewards"))
from test_rewards_real_data import SETS, check_negative, check_positive, pool  # noqa: E402, F401

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("name", SETS)
def test_reference_answers_pass_math_verify_every_row(pool, name):  # noqa: F811
    check_positive(pool, name, "math_without_shortcut", 1)


@pytest.mark.parametrize("name", SETS)
def test_solutions_reject_the_next_gold_answer_every_row(pool, name):  # noqa: F811
    check_negative(pool, name, 1)
