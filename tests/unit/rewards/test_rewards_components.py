"""Reward components (several weighted verifiers per row) and the built-in format verifiers."""

import math

import pytest
from rewards_support import EXAMPLE

from rewards import VerifierPool, VerifyRequest, registry
from rewards.base import CORRECT, ERROR, INCORRECT, Outcome
from rewards.components import RewardComponent, attach, check_args, combine, request_row
from rewards.format import verify_format_boxed, verify_format_regex, verify_format_think
from rewards.pool import PoolConfig


@pytest.mark.parametrize(
    "completion, status",
    [
        ("so \\boxed{42}", CORRECT),
        ("\\boxed{\\frac{1}{2}} done", CORRECT),
        ("\\fbox{7}", CORRECT),  # the boxes `math` reads
        ("the answer is 42", INCORRECT),
        ("\\boxed{42", INCORRECT),  # unbalanced: no usable box
        ("\\boxed{" + "9" * 1001 + "}", INCORRECT),  # longer than math reads
        ("", INCORRECT),
    ],
)
def test_format_boxed(completion, status):
    assert verify_format_boxed(completion, "42", {}).status == status


@pytest.mark.parametrize(
    "completion, opened, status",
    [
        ("<think>add 2 and 2</think>4", False, CORRECT),
        ("  <think>\nx\n</think>\n\\boxed{4}\n", False, CORRECT),
        ("<think>x</think>", False, INCORRECT),  # no answer after the block
        ("<think> </think>4", False, INCORRECT),  # empty reasoning
        ("4<think>x</think>4", False, INCORRECT),  # text before the block
        ("<think>x</think>4</think>", False, INCORRECT),  # closed twice
        ("<think>a<think>b</think>4", False, INCORRECT),  # opened twice
        ("x</think>4", False, INCORRECT),  # not opened
        ("x</think>4", True, CORRECT),  # the chat template opened it
        ("<think>x</think>4", True, INCORRECT),  # opened again inside the template's block
    ],
)
def test_format_think(completion, opened, status):
    assert verify_format_think(completion, "4", {"think_opened": opened}).status == status


def test_format_regex_matches_the_whole_stripped_completion():
    row = {"pattern": "-?[0-9]+"}
    assert verify_format_regex(" 46\n", "46", row).status == CORRECT
    assert verify_format_regex("-7", "-7", row).status == CORRECT
    assert verify_format_regex("4=6", "46", row).status == INCORRECT
    assert verify_format_regex("46 is it", "46", row).status == INCORRECT
    assert verify_format_regex("a\nb", "", {"pattern": "a.b"}).status == CORRECT  # DOTALL
    missing = verify_format_regex("46", "46", {})
    assert missing.status == ERROR and "pattern" in missing.reason


def test_verifiers_refuse_unusable_args_at_start():
    rows = [{"rewards": [{"name": "format_regex", "weight": 0.1, "args": {"pattern": "[0-9"}}]}]
    with pytest.raises(ValueError, match=r"format_regex pattern '\[0-9': unterminated"):
        check_args(rows)
    rows[0]["rewards"][0]["args"] = {}
    with pytest.raises(ValueError, match="format_regex needs args: {pattern: REGEX}"):
        check_args(rows)
    rows[0]["rewards"] = [{"name": "format_think", "weight": 1.0, "args": {"think_opened": "y"}}]
    with pytest.raises(ValueError, match="think_opened must be true or false"):
        check_args(rows)
    rows[0]["rewards"][0]["args"] = {"think_opened": True}
    check_args(rows)  # fine


def test_rows_take_their_own_components_else_the_recipes_else_their_verifier():
    recipe = [RewardComponent(name="math"), RewardComponent(name="format_boxed", weight=0.1)]
    rows = [
        {"prompt": "p", "answer": "1", "verifier": "math"},
        {"prompt": "q", "answer": "2", "verifier": "countdown",
         "rewards": [{"name": "countdown"}, {"name": "format_think", "weight": -0.5}]},
    ]  # fmt: skip
    attach(rows, recipe, "data.train")
    assert rows[0]["rewards"] == [
        {"name": "math", "weight": 1.0, "args": {}},
        {"name": "format_boxed", "weight": 0.1, "args": {}},
    ]
    assert [(c["name"], c["weight"]) for c in rows[1]["rewards"]] == [
        ("countdown", 1.0),
        ("format_think", -0.5),
    ]
    plain = [{"prompt": "1+1=", "answer": "2", "verifier": "arith"}]
    attach(plain, [], "data.train")
    assert plain[0]["rewards"] == [{"name": "arith", "weight": 1.0, "args": {}}]


@pytest.mark.parametrize(
    "own, message",
    [
        ([], "data.train row 0: rewards must be a non-empty list of {name, weight}"),
        ({"name": "math"}, "data.train row 0: rewards must be a non-empty list"),
        ([{"name": "math", "weight": "heavy"}],
         "data.train row 0: rewards[0].weight: Input should be a valid number"),
        ([{"name": "math", "wieght": 1}],
         "data.train row 0: rewards[0].wieght: Extra inputs are not permitted"),
        ([{"name": "math", "weight": math.inf}],
         "data.train row 0: rewards[0].weight: Input should be a finite number"),
        ([{"name": "overlong"}], "data.train row 0: reward component 'overlong' is computed by "
         "the trainer; set algorithm.overlong_buffer"),
    ],
)  # fmt: skip
def test_malformed_row_components_are_one_line_errors(own, message):
    with pytest.raises(ValueError) as info:
        attach(
            [{"prompt": "p", "answer": "1", "verifier": "math", "rewards": own}], [], "data.train"
        )
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_combine_is_the_weighted_sum_and_an_error_makes_it_undefined():
    right, wrong = Outcome.correct(), Outcome.incorrect()
    # 1.0 x 1 + 0.1 x 1 = 1.1; the first component is the answer check
    assert combine([right, right], [1.0, 0.1]) == (1.1, True, False)
    assert combine([wrong, right], [1.0, 0.1]) == (0.1, False, False)
    assert combine([right, Outcome.correct(0.5)], [2.0, -1.0]) == (1.5, True, False)
    reward, correct, error = combine([right, Outcome.error("timeout")], [1.0, 0.0])
    assert math.isnan(reward) and (correct, error) == (False, True)  # never 0, even at weight 0


def test_a_component_sees_the_row_with_its_args_on_top():
    row = {"prompt": "p", "answer": "7", "verifier": "math", "rewards": [], "numbers": [1, 2]}
    component = {"name": "format_regex", "weight": 0.1, "args": {"pattern": "x", "numbers": [3]}}
    assert request_row(row, component) == {"verifier": "math", "numbers": [3], "pattern": "x"}


def test_plugins_and_args_work_as_components_in_worker_processes(monkeypatch):
    """An installed-style plug-in (module:function) next to a built-in with args, scored by
    worker processes: the args travel with the request."""
    saved = dict(registry._REGISTRY)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    try:
        config = PoolConfig(
            num_workers=1,
            timeout_s=10.0,
            plugins=["choice=rlvr_example_verifier:verify_multiple_choice"],
        )
        data_row = {"prompt": "Which?", "answer": "B", "verifier": "choice", "choices": "ABCD"}
        fmt = {
            "name": "format_regex",
            "weight": 0.1,
            "args": {"pattern": r"The answer is \([A-D]\)\."},
        }
        with VerifierPool(config) as pool:
            outcomes = pool.verify_batch(
                [
                    VerifyRequest("choice", "The answer is (B).", "B", request_row(data_row, {})),
                    VerifyRequest("choice", "The answer is (E).", "B", request_row(data_row, {})),
                    VerifyRequest(
                        "format_regex", "The answer is (B).", "B", request_row(data_row, fmt)
                    ),
                    VerifyRequest("format_regex", "B", "B", request_row(data_row, fmt)),
                ]
            )
    finally:
        registry._REGISTRY.clear()
        registry._REGISTRY.update(saved)
    assert [o.status for o in outcomes] == [CORRECT, INCORRECT, CORRECT, INCORRECT]
    assert outcomes[1].reason == "E is not a choice"  # the row's `choices` reached the worker
