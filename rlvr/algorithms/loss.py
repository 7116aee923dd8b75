"""The policy-update loss of one micro-batch, normalised by the counts of the whole optimizer step.

Why global counts: a loss such as "mean over the step's tokens" is not a sum of per-micro-batch
means when micro-batches (or data-parallel ranks) hold different numbers of tokens. Dividing each
micro-batch's SUM by the step-wide count makes every aggregation a plain sum over rows, so
accumulating gradients over micro-batches and all-reducing them over ranks gives exactly the
full-batch gradient, whatever the split. Micro-batches must split by whole rows (sequences).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from rlvr.algorithms._registry import lookup
from rlvr.algorithms.policy import POLICY_LOSSES, PolicyLoss, kl_estimate, tis_weight


def _masked(loss_BT: Tensor, mask_BT: Tensor) -> Tensor:
    return torch.where(mask_BT.bool(), loss_BT, 0.0)


def token_mean(loss_BT, mask_BT, *, num_tokens: int, num_seqs: int, max_len=None) -> Tensor:
    """DAPO token-level mean (arXiv 2503.14476): sum of l_t over the step's tokens / num_tokens."""
    return _masked(loss_BT, mask_BT).sum() / max(num_tokens, 1)


def seq_mean_token_mean(
    loss_BT, mask_BT, *, num_tokens: int, num_seqs: int, max_len=None
) -> Tensor:
    """Original GRPO (arXiv 2402.03300): mean over sequences of the mean over each one's tokens.

    sum_i (sum_t l_it / n_i) / num_seqs, rows with no masked token contributing 0.
    """
    tokens_B = mask_BT.bool().sum(-1).clamp(min=1)
    return (_masked(loss_BT, mask_BT).sum(-1) / tokens_B).sum() / max(num_seqs, 1)


def seq_mean_token_sum_norm(
    loss_BT, mask_BT, *, num_tokens: int, num_seqs: int, max_len: int | None = None
) -> Tensor:
    """Dr.GRPO (arXiv 2503.20783): sum of l_t over the step's tokens / (num_seqs * max_len).

    max_len is a constant from the config (L_max), so no length bias enters through the divisor.
    """
    if max_len is None or max_len <= 0:
        raise ValueError(
            f"aggregation 'seq-mean-token-sum-norm' needs max_len > 0, got {max_len!r}"
        )
    return _masked(loss_BT, mask_BT).sum() / (max(num_seqs, 1) * max_len)


AGGREGATIONS: dict[str, Callable[..., Tensor]] = {
    "token-mean": token_mean,
    "seq-mean-token-mean": seq_mean_token_mean,
    "seq-mean-token-sum-norm": seq_mean_token_sum_norm,
}
"""(loss_BT, mask_BT, *, num_tokens, num_seqs, max_len) -> scalar."""


def aggregate(
    name: str,
    loss_BT: Tensor,
    mask_BT: Tensor,
    *,
    num_tokens: int,
    num_seqs: int,
    max_len: int | None = None,
) -> Tensor:
    """Aggregates per-token losses by registry name (see AGGREGATIONS) with GLOBAL step counts.

    num_tokens / num_seqs: masked tokens / rows with >= 1 masked token, over the whole optimizer
    step (all micro-batches, all ranks); see `loss_counts`. A count of 0 divides by 1 (the masked
    sum is then 0 too), so an empty step gives a zero loss with zero gradient.
    """
    fn = lookup(AGGREGATIONS, name, "loss aggregation")
    return fn(
        loss_BT,
        mask_BT,
        num_tokens=_count(num_tokens, "num_tokens"),
        num_seqs=_count(num_seqs, "num_seqs"),
        max_len=max_len,
    )


def _count(value, field: str) -> int:
    count = operator.index(value)  # int or integer 0-dim tensor; rejects floats
    if count < 0:
        raise ValueError(f"{field} must be >= 0, got {count}")
    return count


def loss_counts(mask_BT: Tensor) -> tuple[int, int]:
    """(masked tokens, rows with >= 1 masked token) of one micro-batch.

    Sum these over the optimizer step's micro-batches and all-reduce (sum) over data-parallel
    ranks to get `num_tokens` and `num_seqs` for `microbatch_loss`.
    """
    mask_BT = mask_BT.bool()
    return int(mask_BT.sum()), int(mask_BT.any(-1).sum())


class LossConfig(BaseModel):
    """Knobs of the policy loss (part of the `algorithm` section); docs/algorithms.md."""

    model_config = ConfigDict(extra="forbid", strict=True)

    policy_loss: Literal["ppo", "gspo"] = Field(
        "ppo", description="token-level PPO clip, or GSPO's sequence-level clip"
    )
    clip_low: float = Field(0.2, ge=0.0, lt=1.0, description="ppo: ratio floor 1 - clip_low")
    clip_high: float = Field(
        0.2, ge=0.0, description="ppo: ratio ceiling 1 + clip_high (0.28 = DAPO clip-higher)"
    )
    dual_clip: Optional[float] = Field(
        None, gt=1.0, description="ppo: dual-clip constant c, bounds the loss of A < 0 at -c A"
    )
    gspo_clip_low: float = Field(
        3e-4, ge=0.0, lt=1.0, description="gspo: sequence-ratio floor 1 - gspo_clip_low"
    )
    gspo_clip_high: float = Field(
        4e-4, ge=0.0, description="gspo: sequence-ratio ceiling 1 + gspo_clip_high"
    )
    aggregation: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = Field(
        "token-mean", description="how token losses become one number (global counts)"
    )
    max_len: Optional[int] = Field(
        None,
        ge=1,
        description="L_max of seq-mean-token-sum-norm (default: rollout.max_new_tokens, which "
        "the root config fills in)",
    )
    kl_coef: float = Field(
        0.0, ge=0.0, description="weight of the KL penalty to the initial policy"
    )
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k3", description="KL estimator")
    entropy_coef: float = Field(0.0, ge=0.0, description="entropy bonus")
    tis_cap: Optional[float] = Field(
        None, gt=0.0, description="truncated importance-sampling cap C (rollout vs learner)"
    )

    @model_validator(mode="after")
    def _dual_clip_is_ppo(self) -> LossConfig:
        if self.dual_clip is not None and self.policy_loss != "ppo":
            raise ValueError(
                f"dual_clip={self.dual_clip}: the dual clip applies to policy_loss=ppo only"
            )
        return self


METRIC_KEYS = (
    "loss",
    "policy_term",
    "kl_term",
    "entropy_term",
    "tokens",
    "seqs",
    "clip_low_tokens",
    "clip_high_tokens",
    "dual_clip_tokens",
    "ratio_sum",
    "ratio_sq_sum",
    "ppo_kl_sum",
    "kl_sum",
    "entropy_sum",
    "tis_weight_sum",
    "tis_capped_tokens",
)
"""Keys of microbatch_loss's metrics, always all present: see docs/algorithms.md."""


def microbatch_loss(
    settings: LossConfig,
    logp_BT: Tensor,
    old_logp_BT: Tensor,
    adv_BT: Tensor,
    mask_BT: Tensor,
    *,
    num_tokens: int,
    num_seqs: int,
    entropy_BT: Tensor | None = None,
    ref_logp_BT: Tensor | None = None,
    rollout_logp_BT: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Scalar loss of ONE micro-batch, normalised by the GLOBAL counts of the optimizer step.

    Per token: l_t = w_t * policy_t + kl_coef * k_t - entropy_coef * H_t, where policy_t comes
    from POLICY_LOSSES[settings.policy_loss], w_t = tis_weight(...) when tis_cap is set (else
    1), k_t = kl_estimate(kl_estimator, logp, ref_logp); then aggregate(settings.aggregation).
    All tensors [B, T]; mask_BT bool or 0/1 float (nonzero = in the loss). num_tokens and
    num_seqs count the whole step (see `loss_counts`); summing the returned losses (and their
    gradients) over micro-batches and ranks then equals the full-batch loss (gradient).
    Metrics: detached float64 SUMS keyed by METRIC_KEYS; sum them over micro-batches and ranks.
    """
    mask_BT = _check_inputs(
        logp_BT, old_logp_BT, adv_BT, mask_BT, entropy_BT, ref_logp_BT, rollout_logp_BT
    )

    agg = functools.partial(  # agg(x_BT): aggregate x_BT over this micro-batch, global counts
        aggregate, settings.aggregation, mask_BT=mask_BT,
        num_tokens=num_tokens, num_seqs=num_seqs, max_len=settings.max_len,
    )  # fmt: skip
    pol = lookup(POLICY_LOSSES, settings.policy_loss, "policy loss")(
        logp_BT, old_logp_BT, adv_BT, mask_BT, settings
    )
    tis_BT = None
    if settings.tis_cap is not None:
        _need(rollout_logp_BT, "rollout_logp_BT", "tis_cap is set")
        tis_BT = tis_weight(old_logp_BT, rollout_logp_BT, settings.tis_cap, mask_BT)
    policy_term = agg(pol.loss_BT if tis_BT is None else pol.loss_BT * tis_BT)
    kl_BT, entropy_BT = _kl_and_entropy(settings, logp_BT, mask_BT, ref_logp_BT, entropy_BT)
    zero = logp_BT.new_zeros(())
    kl_term = zero if kl_BT is None else agg(kl_BT)
    entropy_term = zero if entropy_BT is None else agg(entropy_BT)
    loss = policy_term + settings.kl_coef * kl_term - settings.entropy_coef * entropy_term
    terms = {
        "loss": loss,
        "policy_term": policy_term,
        "kl_term": kl_term,
        "entropy_term": entropy_term,
    }
    metrics = {k: v.detach().to(torch.float64) for k, v in terms.items()}
    metrics.update(
        _metric_sums(
            pol, mask_BT, logp_BT, old_logp_BT, kl_BT, entropy_BT, tis_BT, settings.tis_cap
        )
    )
    return loss, {k: metrics[k] for k in METRIC_KEYS}


def _kl_and_entropy(
    settings: LossConfig, logp_BT, mask_BT, ref_logp_BT, entropy_BT
) -> tuple[Tensor | None, Tensor | None]:
    """Per-token KL estimate and entropy, 0 where masked; None when not given.

    One given with coefficient 0 is still measured for the metrics, but detached, so it adds
    nothing to the backward pass.
    """
    if settings.kl_coef > 0:
        _need(ref_logp_BT, "ref_logp_BT", "kl_coef > 0")
    if settings.entropy_coef != 0:
        _need(entropy_BT, "entropy_BT", "entropy_coef != 0")
    kl_BT = None
    if ref_logp_BT is not None:
        live_BT = logp_BT if settings.kl_coef > 0 else logp_BT.detach()
        ref_BT = _masked(ref_logp_BT.detach(), mask_BT)
        kl_BT = kl_estimate(settings.kl_estimator, _masked(live_BT, mask_BT), ref_BT)
        kl_BT = _masked(kl_BT, mask_BT)
    if entropy_BT is not None:
        live_BT = entropy_BT if settings.entropy_coef != 0 else entropy_BT.detach()
        entropy_BT = _masked(live_BT, mask_BT)
    return kl_BT, entropy_BT


def _need(tensor: Tensor | None, name: str, why: str) -> None:
    if tensor is None:
        raise ValueError(f"microbatch_loss needs {name} because {why}")


def _check_inputs(logp_BT, *others) -> Tensor:
    """Checks every given tensor is [B, T] like logp_BT; returns mask_BT (others[2]) as bool."""
    if logp_BT.dim() != 2:
        raise ValueError(f"logp_BT must be [B, T], got shape {tuple(logp_BT.shape)}")
    names = ("old_logp_BT", "adv_BT", "mask_BT", "entropy_BT", "ref_logp_BT", "rollout_logp_BT")
    for name, tensor in zip(names, others):
        if tensor is not None and tensor.shape != logp_BT.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)}, logp_BT {tuple(logp_BT.shape)}"
            )
    mask_BT = others[2]
    return mask_BT if mask_BT.dtype == torch.bool else mask_BT != 0


def _metric_sums(
    pol: PolicyLoss, mask_BT, logp_BT, old_logp_BT, kl_BT, entropy_BT, tis_BT, tis_cap
) -> dict[str, Tensor]:
    """Detached float64 sums over this micro-batch's masked tokens (see METRIC_KEYS)."""

    def total(x_BT: Tensor | None) -> Tensor:
        if x_BT is None:
            return torch.zeros((), dtype=torch.float64, device=mask_BT.device)
        return _masked(x_BT.detach().to(torch.float64), mask_BT).sum()

    # k3 estimate of KL(pi_old || pi) from samples of pi_old: how far this update has moved.
    d_BT = _masked(logp_BT.detach() - old_logp_BT.detach(), mask_BT).to(torch.float64)
    capped_BT = None if tis_BT is None else (tis_BT >= tis_cap)
    return {
        "tokens": total(mask_BT),
        "seqs": mask_BT.any(-1).sum().to(torch.float64),
        "clip_low_tokens": total(pol.clip_low_BT),
        "clip_high_tokens": total(pol.clip_high_BT),
        "dual_clip_tokens": total(pol.dual_clip_BT),
        "ratio_sum": total(pol.ratio_BT),
        "ratio_sq_sum": total(pol.ratio_BT**2),
        "ppo_kl_sum": total(torch.expm1(d_BT) - d_BT),
        "kl_sum": total(kl_BT),
        "entropy_sum": total(entropy_BT),
        "tis_weight_sum": total(tis_BT),
        "tis_capped_tokens": total(capped_BT),
    }
