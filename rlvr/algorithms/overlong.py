"""DAPO's treatment of completions that hit the length limit (Yu et al. 2025, arXiv 2503.14476).

The trainer applies each in one place: the penalty is the reward component `overlong`
(rlvr.train.scoring, weight `overlong_penalty_factor`, L_max = rollout.max_new_tokens), the
filter drops truncated completions from the loss (rlvr.train.controller).
"""

from __future__ import annotations

from typing import Optional

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor


class OverlongConfig(BaseModel):
    """DAPO's overlong shaping and filtering (part of the `algorithm` section); both off by
    default, as in GRPO."""

    model_config = ConfigDict(extra="forbid", strict=True)

    overlong_buffer: Optional[int] = Field(
        None,
        ge=1,
        description="L_c of DAPO's soft overlong penalty: a completion longer than "
        "rollout.max_new_tokens - L_c tokens gets a penalty falling linearly to -1 at the cap, "
        "as the reward component 'overlong' (None = off)",
    )
    overlong_penalty_factor: float = Field(
        1.0, ge=0.0, description="weight of the overlong penalty in the reward"
    )
    overlong_filter: bool = Field(
        False,
        description="DAPO overlong filtering: truncated completions (cut at the length cap) "
        "stay in their group's advantages but get no loss",
    )


def overlong_penalty(
    lengths_N: Tensor, max_len: int, cache_len: int, *, dtype: torch.dtype | None = None
) -> Tensor:
    """DAPO soft overlong punishment, added to the correctness reward.

    With L_c = cache_len: 0 if L <= max_len - L_c; ((max_len - L_c) - L) / L_c if
    max_len - L_c < L <= max_len (a linear ramp from 0 down to -1); -1 beyond max_len.
    lengths_N: completion lengths in tokens [N]. Returns [N] in `dtype` (default: torch's).
    """
    if not 0 < cache_len <= max_len:
        raise ValueError(
            f"need 0 < cache_len <= max_len, got cache_len={cache_len}, max_len={max_len}"
        )
    lengths_N = lengths_N.to(dtype or torch.get_default_dtype())
    # The ramp is >= 0 before the cache zone and < -1 past max_len: clamping gives all 3 cases.
    return (((max_len - cache_len) - lengths_N) / cache_len).clamp(min=-1.0, max=0.0)


def overlong_filter(truncated_N: Tensor, *, dtype: torch.dtype | None = None) -> Tensor:
    """DAPO overlong filtering: loss-mask multiplier [N], 0 for truncated completions, 1 else.

    Truncated completions were cut off, not wrong, so they are left out of the loss rather than
    punished. Multiply each completion's token mask by its value.
    """
    return (~truncated_N.bool()).to(dtype or torch.get_default_dtype())
