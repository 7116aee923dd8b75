"""Admission gates: which groups enter the update.

`zero_variance_admit` is the filter; `DynamicSampling` is DAPO's refill policy on top of it: it
tells the loop whether to generate another prompt batch and which groups to keep.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field


class GateConfig(BaseModel):
    """The `gate` section: which groups enter the update beyond the zero-variance filter
    (algorithm.drop_zero_variance)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    refill: bool = Field(
        False,
        description="DAPO dynamic sampling: draw further prompt batches until "
        "trainer.prompts_per_step informative groups are collected",
    )
    max_gen_batches: int = Field(
        10,
        ge=1,
        description="refill: at most this many generation rounds per step; train on what was "
        "collected if still short",
    )


def zero_variance_admit(
    reward_N: torch.Tensor, group_N: torch.Tensor, num_groups: int
) -> torch.Tensor:
    """admit_P: True for groups whose verified rewards are not all equal.

    Such groups have zero advantage for every member and only dilute the loss normalisation
    (DAPO's dynamic-sampling filter, without the refill). NaN rewards (verifier errors) are
    ignored; a group with fewer than two verified rewards is dropped.
    """
    valid = ~reward_N.isnan()
    r = reward_N.nan_to_num(0.0).double()
    inf = torch.full((num_groups,), float("inf"), dtype=torch.float64)
    lo = inf.clone().scatter_reduce(0, group_N[valid], r[valid], "amin")
    hi = (-inf).scatter_reduce(0, group_N[valid], r[valid], "amax")
    seen = torch.zeros(num_groups, dtype=torch.long).index_add_(0, group_N, valid.long())
    return (seen >= 2) & (hi > lo)


class DynamicSampling:
    """DAPO dynamic sampling (Yu et al., arXiv 2503.14476) as a policy the loop consults.

    Per step the loop calls `begin()`, then for each generated prompt batch
    `keep_P = offer(informative_P)` (which of that batch's groups enter the update), and draws
    another batch while `more()`. With `refill` the kept groups are the first `target`
    informative ones in generation order (a batch that overshoots is truncated), and generation
    stops after `max_gen_batches` rounds. DAPO raises an error when the rounds run out; this
    policy trains on what it has and reports the shortfall as `gate/short_groups`. Without
    `refill` there is one round and every informative group is kept (the plain filter).
    """

    def __init__(self, config: GateConfig, target: int):
        """`target`: the informative groups a step wants (trainer.prompts_per_step)."""
        if target < 1:
            raise ValueError(f"DynamicSampling needs target >= 1, got {target}")
        self.target, self.max_gen_batches, self.refill = (
            target,
            config.max_gen_batches,
            config.refill,
        )
        self.begin()

    def begin(self) -> None:
        """Start a step: no rounds, nothing kept."""
        self.rounds, self.kept, self.generated, self.informative = 0, 0, 0, 0

    def offer(self, informative_P: torch.Tensor) -> torch.Tensor:
        """keep_P (bool [P]) for one generated batch, given which of its groups are informative."""
        if self.rounds and not self.more():
            raise RuntimeError("DynamicSampling.offer called after more() returned False")
        informative_P = informative_P.bool()
        keep_P = informative_P
        if self.refill:
            keep_P = informative_P & (informative_P.long().cumsum(0) <= self.target - self.kept)
        self.rounds += 1
        self.generated += informative_P.numel()
        self.informative += int(informative_P.sum())
        self.kept += int(keep_P.sum())
        return keep_P

    def more(self) -> bool:
        """Whether the loop should generate another prompt batch this step."""
        return self.refill and self.kept < self.target and self.rounds < self.max_gen_batches

    def metrics(self) -> dict[str, float]:
        return {
            "gate/gen_batches": float(self.rounds),
            "gate/generated_groups": float(self.generated),
            "gate/informative_frac": self.informative / self.generated
            if self.generated
            else math.nan,
            "gate/kept_groups": float(self.kept),
            "gate/short_groups": float(max(self.target - self.kept, 0)) if self.refill else 0.0,
        }
