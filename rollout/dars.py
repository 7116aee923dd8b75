"""DARS: difficulty-adaptive rollout sampling (Yang et al., arXiv 2508.13755).

With binary rewards and A_i = r_i - acc, a group of N completions carries total |advantage|
N * S(acc) with S = 2 acc (1 - acc); it peaks at acc = 0.5, so plain GRPO gives hard prompts
little weight. DARS gives a prompt with first-stage accuracy acc < 0.5 dN extra completions so
that (N + dN) S(acc) reaches a target, then merges them into its group:

| mode | target | dN (mean-centred, S = 2a(1-a)) | dN (std-normalised, S = 2 sqrt(a(1-a))) |
|---|---|---|---|
| `et` equal treatment | peak S(0.5) N | ceil(N / (4a(1-a)) - N) | ceil(N / (2 sqrt(a(1-a))) - N) |
| `hw` hardness weighted | 2 (1 - a) S(0.5) N | ceil(N / (2a) - N) | ceil(N sqrt((1 - a) / a) - N) |

a = acc, or 0.5 / N when acc = 0 (no finite dN otherwise). dN = 0 for acc >= 0.5 and for NaN
accuracy (every verifier call failed: the difficulty is unknown). dN <= N_max - N (defaults 32 for
`et`, 64 for `hw`). The derivation of the std-normalised column is in docs/sampling.md.

Departures from the authors' code: their scripts hard-code tables of totals for N = 8 (ET: 32, 18,
11, 9 for acc = 0, 1/8, 2/8, 3/8; HW: 48, 24, 12, 9); these formulas give ET 32, 19, 11, 9 and HW
64, 32, 16, 11 and work for any N.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_N_MAX = {"et": 32, "hw": 64}
# Accuracies arrive as float32 ratios; an exact integer dN (e.g. hw at acc = 1/4: N) can land a
# hair above the integer. True fractional parts are >= 1/N^2 for stage-1 groups up to N = 64.
CEIL_TOL = 1e-4


class DARSConfig(BaseModel):
    """DARS's settings (the `schedule` section adds `name`; docs/sampling.md)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    mode: Literal["et", "hw"] = Field(
        "hw", description="et (equal treatment) or hw (hardness weighted)"
    )
    n_max: Optional[int] = Field(
        None, ge=1, description="cap on a prompt's total completions (default 32 for et, 64 for hw)"
    )
    std_normalized: Optional[bool] = Field(
        None,
        description="size the extra completions for std-normalised advantages (default: as "
        "algorithm.std_normalize, which the root config fills in)",
    )

    @model_validator(mode="after")
    def _default_cap(self) -> DARSConfig:
        if self.n_max is None:
            self.n_max = DEFAULT_N_MAX[self.mode]
        return self


def dars_extra(
    acc_P: torch.Tensor, n: int, *, mode: str, n_max: int, std_normalized: bool
) -> torch.Tensor:
    """dN_P (long [P]): extra completions per prompt from first-stage accuracies acc_P (NaN
    allowed)."""
    if mode not in DEFAULT_N_MAX:
        raise ValueError(f"unknown DARS mode {mode!r}; valid: {', '.join(DEFAULT_N_MAX)}")
    if n < 1:
        raise ValueError(f"DARS needs a first stage of n >= 1 completions, got {n}")
    cap = max(n_max - n, 0)
    acc = acc_P.double()
    hard = acc < 0.5  # False for NaN
    a = torch.where(acc == 0, torch.full_like(acc, 0.5 / n), acc).clamp(min=0.5 / n, max=0.5)
    if mode == "et":
        total = n / (2 * torch.sqrt(a * (1 - a))) if std_normalized else n / (4 * a * (1 - a))
    else:
        total = n * torch.sqrt((1 - a) / a) if std_normalized else n / (2 * a)
    extra = torch.ceil(total - n - CEIL_TOL).clamp(min=0, max=cap)
    return torch.where(hard, extra, torch.zeros_like(extra)).long()


class DARSSchedule:
    """Multi-stage rollout schedule: `extra` sizes stage 2, `after_expand` scores it."""

    def __init__(self, config: DARSConfig):
        if config.std_normalized is None:
            raise ValueError(
                "DARSConfig.std_normalized is unset: say whether advantages are std-normalised"
            )
        self.mode, self.n_max = config.mode, config.n_max
        self.std_normalized = config.std_normalized
        self._metrics: dict[str, float] = {}

    def extra(self, acc_P: torch.Tensor, n: int) -> torch.Tensor:
        extra_P = dars_extra(
            acc_P, n, mode=self.mode, n_max=self.n_max, std_normalized=self.std_normalized
        )
        expanded = extra_P > 0
        self._metrics = {
            "dars/extra_completions": float(extra_P.sum()),
            "dars/expanded_frac": _mean(expanded),
            "dars/capped_frac": _mean(expanded & (extra_P == self.n_max - n)),
        }
        return extra_P

    def after_expand(self, acc_stage1_P: torch.Tensor, acc_merged_P: torch.Tensor) -> None:
        """Record what stage 2 achieved: accuracies before and after merging (NaN = no verdict)."""
        zero = acc_stage1_P == 0
        known = acc_stage1_P[~acc_stage1_P.isnan()]
        self._metrics.update(
            {
                "dars/rescued_frac": _mean(acc_merged_P[zero] > 0),
                "dars/stage1_solved_none": _mean(known == 0),
                "dars/stage1_solved_partly": _mean((known > 0) & (known < 1)),
                "dars/stage1_solved_all": _mean(known == 1),
            }
        )

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)


def _mean(mask: torch.Tensor) -> float:
    """Fraction of True in a bool tensor; NaN for an empty one (nothing to measure)."""
    return mask.double().mean().item() if mask.numel() else math.nan
