"""Group advantages: hand-derived values, unequal groups, abstaining (NaN) completions."""

import math

import pytest
import torch

from rlvr.algorithms import (
    ADVANTAGES,
    AdvantageConfig,
    compute_advantages,
    grpo_advantages,
    rloo_advantages,
    split_advantages,
)

EPS = 1e-6
NAN = float("nan")


def t64(values):
    return torch.tensor(values, dtype=torch.float64)


def test_grpo_one_group_hand_values():
    # rewards [1, 0, 0, 1]: mean .5, population std sqrt(mean((+-.5)^2)) = .5
    # -> A = +-.5 / (.5 + 1e-6)
    adv, valid = compute_advantages(
        "grpo", t64([1, 0, 0, 1]), torch.tensor([0, 0, 0, 0]), std_normalize=True, eps=EPS
    )
    a = 0.5 / (0.5 + EPS)
    torch.testing.assert_close(adv, t64([a, -a, -a, a]), rtol=0, atol=1e-12)
    assert valid.tolist() == [True, True, True, True]
    assert adv.dtype == torch.float64


def test_grpo_unequal_interleaved_groups_with_arbitrary_labels():
    # Labels 3, 9, 42 interleaved, so nothing may reshape to [prompts, N].
    # group 3 (6 members, DARS-expanded): [1, 0, 0, 0, 0, 0]: mean 1/6,
    #   population var = (1/6)(5/6) = 5/36, std = sqrt(5)/6;
    #   A(1) = (5/6) / (sqrt(5)/6 + eps), A(0) = (-1/6) / (sqrt(5)/6 + eps)
    # group 9 (2 members): [1, 1] all equal -> 0, 0
    # group 42 (1 member): [0.5] -> 0 (a single reward is trivially flat)
    rewards = t64([1, 1, 0, 0, 1, 0, 0, 0, 0.5])
    groups = torch.tensor([3, 9, 3, 3, 9, 3, 3, 3, 42])
    adv, valid = compute_advantages("grpo", rewards, groups, std_normalize=True, eps=EPS)
    std = math.sqrt(5) / 6
    hi, lo = (5 / 6) / (std + EPS), (-1 / 6) / (std + EPS)
    torch.testing.assert_close(adv, t64([hi, 0, lo, lo, 0, lo, lo, lo, 0]), rtol=0, atol=1e-12)
    assert valid.all()


def test_grpo_abstaining_completions():
    # group 0: [1, NaN, 0]: the NaN abstains -> stats over [1, 0]: mean .5, std .5
    #   -> A = [.5/(.5+eps), 0, -.5/(.5+eps)], valid [T, F, T]
    # group 1: [NaN, NaN]: nobody left -> A = 0, valid F
    # group 2: [0, 1]: mean .5, std .5 -> [-a, a]
    rewards = t64([1, NAN, 0, NAN, NAN, 0, 1])
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    adv, valid = compute_advantages("grpo", rewards, groups, std_normalize=True, eps=EPS)
    a = 0.5 / (0.5 + EPS)
    torch.testing.assert_close(adv, t64([a, 0, -a, 0, 0, -a, a]), rtol=0, atol=1e-12)
    assert valid.tolist() == [True, False, True, False, False, True, True]


def test_grpo_flat_group_is_exactly_zero_even_with_rounding():
    # In float32, sum([.9, .9, .9]) / 3 != .9 and sum([.1] * 7) / 7 != .1 (checked when writing
    # this test): r - mean is a rounding error of ~6e-8, which dividing by (std ~ 0 + 1e-6) would
    # turn into an advantage of ~.06 out of nothing. Flat groups must give exactly 0.
    rewards = torch.tensor([0.9] * 3 + [0.1] * 7, dtype=torch.float32)
    adv, _ = compute_advantages(
        "grpo", rewards, torch.tensor([0] * 3 + [1] * 7), std_normalize=True, eps=EPS
    )
    assert adv.tolist() == [0.0] * 10


def test_dr_grpo_without_std():
    # [1, 0, 0, 0]: mean .25 -> A = r - .25 = [.75, -.25, -.25, -.25]
    # [1, NaN, 1, 0, 0] (second group, NaN abstains): mean over [1, 1, 0, 0] = .5
    #   -> [.5, 0, .5, -.5, -.5]
    rewards = t64([1, 0, 0, 0, 1, NAN, 1, 0, 0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    adv, valid = grpo_advantages(rewards, groups, std_normalize=False, eps=EPS)
    expected = t64([0.75, -0.25, -0.25, -0.25, 0.5, 0, 0.5, -0.5, -0.5])
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-15)
    assert valid.tolist() == [True] * 5 + [False] + [True] * 3


def test_rloo_hand_values():
    # group 0: [1, 0, 0, 0] -> A(1) = 1 - mean(0,0,0) = 1, A(0) = 0 - mean(1,0,0) = -1/3
    # group 1: [1, NaN, 0, 0]: others over valid members -> A = [1 - 0, 0, 0 - 1/2, 0 - 1/2]
    # group 2: [1, NaN]: one valid member, no baseline -> 0
    # group 3: [NaN] -> 0
    rewards = t64([1, 0, 0, 0, 1, NAN, 0, 0, 1, NAN, NAN])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3])
    adv, valid = compute_advantages("rloo", rewards, groups, std_normalize=False, eps=EPS)
    expected = t64([1, -1 / 3, -1 / 3, -1 / 3, 1, 0, -0.5, -0.5, 0, 0, 0])
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-15)
    assert valid.tolist() == [True] * 5 + [False, True, True, True, False, False]


def test_rloo_with_std_normalisation():
    # [1, 0, 0, 0]: population std sqrt(.25 * .75) = sqrt(3)/4; leave-one-out A as above,
    # each divided by (sqrt(3)/4 + eps). Unequal second group [0, 1] (size 2):
    # A = [-1, 1] / (.5 + eps)
    rewards = t64([1, 0, 0, 0, 0, 1])
    adv, _ = rloo_advantages(rewards, torch.tensor([0, 0, 0, 0, 1, 1]), std_normalize=True, eps=EPS)
    d = math.sqrt(3) / 4 + EPS
    expected = t64([1 / d, -1 / 3 / d, -1 / 3 / d, -1 / 3 / d, -1 / (0.5 + EPS), 1 / (0.5 + EPS)])
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-12)


def test_unknown_advantage_lists_valid_names():
    with pytest.raises(KeyError, match="'gpro'.*valid: grpo, rloo"):
        compute_advantages("gpro", t64([1.0]), torch.tensor([0]), std_normalize=True, eps=EPS)
    with pytest.raises(ValueError, match="valid: grpo, rloo"):  # also a ValueError
        compute_advantages("ppo", t64([1.0]), torch.tensor([0]), std_normalize=True, eps=EPS)
    assert sorted(ADVANTAGES) == ["grpo", "rloo"]


def test_bad_inputs_raise():
    with pytest.raises(TypeError, match="integer group"):
        compute_advantages(
            "grpo", t64([1, 0]), torch.tensor([0.0, 0.0]), std_normalize=True, eps=EPS
        )
    with pytest.raises(ValueError, match="finite"):
        compute_advantages(
            "grpo", t64([1, float("inf")]), torch.tensor([0, 0]), std_normalize=True, eps=EPS
        )
    with pytest.raises(ValueError, match="equal length"):
        compute_advantages(
            "grpo", t64([1, 0]), torch.tensor([0, 0, 0]), std_normalize=True, eps=EPS
        )


def test_integer_rewards_are_accepted():
    # int rewards [1, 0] -> float: mean .5, std .5 -> [a, -a]
    adv, _ = compute_advantages(
        "grpo", torch.tensor([1, 0]), torch.tensor([0, 0]), std_normalize=True, eps=EPS
    )
    assert adv.dtype == torch.get_default_dtype()
    a = 0.5 / (0.5 + EPS)
    torch.testing.assert_close(adv, torch.tensor([a, -a]), rtol=0, atol=1e-6)


def test_advantage_config_defaults_to_each_papers_form():
    # std_normalize unset: grpo divides by the group std (DeepSeekMath), rloo does not.
    assert AdvantageConfig().model_dump() == dict(advantage="grpo", std_normalize=True, eps=EPS)
    assert AdvantageConfig(advantage="rloo").std_normalize is False
    assert AdvantageConfig(advantage="grpo", std_normalize=False).std_normalize is False  # Dr.GRPO
    with pytest.raises(ValueError, match="advantage"):
        AdvantageConfig(advantage="gpro")
    with pytest.raises(ValueError, match="eps"):
        AdvantageConfig(eps=-1.0)


def test_split_advantages_hand_values_and_they_sum_to_the_advantage():
    # one group: math 1, 0, 0, 0 and format 0.1, 0.1, 0.1, 0 (weighted); Dr.GRPO centring:
    # math - 0.25 = 0.75, -0.25, -0.25, -0.25; format - 0.075 = 0.025, 0.025, 0.025, -0.075
    parts = torch.tensor([[1.0, 0, 0, 0], [0.1, 0.1, 0.1, 0]], dtype=torch.float64)
    group = torch.zeros(4, dtype=torch.long)
    adv, _ = compute_advantages("grpo", parts.sum(0), group, std_normalize=False, eps=1e-6)
    got = split_advantages("grpo", parts, adv, group)
    want = t64([[0.75, -0.25, -0.25, -0.25], [0.025, 0.025, 0.025, -0.075]])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-15)
    # with std normalisation every part is divided by the total's std + eps:
    # rewards 1.1, 0.1, 0.1, 0: std = sqrt(mean of 0.775^2, 0.225^2, 0.225^2, 0.325^2)
    std = math.sqrt((0.775**2 + 2 * 0.225**2 + 0.325**2) / 4)
    adv, _ = compute_advantages("grpo", parts.sum(0), group, std_normalize=True, eps=1e-6)
    got = split_advantages("grpo", parts, adv, group)
    torch.testing.assert_close(got, want / (std + 1e-6), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["grpo", "rloo"])
@pytest.mark.parametrize("std_normalize", [True, False])
def test_split_advantages_sum_to_the_advantage(name, std_normalize):
    gen = torch.Generator().manual_seed(0)
    group = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 3])  # unequal sizes, one singleton
    math_ = (torch.rand(11, generator=gen) > 0.5).double()
    fmt = 0.1 * (torch.rand(11, generator=gen) > 0.3).double()
    length = -0.5 * torch.rand(11, generator=gen, dtype=torch.float64)
    parts = torch.stack([math_, fmt, length])
    parts[1, 4] = float("nan")  # an errored component: the completion abstains
    rewards = parts.sum(0)
    adv, valid = compute_advantages(name, rewards, group, std_normalize=std_normalize, eps=1e-6)
    got = split_advantages(name, parts, adv, group)
    torch.testing.assert_close(got.sum(0), adv, rtol=0, atol=1e-12)
    assert not valid[4] and (got[:, 4] == 0).all()
