"""Group-relative advantages: one scalar per completion, from the rewards of its group.

Groups are given by an index per completion and may have unequal sizes (DARS adds completions to
hard prompts), so statistics are gathered with scatter ops, never by reshaping to
[prompts, completions]. A NaN reward means the verifier errored (crashed or timed out, not
"wrong"): that completion abstains. It is left out of its group's statistics, gets advantage 0
and is marked invalid, so the caller masks its tokens out of the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from rlvr.algorithms._registry import lookup

PAPER_STD_NORMALIZE = {"grpo": True, "rloo": False}
"""Whether each estimator's paper divides by the group std (the default of std_normalize)."""


class AdvantageConfig(BaseModel):
    """How rewards become advantages (part of the `algorithm` section)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    advantage: Literal["grpo", "rloo"] = Field("grpo", description="group advantage estimator")
    std_normalize: Optional[bool] = Field(
        None,
        description="divide by the group std; default: the estimator's paper form (grpo: "
        "true; rloo: false; grpo with false is Dr.GRPO)",
    )
    eps: float = Field(1e-6, ge=0.0, description="added to the group std")

    @model_validator(mode="after")
    def _paper_form(self) -> AdvantageConfig:
        if self.std_normalize is None:
            self.std_normalize = PAPER_STD_NORMALIZE[self.advantage]
        return self


class _GroupStats(NamedTuple):
    """Statistics of each completion's group over the group's valid members, per completion."""

    count_N: Tensor  # number of valid members
    sum_N: Tensor  # sum of valid rewards
    mean_N: Tensor  # mean of valid rewards (0 for a group with none)
    std_N: Tensor  # population std of valid rewards
    flat_N: Tensor  # bool: all valid rewards are equal (or there are none): no signal


def _validate(rewards_N: Tensor, group_N: Tensor) -> tuple[Tensor, Tensor]:
    """Checks shapes and dtypes; returns (float rewards_N, valid_N)."""
    if rewards_N.dim() != 1 or group_N.shape != rewards_N.shape:
        raise ValueError(
            f"rewards_N and group_N must be 1-D of equal length, got shapes "
            f"{tuple(rewards_N.shape)} and {tuple(group_N.shape)}"
        )
    if group_N.dtype.is_floating_point or group_N.dtype.is_complex or group_N.dtype == torch.bool:
        raise TypeError(f"group_N must hold integer group indices, got dtype {group_N.dtype}")
    if not rewards_N.dtype.is_floating_point:
        rewards_N = rewards_N.to(torch.get_default_dtype())
    if torch.isinf(rewards_N).any():
        raise ValueError("rewards_N must be finite, or NaN for a verifier error; got +-inf")
    return rewards_N, ~torch.isnan(rewards_N)


def _group_stats(rewards_N: Tensor, valid_N: Tensor, group_N: Tensor) -> _GroupStats:
    labels_G, idx_N = torch.unique(group_N, return_inverse=True)  # any labels -> 0..G-1
    zeros_G = rewards_N.new_zeros(labels_G.numel())
    r_N = torch.where(valid_N, rewards_N, 0.0)
    count_G = zeros_G.index_add(0, idx_N, valid_N.to(rewards_N.dtype))
    sum_G = zeros_G.index_add(0, idx_N, r_N)
    mean_G = sum_G / count_G.clamp(min=1)
    # Two passes (mean, then squared deviations) rather than E[r^2] - E[r]^2: no cancellation.
    dev_N = torch.where(valid_N, rewards_N - mean_G[idx_N], 0.0)
    std_G = (zeros_G.index_add(0, idx_N, dev_N**2) / count_G.clamp(min=1)).sqrt()
    # Flat groups are found by comparing min and max exactly: r - mean can be a rounding error
    # (e.g. 0.1 three times), which std normalisation would blow up into a spurious advantage.
    inf = torch.tensor(float("inf"), dtype=rewards_N.dtype, device=rewards_N.device)
    max_G = torch.full_like(zeros_G, -inf).scatter_reduce(
        0, idx_N, torch.where(valid_N, rewards_N, -inf), "amax"
    )
    min_G = torch.full_like(zeros_G, inf).scatter_reduce(
        0, idx_N, torch.where(valid_N, rewards_N, inf), "amin"
    )
    flat_G = max_G <= min_G  # also true for a group with no valid member (-inf <= inf)
    return _GroupStats(count_G[idx_N], sum_G[idx_N], mean_G[idx_N], std_G[idx_N], flat_G[idx_N])


def grpo_advantages(
    rewards_N: Tensor, group_N: Tensor, *, std_normalize: bool, eps: float
) -> tuple[Tensor, Tensor]:
    """GRPO group-relative advantage (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300).

    A_i = (r_i - mean_g) / (std_g + eps), std_g the population std of the group's valid rewards.
    With std_normalize=False this is the Dr.GRPO advantage A_i = r_i - mean_g (Liu et al. 2025,
    arXiv 2503.20783), which removes the bias towards groups of low reward variance.
    Differences from the textbook: NaN rewards abstain (see module docstring), groups may have
    unequal sizes, and a group whose valid rewards are all equal gets exactly 0.
    Returns (adv_N in the rewards' float dtype, valid_N bool).
    """
    rewards_N, valid_N = _validate(rewards_N, group_N)
    stats = _group_stats(rewards_N, valid_N, group_N)
    adv_N = rewards_N - stats.mean_N
    if std_normalize:
        adv_N = adv_N / (stats.std_N + eps)
    return torch.where(valid_N & ~stats.flat_N, adv_N, 0.0), valid_N


def rloo_advantages(
    rewards_N: Tensor, group_N: Tensor, *, std_normalize: bool, eps: float
) -> tuple[Tensor, Tensor]:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, arXiv 2402.14740; Kool et al. 2019).

    A_i = r_i - mean of the OTHER valid members of the group = n/(n-1) (r_i - mean_g).
    A group with a single valid member has no baseline and gets 0. The paper has no std
    normalisation (std_normalize=False, the config's default for rloo). With std_normalize=True
    the leave-one-out advantage is further divided by (std_g + eps), std_g the population std of
    the group's valid rewards, the same scaling as `grpo`. NaN and flat groups as in
    `grpo_advantages`.
    """
    rewards_N, valid_N = _validate(rewards_N, group_N)
    stats = _group_stats(rewards_N, valid_N, group_N)
    others_mean_N = (stats.sum_N - rewards_N) / (stats.count_N - 1).clamp(min=1)
    adv_N = rewards_N - others_mean_N
    if std_normalize:
        adv_N = adv_N / (stats.std_N + eps)
    keep_N = valid_N & ~stats.flat_N & (stats.count_N >= 2)
    return torch.where(keep_N, adv_N, 0.0), valid_N


AdvantageFn = Callable[..., tuple[Tensor, Tensor]]
"""(rewards_N, group_N, *, std_normalize: bool, eps: float) -> (adv_N, valid_N)."""

ADVANTAGES: dict[str, AdvantageFn] = {"grpo": grpo_advantages, "rloo": rloo_advantages}


def compute_advantages(
    name: str, rewards_N: Tensor, group_N: Tensor, *, std_normalize: bool, eps: float
) -> tuple[Tensor, Tensor]:
    """Advantages by registry name (see ADVANTAGES); returns (adv_N, valid_N).

    rewards_N: float [N], NaN where the verifier errored. group_N: integer [N], any labels; equal
    labels form a group. valid_N is False for abstaining completions: use it as a loss mask.
    """
    fn = lookup(ADVANTAGES, name, "advantage estimator")
    return fn(rewards_N, group_N, std_normalize=std_normalize, eps=eps)


def split_advantages(name: str, parts_CN: Tensor, adv_N: Tensor, group_N: Tensor) -> Tensor:
    """Each reward component's part of the advantages, [C, N]; summed over C it is adv_N.

    parts_CN: the components' weighted contributions, rewards_N = parts_CN.sum(0) (NaN where a
    reward is undefined); adv_N: compute_advantages(name, rewards_N, group_N, ...). Both
    estimators centre the rewards linearly within a group (r - mean, r - mean of the others)
    and then divide by one number per group d_g (std_g + eps, or 1), so
    A_i = sum_c centred(part_c)_i / d_g: each component is centred on its own and divided by the
    total's d_g, read off as adv_N / centred(rewards_N). Completions with no advantage (invalid,
    flat group) get 0 in every row.
    """
    fn = lookup(ADVANTAGES, name, "advantage estimator")
    parts_CN = parts_CN.to(adv_N.dtype)
    total_N = parts_CN.sum(0)
    centred_N, _ = fn(total_N, group_N, std_normalize=False, eps=0.0)
    scale_N = torch.where(centred_N != 0, adv_N / torch.where(centred_N != 0, centred_N, 1.0), 0.0)
    undefined_N = torch.isnan(total_N)
    rows = [
        fn(torch.where(undefined_N, torch.nan, part_N), group_N, std_normalize=False, eps=0.0)[0]
        for part_N in parts_CN
    ]
    return torch.stack(rows) * scale_N if rows else parts_CN.new_zeros((0, len(adv_N)))
