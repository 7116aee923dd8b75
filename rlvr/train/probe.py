"""The behavioural sync check: after a weight sync, every rollout engine and the learner score the
same fixed probe tokens, and the run stops if they disagree.

A weight fingerprint proves that every tensor reached the engine's `load_weights` intact; it
cannot see what happens after that (a tied LM head that vLLM's layerwise reload leaves stale, a
tensor damaged or repacked wrongly later). Scoring tokens looks at the engine's behaviour
instead: prompt log-probs go through every layer and the LM head. The probe is a few held-out
prompts (fixed for the run), scored at T = 1 by the engines (vLLM prompt log-probs, or the HF
model's forward) and by the learner; the statistic is the mean absolute difference per token.

A second, free guard reads the learner's per-step `actor/rollout_logp_abs_diff` (the mean
|rollout engine - learner| log-prob of the sampled tokens under the policy that sampled them).
"""

from __future__ import annotations

import math

from rlvr.errors import PipelineError


def probe_prompts(prompts: list[list[int]], count: int, max_tokens: int) -> list[list[int]]:
    """The first `count` prompts with at least two tokens, each cut to `max_tokens` tokens."""
    picked = [list(p[:max_tokens]) for p in prompts if len(p) >= 2]
    return picked[:count]


def probe_gap(learner: list[list[float]], engine: list[list[float]]) -> tuple[float, float]:
    """(mean, max) absolute difference per token between two scorings of the same probe."""
    diffs = [abs(a - b) for row_l, row_e in zip(learner, engine) for a, b in zip(row_l, row_e)]
    if len(learner) != len(engine) or any(len(a) != len(b) for a, b in zip(learner, engine)):
        raise PipelineError("sync probe: an engine scored a different number of tokens")
    if not diffs:
        return 0.0, 0.0
    return sum(diffs) / len(diffs), max(diffs)


def check_probe(
    learner: list[list[float]], engines: list[list[list[float]]], tolerance: float
) -> dict[str, float]:
    """Compare every engine's scoring with the learner's; raise naming the first engine whose
    mean gap exceeds `tolerance`. Returns the largest mean and max gaps (metrics)."""
    gaps = [probe_gap(learner, engine) for engine in engines]
    for i, (mean, worst) in enumerate(gaps):
        if not mean <= tolerance:  # NaN fails too
            raise PipelineError(
                f"sync probe: rollout worker {i} scores the probe {mean:.3g} nats/token (max "
                f"{worst:.3g}) away from the learner, above sync.probe_tolerance={tolerance:g}; "
                "its weights passed the fingerprint check but it does not behave like the "
                "learner's policy"
            )
    return {
        "sync/probe_gap_mean": max(m for m, _ in gaps),
        "sync/probe_gap_max": max(w for _, w in gaps),
    }


def check_rollout_logp(metrics: dict[str, float], limit: float | None, step: int) -> None:
    """Stop when a step's rollout-vs-learner log-prob gap exceeds `sync.max_rollout_logp_diff`."""
    gap = metrics.get("actor/rollout_logp_abs_diff")
    if limit is None or gap is None or math.isnan(gap):
        return
    if gap > limit:
        raise PipelineError(
            f"step {step}: actor/rollout_logp_abs_diff={gap:.3g} nats/token exceeds "
            f"sync.max_rollout_logp_diff={limit:g}; the rollout engines do not sample from the "
            "learner's policy (stale or damaged weights?)"
        )
