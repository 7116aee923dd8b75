"""Held-out evaluation: n samples per problem, unbiased pass@k with bootstrap intervals."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Annotated

import torch
from pydantic import BaseModel, ConfigDict, Field

from rlvr.algorithms import mean_with_ci, pass_at_k
from rlvr.train.scoring import RewardSpec, Scores, score
from rollout.types import Completions, SamplingSettings


class EvalConfig(BaseModel):
    """The `eval` section: held-out pass@k during training and in `rlvr eval`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    every: int = Field(10, ge=0, description="evaluate every N steps (0 = only at start and end)")
    num_problems: int = Field(
        500,
        ge=1,
        description="held-out problems per evaluation set (arith: at most data.arith.heldout_size)",
    )
    n: int = Field(8, ge=1, description="samples per problem")
    k: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1, 8], description="pass@k values to report"
    )
    temperature: float = Field(1.0, gt=0.0)


def evaluate(
    generate: Callable[[list[list[int]], SamplingSettings], Completions],
    pool,
    tokenizer,
    rows: list[dict],
    prompts: list[list[int]],
    *,
    n: int,
    ks: list[int],
    temperature: float,
    max_new_tokens: int,
    seed: int,
) -> dict[str, float]:
    """`eval_rollouts` then `eval_metrics`, scored by each row's reward components."""
    comps, scores = eval_rollouts(
        generate, pool, tokenizer, rows, prompts, n=n, temperature=temperature,
        max_new_tokens=max_new_tokens, seed=seed, spec=None,
    )  # fmt: skip
    return eval_metrics(rows, comps, scores, ks=ks, seed=seed)


def eval_rollouts(
    generate: Callable[[list[list[int]], SamplingSettings], Completions],
    pool,
    tokenizer,
    rows: list[dict],
    prompts: list[list[int]],
    *,
    n: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    spec: RewardSpec | None,
) -> tuple[Completions, Scores]:
    """n completions per held-out prompt, and their scores."""
    comps = generate(
        prompts,
        SamplingSettings(
            n=n, temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens, seed=seed
        ),
    )
    return comps, score(pool, tokenizer, rows, comps, spec)


def eval_metrics(
    rows: list[dict], comps: Completions, scores: Scores, *, ks: list[int], seed: int
) -> dict[str, float]:
    """Metrics: pass@k (mean over problems) with pass@k_ci_lo / _ci_hi, per-level pass@1 when
    rows have a `level` column, verifier errors, mean completion length.

    Correct means the first reward component's verdict (rewards/components.py). A verifier
    error is neither right nor wrong: a problem's n and c count only verified samples, and a
    problem with no verified sample is left out (and counted).
    """
    count = torch.zeros(len(rows), dtype=torch.long).index_add_(
        0, comps.prompt_index_N, (~scores.error_N).long()
    )
    hits = torch.zeros(len(rows), dtype=torch.long).index_add_(
        0, comps.prompt_index_N, scores.correct_N.long()
    )
    usable = [i for i in range(len(rows)) if count[i] > 0]
    out: dict[str, float] = {
        "eval/problems": len(usable),
        "eval/unverifiable_problems": len(rows) - len(usable),
        "eval/verifier_errors": int(scores.error_N.sum()),
        "eval/length_mean": comps.length_N.float().mean().item(),
    }
    for k in ks:
        values = [pass_at_k(int(count[i]), int(hits[i]), min(k, int(count[i]))) for i in usable]
        if values:
            mean, lo, hi = mean_with_ci(values, seed=seed)
            out.update({f"pass@{k}": mean, f"pass@{k}_ci_lo": lo, f"pass@{k}_ci_hi": hi})
    by_level: dict[str, list[float]] = defaultdict(list)
    for i in usable:
        if "level" in rows[i]:
            by_level[rows[i]["level"]].append(float(hits[i]) / float(count[i]))
    for level, values in sorted(by_level.items()):
        out[f"level/{level}/pass@1"] = sum(values) / len(values)
    return out
