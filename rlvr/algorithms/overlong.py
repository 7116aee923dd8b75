"""DAPO's treatment of completions that hit the length limit (Yu et al. 2025, arXiv 2503.14476)."""

from __future__ import annotations

import torch
from torch import Tensor


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
