"""Scoring with reward components: the weighted sum, errors, DAPO's overlong penalty, the
per-component metrics (mean, errors, share of the advantage signal) and the overlong filter."""

import math

import pytest
import torch
from train_support import TOK, completions

from rewards import Outcome, registry
from rewards.components import attach
from rewards.pool import PoolConfig, VerifierPool
from rlvr.algorithms import compute_advantages
from rlvr.config import load_config
from rlvr.train.controller import trainable
from rlvr.train.rollouts import Rollouts
from rlvr.train.scoring import GroupStats, RewardSpec, Scores, score
from rlvr.train.step_metrics import reward_metrics
from rollout.types import FINISH_LENGTH, FINISH_STOP, Completions

MATH_AND_FORMAT = [
    {"name": "math", "weight": 1.0, "args": {}},
    {"name": "format_regex", "weight": 0.1, "args": {"pattern": "-?[0-9]+"}},
]


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(PoolConfig(num_workers=0)) as p:
        yield p


def test_the_reward_is_the_weighted_sum_and_the_first_component_decides_correct(pool):
    rows = [{"prompt": "40+6=", "answer": "46", "verifier": "math", "rewards": MATH_AND_FORMAT}]
    comps = completions(["46", "45", "4=6", ""], [0, 0, 0, 0])
    s = score(pool, TOK, rows, comps, RewardSpec(("math", "format_regex")))
    # math: only "46" is right; format: "46" and "45" are bare integers -> 1.1, 0.1, 0, 0
    torch.testing.assert_close(s.reward_N, torch.tensor([1.1, 0.1, 0.0, 0.0], dtype=torch.float64))
    assert s.correct_N.tolist() == [True, False, False, False]
    assert s.error_N.tolist() == [False] * 4
    assert s.score_CN.tolist() == [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]
    assert s.weight_CN.tolist() == [[1.0] * 4, [0.1] * 4]
    assert s.reasons == [
        "",
        "math: wrong answer",
        "math: wrong answer; format_regex: no match",
        "math: no answer; format_regex: no match",
    ]


def test_an_erroring_component_makes_the_reward_undefined_never_zero(pool):
    saved = dict(registry._REGISTRY)
    registry.register("flaky")(
        lambda c, g, r: Outcome.error("down") if c == "7" else Outcome.correct()
    )
    try:
        rows = [
            {"prompt": "3+4=", "answer": "7", "verifier": "arith",
             "rewards": [{"name": "arith", "weight": 1.0, "args": {}},
                         {"name": "flaky", "weight": 0.0, "args": {}}]},
            {"prompt": "1+1=", "answer": "2", "verifier": "arith"},  # its verifier only
        ]  # fmt: skip
        comps = completions(["7", "8", "2"], [0, 0, 1])
        s = score(pool, TOK, rows, comps, RewardSpec(("arith", "flaky")))
    finally:
        registry._REGISTRY.clear()
        registry._REGISTRY.update(saved)
    # "7" is right, but flaky errored on it (even at weight 0): undefined, left out, counted
    assert math.isnan(s.reward_N[0]) and s.reward_N[1:].tolist() == [0.0, 1.0]
    assert s.error_N.tolist() == [True, False, False] and s.correct_N.tolist() == [False] * 2 + [
        True
    ]
    assert s.error_CN.tolist() == [[False] * 3, [True, False, False]]
    # row 1 does not use flaky: no score and no weight there
    assert math.isnan(s.score_CN[1, 2]) and s.weight_CN[1, 2] == 0.0
    stats = GroupStats.of(s, comps.prompt_index_N, 2)
    assert stats.verified_P.tolist() == [1, 1] and stats.correct_P.tolist() == [0, 1]


def test_dapo_overlong_penalty_is_the_component_overlong(pool):
    cfg = load_config(
        None,
        ["rollout.max_new_tokens=4", "algorithm.overlong_buffer=2",
         "algorithm.overlong_penalty_factor=0.5"],
    )  # fmt: skip
    rows = [{"prompt": "1+1=", "answer": "2", "verifier": "arith"}]
    attach(rows, cfg.rewards, "data.train")
    spec = RewardSpec.of(cfg, rows)
    assert spec == RewardSpec(("arith", "overlong"), (4, 2, 0.5))
    comps = completions(["2", "22", "2222"], [0, 0, 0], [FINISH_STOP, FINISH_STOP, FINISH_LENGTH])
    s = score(pool, TOK, rows, comps, spec)
    # lengths 2, 3 (EOS included), 4 against L_max 4, L_c 2: penalty 0, (2-3)/2 = -0.5, -1
    assert s.score_CN[1].tolist() == [0.0, -0.5, -1.0]
    # rewards: arith 1, 0, 0 plus 0.5 x penalty
    torch.testing.assert_close(s.reward_N, torch.tensor([1.0, -0.25, -0.5], dtype=torch.float64))


def batch_of(scores: Scores, comps: Completions, prompts: int) -> Rollouts:
    stats = GroupStats.of(scores, comps.prompt_index_N, prompts)
    return Rollouts(
        list(range(prompts)), [[1]] * prompts, comps, scores, stats,
        torch.zeros(prompts, dtype=torch.long), torch.ones(prompts, dtype=torch.bool),
    )  # fmt: skip


def test_component_metrics_and_their_share_of_the_advantage(pool):
    rows = [{"prompt": "40+6=", "answer": "46", "verifier": "math", "rewards": MATH_AND_FORMAT}]
    comps = completions(["46", "45", "44", "4=6"], [0, 0, 0, 0])
    s = score(pool, TOK, rows, comps, RewardSpec(("math", "format_regex")))
    batch = batch_of(s, comps, 1)
    adv_N, valid_N = compute_advantages(
        "grpo", s.reward_N.double(), comps.prompt_index_N, std_normalize=True, eps=1e-6
    )
    m = reward_metrics(batch, adv_N, valid_N, "grpo")
    # rewards 1.1, 0.1, 0.1, 0 (mean 0.325): centred 0.775, -0.225, -0.225, -0.325 (signs +---)
    # math 1, 0, 0, 0 centred 0.75, -0.25, -0.25, -0.25 -> along the signs 1.5
    # format 0.1, 0.1, 0.1, 0 centred 0.025, 0.025, 0.025, -0.075 -> 0.025 - 0.05 + 0.075 = 0.05
    # total |centred| 1.55 (the std divides every term alike): shares 1.5/1.55 and 0.05/1.55
    assert m["reward/math/adv_share"] == pytest.approx(1.5 / 1.55, abs=1e-9)
    assert m["reward/format_regex/adv_share"] == pytest.approx(0.05 / 1.55, abs=1e-9)
    assert m["reward/math/mean"] == 0.25 and m["reward/format_regex/mean"] == 0.75
    assert m["reward/math/errors"] == 0 and m["reward/format_regex/errors"] == 0
    # a group left out of the update carries no signal: nothing to share
    none = reward_metrics(batch, adv_N, torch.zeros(4, dtype=torch.bool), "grpo")
    assert math.isnan(none["reward/math/adv_share"])


def test_scores_of_different_components_do_not_join():
    a = Scores(*[torch.zeros(1)] * 3, [""], ("math",), *[torch.zeros(1, 1)] * 3, [""])
    b = Scores(*[torch.zeros(1)] * 3, [""], ("arith",), *[torch.zeros(1, 1)] * 3, [""])
    with pytest.raises(ValueError, match="cannot join scores of components"):
        Scores.concat([a, b])


def test_the_overlong_filter_keeps_truncated_completions_out_of_the_loss(pool):
    rows = [{"prompt": "1+1=", "answer": "2", "verifier": "arith"}]
    comps = completions(
        ["2", "3", "2222", "3333"], [0] * 4, [FINISH_STOP] * 2 + [FINISH_LENGTH] * 2
    )
    batch = batch_of(score(pool, TOK, rows, comps), comps, 1)
    valid_N = torch.ones(4, dtype=torch.bool)
    assert trainable(batch, valid_N, drop_truncated=False).tolist() == [True] * 4
    assert trainable(batch, valid_N, drop_truncated=True).tolist() == [True, True, False, False]
    cfg = load_config(None, ["algorithm.overlong_filter=true"])
    assert trainable(batch, valid_N, cfg.algorithm.overlong_filter).sum() == 2
