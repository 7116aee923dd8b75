"""The per-step metrics of the training loop, from rollouts and from the learners' sums."""

from __future__ import annotations

import math

import torch

from rlvr.algorithms import split_advantages
from rlvr.train.rollouts import Rollouts
from rollout.types import FINISH_LENGTH


def rollout_metrics(
    batch: Rollouts, keep_N: torch.Tensor, times: dict[str, float]
) -> dict[str, float]:
    comps, scores = batch.comps, batch.scores
    verified = ~scores.error_N
    rewards = scores.reward_N[verified]
    acc_P = batch.stats.acc_P
    solved = acc_P[~acc_P.isnan()]
    gen_tokens = int(comps.length_N.sum())
    gen_time = times.get("time/generate", 0.0) + times.get("time/expand", 0.0)
    return {
        "reward/mean": rewards.mean().item() if rewards.numel() else math.nan,
        "reward/std": rewards.std(unbiased=False).item() if rewards.numel() else math.nan,
        "train/pass@1": scores.correct_N[verified].float().mean().item()
        if rewards.numel()
        else math.nan,
        "verify/errors": int(scores.error_N.sum()),
        "groups/solved_none": (solved == 0).float().mean().item() if solved.numel() else math.nan,
        "groups/solved_partly": ((solved > 0) & (solved < 1)).float().mean().item()
        if solved.numel()
        else math.nan,
        "groups/solved_all": (solved == 1).float().mean().item() if solved.numel() else math.nan,
        "groups/trained_completions": int(keep_N.sum()),
        "rollout/completions": len(comps),
        "rollout/extra_completions": int(batch.extra_P.sum()),
        "length/mean": comps.length_N.float().mean().item(),
        "length/max": int(comps.length_N.max()),
        "length/truncated_frac": sum(r == FINISH_LENGTH for r in comps.finish_reason) / len(comps),
        "throughput/gen_tokens_per_s": gen_tokens / gen_time if gen_time > 0 else math.nan,
    }


def reward_metrics(
    batch: Rollouts, adv_N: torch.Tensor, keep_N: torch.Tensor, advantage: str
) -> dict[str, float]:
    """Per reward component (rewards/components.py): reward/<name>/mean, its own score averaged
    over the completions that use it and got a verdict from it; /errors; and /adv_share, its
    share of the advantage signal over the trained completions,
    sum_i A_ci sign(A_i) / sum_i |A_i| with A_ci its part of A_i (`split_advantages`). The
    shares sum to 1; a negative share means the component pulls against the others."""
    scores = batch.scores
    parts_CN = split_advantages(
        advantage, scores.part_CN(), adv_N.double(), batch.comps.prompt_index_N
    )
    sign_N = torch.sign(adv_N.double()) * keep_N
    signal = float((adv_N.double().abs() * keep_N).sum())
    out: dict[str, float] = {}
    for c, name in enumerate(scores.names):
        error_N = scores.error_CN[c]
        verdict_N = ~torch.isnan(scores.score_CN[c]) & ~error_N
        own = scores.score_CN[c][verdict_N]
        out[f"reward/{name}/mean"] = own.mean().item() if own.numel() else math.nan
        out[f"reward/{name}/errors"] = int(error_N.sum())
        share = float((parts_CN[c] * sign_N).sum()) / signal if signal > 0 else math.nan
        out[f"reward/{name}/adv_share"] = share
    return out


def learner_metrics(rank_sums: list[dict[str, float]]) -> dict[str, float]:
    """Combine the ranks' metric sums (rlvr.algorithms.METRIC_KEYS plus the learner's own)."""
    if not rank_sums:
        return {"update/skipped": 1}
    total: dict[str, float] = {}
    for sums in rank_sums:
        for key, value in sums.items():
            total[key] = total.get(key, 0.0) + value
    steps = rank_sums[0].get("optimizer_steps", 1) or 1
    tokens = total.get("tokens", 0.0) or math.nan
    logp_tokens = total.get("rollout_logp_tokens", 0.0) or math.nan
    return {
        "update/skipped": 0,
        "loss/total": total.get("loss", 0.0) / steps,
        "loss/policy": total.get("policy_term", 0.0) / steps,
        "loss/kl_term": total.get("kl_term", 0.0) / steps,
        "actor/entropy": total.get("entropy_sum", 0.0) / tokens,
        "actor/kl_ref": total.get("kl_sum", 0.0) / tokens,
        "actor/ppo_kl": total.get("ppo_kl_sum", 0.0) / tokens,
        "actor/ratio_mean": total.get("ratio_sum", 0.0) / tokens,
        "actor/clip_frac": (total.get("clip_low_tokens", 0.0) + total.get("clip_high_tokens", 0.0))
        / tokens,
        "actor/dual_clip_frac": total.get("dual_clip_tokens", 0.0) / tokens,
        "actor/tis_weight_mean": total.get("tis_weight_sum", 0.0) / tokens,
        "actor/grad_norm": rank_sums[0].get("grad_norm_sum", 0.0) / steps,
        "actor/lr": rank_sums[0].get("lr", math.nan),
        "actor/optimizer_steps": steps,
        "actor/rollout_logp_abs_diff": total.get("rollout_logp_diff_sum", 0.0) / logp_tokens,
        "actor/tokens_per_step": total.get("tokens", 0.0) / steps,
        # share of the forward passes' token slots that were padding (0 when packed)
        "actor/padding_waste": 1.0
        - total.get("micro_batch_tokens", 0.0) / (total.get("micro_batch_slots", 0.0) or math.nan),
        "learner/peak_rss_mb": max(r.get("peak_rss_mb", math.nan) for r in rank_sums),
        "learner/trainable_params": rank_sums[0].get("trainable_params", math.nan),
    }
