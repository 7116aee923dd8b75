"""Pure RLVR maths: advantages, policy losses, aggregation, DAPO length shaping, pass@k.

Torch only: no Ray, DeepSpeed, vLLM or I/O, so the controller, the learner and the tests import
it anywhere. Each family is a registry of short names with one shared signature; an unknown name
raises UnknownNameError (a KeyError and a ValueError) listing the valid ones. The formulas, their
defaults and the global-normalisation rule are in docs/algorithms.md.
"""

from rlvr.algorithms._registry import UnknownNameError
from rlvr.algorithms.advantages import (
    ADVANTAGES,
    AdvantageConfig,
    compute_advantages,
    grpo_advantages,
    rloo_advantages,
    split_advantages,
)
from rlvr.algorithms.eval_stats import mean_with_ci, pass_at_k
from rlvr.algorithms.loss import (
    AGGREGATIONS,
    METRIC_KEYS,
    LossConfig,
    aggregate,
    loss_counts,
    microbatch_loss,
    seq_mean_token_mean,
    seq_mean_token_sum_norm,
    token_mean,
)
from rlvr.algorithms.overlong import OverlongConfig, overlong_filter, overlong_penalty
from rlvr.algorithms.policy import (
    KL_ESTIMATORS,
    POLICY_LOSSES,
    PolicyLoss,
    gspo_loss,
    kl_estimate,
    kl_k1,
    kl_k2,
    kl_k3,
    ppo_clip_loss,
    tis_weight,
)

__all__ = [
    "ADVANTAGES",
    "AdvantageConfig",
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "METRIC_KEYS",
    "POLICY_LOSSES",
    "LossConfig",
    "OverlongConfig",
    "PolicyLoss",
    "UnknownNameError",
    "aggregate",
    "compute_advantages",
    "grpo_advantages",
    "gspo_loss",
    "kl_estimate",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "loss_counts",
    "mean_with_ci",
    "microbatch_loss",
    "overlong_filter",
    "overlong_penalty",
    "pass_at_k",
    "ppo_clip_loss",
    "rloo_advantages",
    "seq_mean_token_mean",
    "split_advantages",
    "seq_mean_token_sum_norm",
    "tis_weight",
    "token_mean",
]
