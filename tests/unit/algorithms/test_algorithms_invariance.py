"""Global normalisation: the step's gradient must not depend on how rows are split.

The whole batch at once, 8 micro-batches, and 2 data-parallel shards each split into micro-batches
must give the same gradient (float64, 1e-10) when every piece is normalised by the global counts.
"""

import pytest
import torch

from rlvr.algorithms import METRIC_KEYS, LossConfig, loss_counts, microbatch_loss

F64 = torch.float64
B, T = 12, 10
# (start, length) of each row's completion tokens; rows 2 and 9 are fully masked.
SPANS = [
    (0, 10), (2, 7), (0, 0), (5, 3), (9, 1), (0, 10),
    (3, 5), (1, 8), (4, 2), (6, 0), (2, 6), (3, 4),
]  # fmt: skip

FULL = [list(range(B))]
MICRO_8 = [[0], [1, 2], [3], [4], [5, 6], [7, 8], [9], [10, 11]]
# Two ranks holding interleaved rows, each rank split into micro-batches of unequal size.
SHARDS = [[[0, 2], [4], [6, 8, 10]], [[1], [3, 5, 7], [9, 11]]]

CONFIGS = {
    "ppo": dict(policy_loss="ppo", clip_high=0.28),
    "ppo+dual+kl+entropy+tis": dict(
        policy_loss="ppo", clip_high=0.28, dual_clip=1.5, kl_coef=0.05, kl_estimator="k3",
        entropy_coef=0.01, tis_cap=2.0,
    ),
    "gspo+kl-k2": dict(policy_loss="gspo", kl_coef=0.1, kl_estimator="k2"),
}  # fmt: skip
AGGREGATIONS = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


def make_batch(log_ratio_scale: float, float_mask: bool):
    gen = torch.Generator().manual_seed(1234)
    mask = torch.zeros(B, T, dtype=torch.bool)
    for row, (start, length) in enumerate(SPANS):
        mask[row, start : start + length] = True
    logp = -3 * torch.rand(B, T, generator=gen, dtype=F64)
    batch = {
        "logp_BT": logp,
        "old_logp_BT": logp + log_ratio_scale * torch.randn(B, T, generator=gen, dtype=F64),
        "adv_BT": torch.randn(B, 1, generator=gen, dtype=F64).expand(B, T).clone(),
        "mask_BT": mask.to(F64) if float_mask else mask,
        "entropy_BT": 2 * torch.rand(B, T, generator=gen, dtype=F64),
        "ref_logp_BT": logp + 0.2 * torch.randn(B, T, generator=gen, dtype=F64),
    }
    noise = torch.randn(B, T, generator=gen, dtype=F64)
    batch["rollout_logp_BT"] = batch["old_logp_BT"] + 0.5 * noise
    batch["logp_BT"] = batch["logp_BT"].clone().requires_grad_(True)
    batch["entropy_BT"] = batch["entropy_BT"].clone().requires_grad_(True)
    return batch


def accumulate(settings, batch, ranks, global_counts: bool = True):
    """Sum of losses, gradients (logp, entropy) and metrics over ranks x micro-batches."""
    leaves = [batch["logp_BT"], batch["entropy_BT"]]
    counts = [loss_counts(batch["mask_BT"][rows]) for micro in ranks for rows in micro]
    num_tokens, num_seqs = (sum(c[0] for c in counts), sum(c[1] for c in counts))
    loss_sum, grads, metrics = 0.0, [torch.zeros(B, T, dtype=F64) for _ in leaves], {}
    for micro in ranks:
        for rows in micro:
            part = {k: v[rows] for k, v in batch.items()}
            if not global_counts:
                num_tokens, num_seqs = loss_counts(part["mask_BT"])
            loss, m = microbatch_loss(
                settings, part.pop("logp_BT"), part.pop("old_logp_BT"), part.pop("adv_BT"),
                part.pop("mask_BT"), num_tokens=num_tokens, num_seqs=num_seqs, **part,
            )  # fmt: skip
            loss_sum += loss.item()
            for acc, g in zip(grads, torch.autograd.grad(loss, leaves, allow_unused=True)):
                acc += 0 if g is None else g
            for k, v in m.items():
                metrics[k] = metrics.get(k, 0.0) + v
    return loss_sum, grads, metrics, (num_tokens, num_seqs)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_gradient_invariant_to_microbatch_and_shard_split(config, aggregation):
    gspo = config.startswith("gspo")
    settings = LossConfig(aggregation=aggregation, max_len=T, **CONFIGS[config])
    batch = make_batch(log_ratio_scale=1e-3 if gspo else 0.3, float_mask=config == "ppo")
    loss_full, grads_full, metrics_full, counts = accumulate(settings, batch, [FULL])
    # 12 rows, 2 fully masked; tokens = 10+7+3+1+10+5+8+2+6+4 = 56
    assert counts == (56, 10)
    assert grads_full[0].norm() > 1e-2  # a real gradient, not vacuously equal zeros
    assert grads_full[0][[2, 9]].abs().max() == 0  # fully masked rows get nothing
    # Every clip in play is actually hit somewhere in the batch.
    assert metrics_full["clip_low_tokens"] + metrics_full["clip_high_tokens"] > 0
    assert settings.dual_clip is None or metrics_full["dual_clip_tokens"] > 0
    assert settings.tis_cap is None or metrics_full["tis_capped_tokens"] > 0
    for ranks in ([MICRO_8], SHARDS):
        loss_split, grads_split, metrics_split, counts_split = accumulate(settings, batch, ranks)
        assert counts_split == counts
        assert abs(loss_split - loss_full) < 1e-10
        for g_split, g_full in zip(grads_split, grads_full):
            torch.testing.assert_close(g_split, g_full, rtol=0, atol=1e-10)
        for key in METRIC_KEYS:
            torch.testing.assert_close(metrics_split[key], metrics_full[key], rtol=0, atol=1e-10)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_local_normalisation_would_break_invariance(aggregation):
    # The control: normalising each micro-batch by its own counts changes the gradient, so the
    # test above can tell global from local normalisation.
    settings = LossConfig(aggregation=aggregation, max_len=T, clip_high=0.28)
    batch = make_batch(log_ratio_scale=0.3, float_mask=False)
    _, grads_full, _, _ = accumulate(settings, batch, [FULL])
    _, grads_local, _, _ = accumulate(settings, batch, [MICRO_8], global_counts=False)
    assert (grads_local[0] - grads_full[0]).abs().max() > 1e-2
