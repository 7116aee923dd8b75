"""Per-token pieces of the policy loss: clipped surrogates, importance weights, KL estimators.

Every function here returns per-token values [B, T]; turning them into one number is the job of
`rlvr.algorithms.loss.aggregate`. Masked positions (padding, prompt tokens, abstaining
completions) may hold any value, even inf or NaN: they are replaced by neutral values BEFORE any
exp, so neither the loss nor its gradient can pick up a NaN from them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from rlvr.algorithms._registry import lookup


class ClipSettings(Protocol):
    """What a policy loss reads of its settings (`rlvr.algorithms.loss.LossConfig` has these)."""

    clip_low: float
    clip_high: float
    dual_clip: float | None
    gspo_clip_low: float
    gspo_clip_high: float


class PolicyLoss(NamedTuple):
    """What a policy loss returns, all [B, T] and 0 / False at masked positions."""

    loss_BT: Tensor  # per-token loss, to be aggregated
    ratio_BT: Tensor  # the importance ratio that was clipped (detached)
    clip_low_BT: Tensor  # bool: A < 0 and the ratio fell below 1 - clip_low (no gradient)
    clip_high_BT: Tensor  # bool: A > 0 and the ratio rose above 1 + clip_high (no gradient)
    dual_clip_BT: Tensor  # bool: A < 0 and the ratio rose above the dual clip c (no gradient)


def _masked_log_ratio(logp_BT: Tensor, old_logp_BT: Tensor, mask_BT: Tensor) -> Tensor:
    return torch.where(mask_BT, logp_BT - old_logp_BT.detach(), 0.0)


def _clipped_surrogate(
    ratio_BT: Tensor, adv_BT: Tensor, low: float, high: float
) -> tuple[Tensor, Tensor, Tensor]:
    """-min(r A, clip(r, 1 - low, 1 + high) A), and where each side of the clip is active."""
    clipped_BT = ratio_BT.clamp(1.0 - low, 1.0 + high)
    loss_BT = torch.maximum(-ratio_BT * adv_BT, -clipped_BT * adv_BT)
    r_BT = ratio_BT.detach()
    return loss_BT, (adv_BT < 0) & (r_BT < 1.0 - low), (adv_BT > 0) & (r_BT > 1.0 + high)


def ppo_clip_loss(
    logp_BT: Tensor, old_logp_BT: Tensor, adv_BT: Tensor, mask_BT: Tensor, settings: ClipSettings
) -> PolicyLoss:
    """Token-level PPO clip (Schulman et al. 2017, arXiv 1707.06347) as used by GRPO (2402.03300).

    l_t = -min(r_t A_t, clip(r_t, 1 - clip_low, 1 + clip_high) A_t), r_t = exp(logp_t - old_t).
    clip_high > clip_low is DAPO's clip-higher (Yu et al. 2025, arXiv 2503.14476), which leaves
    low-probability tokens room to grow. With settings.dual_clip = c (Ye et al. 2020, dual-clip
    PPO, arXiv 1912.09729; c = 10 in MoPPS), tokens with A_t < 0 get l_t = min(l_t, -c A_t), which
    bounds the loss when r_t is huge. mask_BT: bool or 0/1; masked tokens get loss 0.
    """
    mask_BT = mask_BT.bool()
    adv_BT = torch.where(mask_BT, adv_BT, 0.0)
    ratio_BT = _masked_log_ratio(logp_BT, old_logp_BT, mask_BT).exp()
    loss_BT, low_BT, high_BT = _clipped_surrogate(
        ratio_BT, adv_BT, settings.clip_low, settings.clip_high
    )
    dual_BT = torch.zeros_like(low_BT)
    if settings.dual_clip is not None:
        c = settings.dual_clip
        loss_BT = torch.where(adv_BT < 0, torch.minimum(loss_BT, -c * adv_BT), loss_BT)
        dual_BT = (adv_BT < 0) & (ratio_BT.detach() > c)
    ratio_BT = torch.where(mask_BT, ratio_BT.detach(), 0.0)
    return PolicyLoss(loss_BT, ratio_BT, low_BT, high_BT, dual_BT)


def gspo_loss(
    logp_BT: Tensor, old_logp_BT: Tensor, adv_BT: Tensor, mask_BT: Tensor, settings: ClipSettings
) -> PolicyLoss:
    """GSPO sequence-level clip (Zheng et al. 2025, arXiv 2507.18071).

    s_i = exp(mean_t(logp_t - old_t)) over row i's masked tokens (the length-normalised sequence
    likelihood ratio), broadcast to the row's tokens; l_t = -min(s_i A_t, clip(s_i, 1 -
    gspo_clip_low, 1 + gspo_clip_high) A_t). A_t is the completion's advantage broadcast by the
    caller. The paper weights each sequence equally: that is aggregation "seq-mean-token-mean"
    (with "token-mean" long completions weigh more). A row without masked tokens has s = 1.
    """
    mask_BT = mask_BT.bool()
    adv_BT = torch.where(mask_BT, adv_BT, 0.0)
    log_ratio_BT = _masked_log_ratio(logp_BT, old_logp_BT, mask_BT)
    tokens_B = mask_BT.sum(-1).clamp(min=1)
    seq_ratio_B = (log_ratio_BT.sum(-1) / tokens_B).exp()
    ratio_BT = seq_ratio_B[:, None].expand_as(adv_BT)
    loss_BT, low_BT, high_BT = _clipped_surrogate(
        ratio_BT, adv_BT, settings.gspo_clip_low, settings.gspo_clip_high
    )
    ratio_BT = torch.where(mask_BT, ratio_BT.detach(), 0.0)
    return PolicyLoss(loss_BT, ratio_BT, low_BT, high_BT, torch.zeros_like(low_BT))


PolicyLossFn = Callable[[Tensor, Tensor, Tensor, Tensor, ClipSettings], PolicyLoss]
"""(logp_BT, old_logp_BT, adv_BT, mask_BT bool or 0/1, settings) -> PolicyLoss."""

POLICY_LOSSES: dict[str, PolicyLossFn] = {"ppo": ppo_clip_loss, "gspo": gspo_loss}


def tis_weight(
    old_logp_BT: Tensor, rollout_logp_BT: Tensor, cap: float, mask_BT: Tensor | None = None
) -> Tensor:
    """Truncated importance-sampling weight min(exp(old_t - rollout_t), cap), detached.

    Corrects for the rollout engine (e.g. vLLM) sampling from slightly different probabilities
    than the learner computes (Yao et al. 2025, "Your efficient RL framework secretly brings you
    off-policy RL training"; truncation as in IMPALA's V-trace, Espeholt et al. 2018, arXiv
    1802.01561). Masked positions (mask_BT False) get exp(0) capped, i.e. min(1, cap).
    """
    diff_BT = (old_logp_BT - rollout_logp_BT).detach()
    if mask_BT is not None:
        diff_BT = torch.where(mask_BT.bool(), diff_BT, 0.0)
    return diff_BT.exp().clamp(max=cap)


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = -d = logp - ref_logp. Unbiased for KL(pi || ref) but high variance, can be < 0."""
    return logp - ref_logp


def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = d^2 / 2, d = ref_logp - logp. Biased, low variance, >= 0."""
    return 0.5 * (ref_logp - logp) ** 2


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = exp(d) - d - 1, d = ref_logp - logp. Unbiased, low variance, >= 0 (GRPO's choice)."""
    d = ref_logp - logp
    return torch.expm1(d) - d  # expm1: accurate when d is tiny, i.e. policy close to reference


KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "k3": kl_k3,
}


def kl_estimate(name: str, logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token estimate of KL(pi || ref) from a sample of pi, by name (k1, k2 or k3).

    J. Schulman, "Approximating KL divergence" (2020, joschu.net/blog/kl-approx.html); k3 is the
    estimator of GRPO (arXiv 2402.03300, eq. 4). As LOSS terms their gradients differ: on-policy,
    grad k1 has expectation 0, grad k2 is unbiased for grad KL(pi || ref), grad k3 for grad
    KL(ref || pi). Elementwise; callers sanitise masked positions first.
    """
    return lookup(KL_ESTIMATORS, name, "KL estimator")(logp, ref_logp)
