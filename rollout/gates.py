"""Admission gates: which groups enter the update."""

from __future__ import annotations

import torch


def zero_variance_admit(reward_N: torch.Tensor, group_N: torch.Tensor, num_groups: int) -> torch.Tensor:
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
