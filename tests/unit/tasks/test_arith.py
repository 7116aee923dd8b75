"""The built-in arith task: levels, exact values, disjoint deterministic splits, demonstrations."""

import random

import pytest

from rewards import get_verifier
from rlvr.errors import ConfigError
from rlvr.tasks.arith import (
    DemoSampler,
    Level,
    allocate,
    evaluate,
    is_heldout,
    make_split,
    parse_level,
    perturb,
)


def test_parse_level():
    assert parse_level("2:+:2") == Level(2, "+", 2)
    assert parse_level("3:+-*:4").space_size == 1000**4 * 3**3
    assert parse_level("1:+:2").space_size == 100
    for bad in ["2:+", "x:+:2", "2:/:2", "2:++:2", "0:+:2", "2:+:1", "7:+:2"]:
        with pytest.raises(ValueError, match="DIGITS:OPERATORS:OPERANDS"):
            parse_level(bad)


def test_evaluate_precedence_by_hand():
    assert evaluate("12+34") == 46
    assert evaluate("5-7") == -2
    assert evaluate("2*3+4") == 10  # 6 + 4
    assert evaluate("10-2*3") == 4  # 10 - 6
    assert evaluate("2*3*4-1") == 23  # 24 - 1
    assert evaluate("9-3-2") == 4  # left to right
    assert evaluate("0*999+7") == 7


def test_allocate_largest_remainder():
    # 10 * (1/3, 2/3) = (3.33, 6.67) -> floors (3, 6), one left for the larger remainder
    assert allocate({"a": 1.0, "b": 2.0}, 10) == {"a": 3, "b": 7}
    assert allocate({"a": 1.0, "b": 1.0, "c": 1.0}, 2) == {"a": 1, "b": 1, "c": 0}


def test_splits_are_disjoint_deterministic_and_sized():
    mix = {"1:+:2": 1.0, "2:+:2": 8.0, "3:+-:2": 1.0}
    train = make_split(mix, 500, heldout=False, fraction=0.1, seed=0)
    held = make_split(mix, 50, heldout=True, fraction=0.1, seed=0)
    assert len(train) == 500 and len(held) == 50
    assert len({r["prompt"] for r in train}) == 500
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}
    assert make_split(mix, 500, heldout=False, fraction=0.1, seed=0) == train
    assert make_split(mix, 500, heldout=False, fraction=0.1, seed=1) != train
    counts = {lv: sum(r["level"] == lv for r in train) for lv in mix}
    assert counts == {"1:+:2": 50, "2:+:2": 400, "3:+-:2": 50}
    row = next(r for r in held if r["level"] == "3:+-:2")
    assert set(row) == {"prompt", "answer", "verifier", "level"} and row["verifier"] == "arith"
    assert row["prompt"].endswith("=") and int(row["answer"]) == evaluate(row["prompt"][:-1])
    # a problem's side never depends on the seed or the mix
    assert all(is_heldout(r["prompt"][:-1], 0.1) for r in held)


def test_too_small_level_is_a_clear_error():
    with pytest.raises(
        ConfigError, match=r"level 1:\+:2 has only \d+ held-out problems, 50 requested"
    ):
        make_split({"1:+:2": 1.0}, 50, heldout=True, fraction=0.1, seed=0)


def test_demonstrations_avoid_heldout_and_noise_shifts_one_digit():
    sampler = DemoSampler({"2:+:2": 1.0}, 0.1, noise=0.5, seed=0)
    pairs = [sampler.sample() for _ in range(2000)]
    assert not any(is_heldout(p[:-1], 0.1) for p, _ in pairs)
    wrong = [(p, a) for p, a in pairs if int(a) != evaluate(p[:-1])]
    assert 0.45 < len(wrong) / len(pairs) < 0.55
    for p, a in wrong:
        truth = str(evaluate(p[:-1]))
        assert len(a) == len(truth) and not (len(a) > 1 and a[0] == "0")
        diffs = [(x, y) for x, y in zip(a, truth) if x != y]
        assert len(diffs) == 1 and (int(diffs[0][0]) - int(diffs[0][1])) % 10 in (1, 9)


def test_perturb_keeps_sign_and_length():
    rng = random.Random(0)
    for answer in ["-5", "10", "907", "-123"]:
        for _ in range(50):
            out = perturb(answer, rng)
            assert (
                len(out) == len(answer)
                and out != answer
                and out.startswith("-") == answer.startswith("-")
            )


def test_arith_verifier_is_exact():
    verify = get_verifier("arith")
    assert verify("46", "46", {}).status == "correct"
    assert verify(" 46\n", "46", {}).score == 1.0
    for wrong in ["046", "46.0", "47", "", "4 6"]:
        out = verify(wrong, "46", {})
        assert out.status == "incorrect" and out.score == 0.0
