"""Rollout schedules: how many extra completions each prompt gets after the first stage.

Contract: `extra(acc_P, n) -> long [P]`, the number of additional completions per prompt, given
each prompt's first-stage accuracy acc_P (NaN when every completion's verifier failed) and the
first-stage group size n. Extra completions come from the same, not-yet-updated policy and are
merged into the prompt's group. `after_expand(acc_stage1_P, acc_merged_P)` is told the accuracies
before and after the merge (for metrics), and `metrics()` returns flat floats.

Registry: `single` (below) and `dars` (rollout/dars.py). `make_schedule` takes either a name or
the `schedule` config section (any object with `.name` and the schedule's options).
"""

from __future__ import annotations

from typing import Any

import torch

from rollout.dars import DARSSchedule


class SingleStage:
    """Plain GRPO: one stage, no extra completions."""

    def extra(self, acc_P: torch.Tensor, n: int) -> torch.Tensor:
        return torch.zeros(acc_P.shape[0], dtype=torch.long)

    def after_expand(self, acc_stage1_P: torch.Tensor, acc_merged_P: torch.Tensor) -> None:
        """Nothing to record: there is no second stage."""

    def metrics(self) -> dict[str, float]:
        return {}


SCHEDULES = {"single": SingleStage, "dars": DARSSchedule}


def make_schedule(config: Any, **options):
    """A schedule from a name (plus keyword `options`) or from the `schedule` config section."""
    name = config if isinstance(config, str) else config.name
    try:
        cls = SCHEDULES[name]
    except KeyError:
        raise ValueError(
            f"unknown rollout schedule {name!r}; valid: {', '.join(sorted(SCHEDULES))}"
        ) from None
    if isinstance(config, str) or not hasattr(cls, "from_config"):
        return cls(**options)
    return cls.from_config(config)
