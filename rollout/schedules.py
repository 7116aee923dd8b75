"""Rollout schedules: how many extra completions each prompt gets after the first stage.

Contract: `extra(acc_P, n) -> long [P]`, the number of additional completions per prompt, given
each prompt's first-stage accuracy acc_P (NaN when every completion's verifier failed) and the
first-stage group size n. Extra completions come from the same, not-yet-updated policy and are
merged into the prompt's group. `after_expand(acc_stage1_P, acc_merged_P)` is told the accuracies
before and after the merge (for metrics), and `metrics()` returns flat floats.

Registry: `single` (below) and `dars` (rollout/dars.py); each class is built as `cls(config)`
from the `schedule` section (`ScheduleConfig`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from rollout.dars import DARSConfig, DARSSchedule


class ScheduleConfig(DARSConfig):
    """The `schedule` section: how many completions each prompt gets. `dars` adds completions
    to prompts whose first-stage accuracy is below 0.5 (docs/sampling.md)."""

    name: Literal["single", "dars"] = Field("single", description="rollout schedule")


class SingleStage:
    """Plain GRPO: one stage, no extra completions."""

    def __init__(self, config: Any = None):
        """`config` is accepted for the registry's common signature, unused."""

    def extra(self, acc_P: torch.Tensor, n: int) -> torch.Tensor:
        return torch.zeros(acc_P.shape[0], dtype=torch.long)

    def after_expand(self, acc_stage1_P: torch.Tensor, acc_merged_P: torch.Tensor) -> None:
        """Nothing to record: there is no second stage."""

    def metrics(self) -> dict[str, float]:
        return {}


SCHEDULES = {"single": SingleStage, "dars": DARSSchedule}


def make_schedule(config: ScheduleConfig):
    """The schedule the `schedule` section names."""
    return SCHEDULES[config.name](config)
