"""Policy-loss pieces and microbatch_loss: hand-derived values and gradients."""

import math

import pytest
import torch
from pydantic import ValidationError

from rlvr.algorithms import (
    METRIC_KEYS,
    LossConfig,
    aggregate,
    gspo_loss,
    kl_estimate,
    loss_counts,
    microbatch_loss,
    ppo_clip_loss,
    tis_weight,
)

F64 = torch.float64
LN2 = math.log(2.0)


def t64(values):
    return torch.tensor(values, dtype=F64)


def close(actual, expected, atol=1e-12):
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=F64), rtol=0, atol=atol)


def leaf_logp(ratios, old_BT):
    """logp with exp(logp - old) = ratios, as a leaf that collects gradients."""
    return (old_BT + t64(ratios).log()).detach().requires_grad_(True)


def test_ppo_clip_higher_asymmetry():
    # clip_low .2, clip_high .28: allowed ratios [.8, 1.28]. d l / d logp = -r A when the
    # unclipped branch is active (d r / d logp = r), else 0.
    #  r 1.5,  A +1: -min(1.5, 1.28) = -1.28, clipped high, grad 0
    #  r 1.25, A +1: -min(1.25, 1.25) = -1.25 (inside 1.28; symmetric .2 would clip it), grad -1.25
    #  r 0.7,  A -1: -min(-.7, -.8) = .8, clipped low, grad 0
    #  r 0.85, A -1: .85, grad .85
    #  r 1.5,  A -1: -min(-1.5, -1.28) = 1.5: pessimistic side, not clipped, grad 1.5
    #  r 0.5,  A +1: -min(.5, .8) = -.5, not clipped, grad -.5
    old = t64([[-1.0, -2.0, -0.5, -3.0, -1.5, -0.7]])
    logp = leaf_logp([[1.5, 1.25, 0.7, 0.85, 1.5, 0.5]], old)
    adv = t64([[1, 1, -1, -1, -1, 1]])
    mask = torch.ones(1, 6, dtype=torch.bool)
    out = ppo_clip_loss(logp, old, adv, mask, LossConfig(clip_low=0.2, clip_high=0.28))
    close(out.loss_BT, [[-1.28, -1.25, 0.8, 0.85, 1.5, -0.5]])
    out.loss_BT.sum().backward()
    close(logp.grad, [[0.0, -1.25, 0.0, 0.85, 1.5, -0.5]])
    assert out.clip_high_BT.tolist() == [[True, False, False, False, False, False]]
    assert out.clip_low_BT.tolist() == [[False, False, True, False, False, False]]
    # Symmetric .2 clips the r = 1.25, A = +1 token at 1.2.
    sym = ppo_clip_loss(logp, old, adv, mask, LossConfig(clip_low=0.2, clip_high=0.2))
    close(sym.loss_BT[0, 1], -1.2)


def test_ppo_dual_clip():
    # c = 3, clips .2/.28. Dual clip only touches A < 0: l = min(l, -c A).
    #  r 5, A -1:  ppo l = -min(-5, -1.28) = 5 -> min(5, 3) = 3, dual-clipped, grad 0
    #  r 2, A -1:  ppo l = 2 -> min(2, 3) = 2, grad -r A = 2
    #  r 5, A +2:  -min(10, 2.56) = -2.56 (A > 0: untouched), grad 0
    #  r 4, A -.5: ppo l = -min(-2, -.64) = 2 -> min(2, 1.5) = 1.5, dual-clipped, grad 0
    old = t64([[-1.0, -1.0, -2.0, -4.0]])
    logp = leaf_logp([[5.0, 2.0, 5.0, 4.0]], old)
    adv = t64([[-1, -1, 2, -0.5]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    out = ppo_clip_loss(logp, old, adv, mask, LossConfig(clip_high=0.28, dual_clip=3.0))
    close(out.loss_BT, [[3.0, 2.0, -2.56, 1.5]])
    out.loss_BT.sum().backward()
    close(logp.grad, [[0.0, 2.0, 0.0, 0.0]])
    assert out.dual_clip_BT.tolist() == [[True, False, False, True]]


def test_gspo_sequence_ratio_and_clip():
    # Clip range [1 - 3e-4, 1 + 4e-4]. s_i = exp(mean of row i's masked log-ratios).
    #  row 0: log-ratios [2e-4, 4e-4] (+ a masked pad of 100) -> s = e^{3e-4} inside, A +1:
    #         l = -s on both tokens; d(-s)/d logp_t = -s / 2 (s depends on each via the mean)
    #  row 1: [1e-3] * 3 -> s = e^{1e-3} > 1.0004, A +1: l = -1.0004, clipped high, grad 0
    #  row 2: [-1e-3] -> s = e^{-1e-3} < .9997, A -1: l = -min(-s, -.9997) = .9997, clipped, grad 0
    #  row 3: [-2e-4, 0] -> s = e^{-1e-4}, A -1: l = s, grad -s A / 2 = s / 2
    log_r = t64([[2e-4, 4e-4, 100.0], [1e-3, 1e-3, 1e-3], [-1e-3, 5.0, 5.0], [-2e-4, 0.0, 7.0]])
    mask = t64([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]])  # a 0/1 float mask works too
    old = torch.full((4, 3), -2.0, dtype=F64)
    logp = (old + log_r).requires_grad_(True)
    adv = t64([[1.0] * 3, [1.0] * 3, [-1.0] * 3, [-1.0] * 3])
    out = gspo_loss(logp, old, adv, mask, LossConfig(policy_loss="gspo"))
    s0, s3 = math.exp(3e-4), math.exp(-1e-4)
    close(out.loss_BT, [[-s0, -s0, 0], [-1.0004] * 3, [0.9997, 0, 0], [s3, s3, 0]])
    out.loss_BT.sum().backward()
    # row 0: two tokens each -s0, each token's logp moves s by s/2: grad = 2 * (-s0 / 2) = -s0
    close(logp.grad, [[-s0, -s0, 0], [0, 0, 0], [0, 0, 0], [s3, s3, 0]])
    assert out.clip_high_BT.tolist() == [[False] * 3, [True] * 3, [False] * 3, [False] * 3]
    assert out.clip_low_BT.tolist() == [[False] * 3, [False] * 3, [True, False, False], [False] * 3]


def test_kl_estimators_at_log2():
    # d = ref - logp. d = ln 2: k1 = -ln2, k2 = ln2^2 / 2, k3 = e^{ln2} - ln2 - 1 = 1 - ln2
    # d = -ln 2: k1 = ln2, k2 = ln2^2 / 2, k3 = 1/2 + ln2 - 1 = ln2 - 1/2;  d = 0: all 0
    logp = t64([-1.0, -1.0, -1.0])
    ref = t64([-1.0 + LN2, -1.0 - LN2, -1.0])
    close(kl_estimate("k1", logp, ref), [-LN2, LN2, 0.0], atol=1e-15)
    close(kl_estimate("k2", logp, ref), [LN2**2 / 2, LN2**2 / 2, 0.0], atol=1e-15)
    close(kl_estimate("k3", logp, ref), [1 - LN2, LN2 - 0.5, 0.0], atol=1e-15)


def test_tis_weight_caps_and_masks():
    # old - rollout = ln 3 -> min(3, 2) = 2; ln 1.5 -> 1.5; -ln 2 -> .5; masked (garbage) -> e^0 = 1
    old = t64([[math.log(3), math.log(1.5), -LN2, float("nan")]])
    rollout = torch.zeros(1, 4, dtype=F64)
    mask = torch.tensor([[True, True, True, False]])
    close(tis_weight(old, rollout, 2.0, mask), [[2.0, 1.5, 0.5, 1.0]], atol=1e-15)


def test_aggregations_hand_values_with_global_counts():
    # Masked sums: row 0 = 1 + 2 + 3 = 6 (3 tokens), row 1 = 4 (1 token), row 2 fully masked.
    # Pads hold NaN / inf and must not leak.
    nan, inf = float("nan"), float("inf")
    loss = t64([[1, 2, 3, nan], [4, inf, nan, 0], [nan, nan, nan, nan]])
    mask = t64([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert loss_counts(mask) == (4, 2)
    # token-mean: 10 / 4; with a global count of 8 (other micro-batches hold 4 more): 10 / 8
    close(aggregate("token-mean", loss, mask, num_tokens=4, num_seqs=2), 2.5)
    close(aggregate("token-mean", loss, mask, num_tokens=8, num_seqs=5), 1.25)
    # seq-mean-token-mean: (6/3 + 4/1) / num_seqs = 6 / 2 = 3; with num_seqs 4: 1.5
    close(aggregate("seq-mean-token-mean", loss, mask, num_tokens=4, num_seqs=2), 3.0)
    close(aggregate("seq-mean-token-mean", loss, mask, num_tokens=9, num_seqs=4), 1.5)
    # seq-mean-token-sum-norm: 10 / (num_seqs * L_max) = 10 / (2 * 4) = 1.25
    close(
        aggregate("seq-mean-token-sum-norm", loss, mask, num_tokens=4, num_seqs=2, max_len=4), 1.25
    )
    # An empty step: zero loss, not NaN
    close(aggregate("token-mean", loss, torch.zeros_like(mask), num_tokens=0, num_seqs=0), 0.0)


def test_microbatch_loss_all_terms_hand_values():
    # token-mean, ppo .2/.2, kl_coef .1 (k3), entropy_coef .01, tis_cap 2. Two real tokens:
    #  t1: r 1, A +1, ref - logp = ln2 (k3 = 1 - ln2), H 1.5, old - rollout = ln3 (w = 2)
    #      policy l = -1 * w = -2
    #  t2: r 1, A -1, ref = logp (k3 = 0),            H .5,  old = rollout (w = 1): l = 1
    #  t3: masked, garbage everywhere.
    # policy = (-2 + 1)/2 = -.5; kl = (1 - ln2)/2; entropy = (1.5 + .5)/2 = 1
    # loss = -.5 + .1 (1 - ln2)/2 - .01 * 1
    # grads (/2 from token-mean): t1: policy -r A w / 2 = -1; kl .1/2 * d k3/d logp =
    #   .05 * -(e^{ln2} - 1) = -.05 -> -1.05;  t2: policy -(1)(-1)(1)/2 = .5, kl 0 -> .5
    #   entropy gradient: -.01 / 2 per real token.
    nan = float("nan")
    old = t64([[-1.0, -2.0, 1000.0]])
    logp = t64([[-1.0, -2.0, -1000.0]]).requires_grad_(True)
    entropy = t64([[1.5, 0.5, nan]]).requires_grad_(True)
    adv = t64([[1.0, -1.0, nan]])
    ref = t64([[-1.0 + LN2, -2.0, -float("inf")]])
    rollout = t64([[-1.0 - math.log(3), -2.0, nan]])
    mask = t64([[1.0, 1.0, 0.0]])
    settings = LossConfig(kl_coef=0.1, entropy_coef=0.01, tis_cap=2.0)
    loss, m = microbatch_loss(
        settings, logp, old, adv, mask, num_tokens=2, num_seqs=1,
        entropy_BT=entropy, ref_logp_BT=ref, rollout_logp_BT=rollout,
    )  # fmt: skip
    close(loss, -0.5 + 0.1 * (1 - LN2) / 2 - 0.01)
    loss.backward()
    close(logp.grad, [[-1.05, 0.5, 0.0]])
    close(entropy.grad, [[-0.005, -0.005, 0.0]])
    assert tuple(m) == METRIC_KEYS
    expected = {
        "loss": -0.5 + 0.1 * (1 - LN2) / 2 - 0.01, "policy_term": -0.5,
        "kl_term": (1 - LN2) / 2, "entropy_term": 1.0, "tokens": 2, "seqs": 1,
        "clip_low_tokens": 0, "clip_high_tokens": 0, "dual_clip_tokens": 0,
        "ratio_sum": 2, "ratio_sq_sum": 2, "ppo_kl_sum": 0, "kl_sum": 1 - LN2,
        "entropy_sum": 2, "tis_weight_sum": 3, "tis_capped_tokens": 1,
    }  # fmt: skip
    for key, value in expected.items():
        assert m[key].dtype == F64 and not m[key].requires_grad, key
        close(m[key], value)


def test_metrics_count_clipped_tokens_and_drift():
    # The clip-higher tokens of test_ppo_clip_higher_asymmetry: 1 clipped high, 1 clipped low.
    # ratio_sum = 1.5 + 1.25 + .7 + .85 + 1.5 + .5 = 6.3
    # ppo_kl_sum = sum (r - 1 - ln r) (k3 of KL(old || pi) with d = logp - old = ln r)
    ratios = [1.5, 1.25, 0.7, 0.85, 1.5, 0.5]
    old = torch.zeros(1, 6, dtype=F64)
    logp = leaf_logp([ratios], old)
    adv = t64([[1, 1, -1, -1, -1, 1]])
    settings = LossConfig(clip_high=0.28)
    _, m = microbatch_loss(settings, logp, old, adv, torch.ones(1, 6), num_tokens=6, num_seqs=1)
    close(m["clip_high_tokens"], 1.0)
    close(m["clip_low_tokens"], 1.0)
    close(m["ratio_sum"], 6.3)
    close(m["ratio_sq_sum"], sum(r * r for r in ratios))
    close(m["ppo_kl_sum"], sum(r - 1 - math.log(r) for r in ratios))


def test_settings_validation_and_unknown_names():
    # The config is a pydantic model: a bad value raises ValidationError (a ValueError) naming
    # the field and what it accepts.
    with pytest.raises(ValidationError, match=r"policy_loss\s+Input should be 'ppo' or 'gspo'"):
        LossConfig(policy_loss="grpo")
    with pytest.raises(
        ValidationError,
        match=r"aggregation\s+Input should be 'token-mean', 'seq-mean-token-mean' or "
        r"'seq-mean-token-sum-norm'",
    ):
        LossConfig(aggregation="sum")
    with pytest.raises(ValidationError, match=r"kl_estimator\s+Input should be 'k1', 'k2' or 'k3'"):
        LossConfig(kl_estimator="k4")
    with pytest.raises(KeyError, match="valid: k1, k2, k3"):
        kl_estimate("mse", t64([0.0]), t64([0.0]))
    with pytest.raises(KeyError, match="valid: seq-mean-token-mean"):
        aggregate("mean", t64([[1.0]]), t64([[1.0]]), num_tokens=1, num_seqs=1)
    with pytest.raises(ValidationError, match="max_len"):
        LossConfig(aggregation="seq-mean-token-sum-norm", max_len=0)
    with pytest.raises(ValidationError, match="dual_clip"):
        LossConfig(dual_clip=0.5)
    with pytest.raises(ValidationError, match="dual_clip"):
        LossConfig(policy_loss="gspo", dual_clip=3.0)
    with pytest.raises(ValidationError, match="clip_low"):
        LossConfig(clip_low=1.0)


def test_sum_norm_without_max_len_fails_at_the_loss():
    # max_len is filled in by the root config (rollout.max_new_tokens), so the section alone
    # may leave it unset; the loss then refuses to run rather than divide by a guess.
    settings = LossConfig(aggregation="seq-mean-token-sum-norm")
    assert settings.max_len is None
    x = torch.zeros(1, 2, dtype=F64)
    mask = torch.ones(1, 2)
    with pytest.raises(ValueError, match="max_len"):
        microbatch_loss(settings, x, x, x, mask, num_tokens=2, num_seqs=1)
    with pytest.raises(ValueError, match="max_len"):
        aggregate("seq-mean-token-sum-norm", x, mask, num_tokens=2, num_seqs=1)


def test_microbatch_loss_requires_inputs_its_settings_use():
    x = torch.zeros(1, 2, dtype=F64)
    mask = torch.ones(1, 2)
    for settings, missing in [
        (LossConfig(kl_coef=0.1), "ref_logp_BT"),
        (LossConfig(entropy_coef=0.01), "entropy_BT"),
        (LossConfig(tis_cap=2.0), "rollout_logp_BT"),
    ]:
        with pytest.raises(ValueError, match=missing):
            microbatch_loss(settings, x, x, x, mask, num_tokens=2, num_seqs=1)
    with pytest.raises(ValueError, match="adv_BT has shape"):
        microbatch_loss(LossConfig(), x, x, x[:, :1], mask, num_tokens=2, num_seqs=1)
    with pytest.raises(ValueError, match="num_tokens must be >= 0"):
        microbatch_loss(LossConfig(), x, x, x, mask, num_tokens=-1, num_seqs=1)
