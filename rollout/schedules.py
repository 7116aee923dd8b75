"""Rollout schedules: how many extra completions each prompt gets after the first stage.

Contract: `extra(acc_P, n) -> long [P]`, the number of additional completions per prompt, given
each prompt's first-stage accuracy acc_P (NaN when every completion's verifier failed) and the
first-stage group size n. Extra completions come from the same, not-yet-updated policy and are
merged into the prompt's group.
"""

from __future__ import annotations

import torch


class SingleStage:
    """Plain GRPO: one stage, no extra completions."""

    def extra(self, acc_P: torch.Tensor, n: int) -> torch.Tensor:
        return torch.zeros(acc_P.shape[0], dtype=torch.long)

    def metrics(self) -> dict[str, float]:
        return {}


SCHEDULES = {"single": SingleStage}


def make_schedule(name: str, **options):
    try:
        cls = SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown rollout schedule {name!r}; valid: {', '.join(sorted(SCHEDULES))}") from None
    return cls(**options)
