"""Learning-rate schedule (learner, SFT): linear warm-up, then constant, cosine or linear decay."""

from __future__ import annotations

import math


def lr_lambda(kind: str, warmup: int, total_steps: int):
    """Multiplier of the peak lr at optimizer step s (0-based), for torch's LambdaLR."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if kind == "linear":
            return 1.0 - progress
        return 1.0

    return factor
