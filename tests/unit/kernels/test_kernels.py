"""Parity, hand-derived and invariance tests for kernels.logprobs_entropy (CPU).

Tolerances (measured on this suite's cases over 6 seeds, then given margin; docs/kernels.md):
- fp32 (and the forward of bf16 inputs, which is computed in fp32 from the same values):
  max |chunked - reference| <= 1e-5 * max(1, max |reference|). Worst measured: 1.2e-6.
- bf16 gradients: |chunked - reference| <= 2**-6 |reference| + 1e-6 * max(1, max |reference|)
  elementwise, i.e. two bf16 ulps: both compute in fp32 and round once to bf16, so they differ
  by at most one ulp where fp32 summation order moves a value across a rounding boundary.
  Worst measured: one ulp (2**-7 relative) plus 6e-8 of the scale.
"""

import math
import subprocess
import sys

import pytest
import torch

import kernels

FP32_TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


def make_inputs(T, H, V, dtype=torch.float32, *, seed=0, masked=0.2):
    """Hidden states, an LM-head-like weight (logits of order 1) and targets with ignores."""
    gen = torch.Generator().manual_seed(seed)
    hidden_TH = torch.randn(T, H, generator=gen)
    weight_VH = torch.randn(V, H, generator=gen) * (1.5 / math.sqrt(H))
    targets_T = torch.randint(0, V, (T,), generator=gen)
    targets_T[torch.rand(T, generator=gen) < masked] = kernels.IGNORE_INDEX
    coef_logp_T = torch.randn(T, generator=gen)
    coef_entropy_T = torch.randn(T, generator=gen)
    return hidden_TH.to(dtype), weight_VH.to(dtype), targets_T, coef_logp_T, coef_entropy_T


def run(hidden_TH, weight_VH, targets_T, coef_logp_T, coef_entropy_T, temperature, **kw):
    """Forward, then backward of sum(c1 * logp + c2 * entropy): (logp, entropy, dh, dW)."""
    hidden_TH = hidden_TH.detach().requires_grad_()
    weight_VH = weight_VH.detach().requires_grad_()
    logp_T, entropy_T = kernels.logprobs_entropy(hidden_TH, weight_VH, targets_T, temperature, **kw)
    loss = coef_logp_T.to(logp_T.dtype) * logp_T + coef_entropy_T.to(logp_T.dtype) * entropy_T
    loss.sum().backward()
    return logp_T.detach(), entropy_T.detach(), hidden_TH.grad, weight_VH.grad


def assert_scaled_close(actual, expected, tol=FP32_TOL):
    scale = max(1.0, expected.abs().max().item())
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= tol * scale, f"max error {err:.3e} > {tol:.0e} * {scale:.3g}"


# (T, H, V, vocab_chunk, token_chunk, temperature): vocabularies that are not multiples of
# the chunk, several token blocks, one block covering everything, temperatures != 1.
SHAPES = [
    (64, 32, 1000, 256, None, 1.0),
    (50, 48, 1037, 128, 16, 0.6),
    (128, 64, 5000, 512, 40, 1.3),
    (33, 40, 257, 1000, 7, 2.0),  # vocab chunk wider than the vocabulary
    (300, 96, 3001, 1024, 128, 0.9),
]


@pytest.mark.parametrize("T,H,V,vocab_chunk,token_chunk,temperature", SHAPES)
def test_chunked_matches_reference_fp32(T, H, V, vocab_chunk, token_chunk, temperature):
    args = make_inputs(T, H, V)
    ref = run(*args, temperature, impl="reference")
    got = run(*args, temperature, impl="chunked", vocab_chunk=vocab_chunk, token_chunk=token_chunk)
    for name, actual, expected in zip(("logp", "entropy", "dh", "dW"), got, ref):
        assert actual.dtype == expected.dtype == torch.float32, name
        assert_scaled_close(actual, expected)


@pytest.mark.parametrize("T,H,V,vocab_chunk,token_chunk,temperature", SHAPES[:3])
def test_chunked_matches_reference_bf16(T, H, V, vocab_chunk, token_chunk, temperature):
    args = make_inputs(T, H, V, torch.bfloat16)
    ref = run(*args, temperature, impl="reference")
    got = run(*args, temperature, impl="chunked", vocab_chunk=vocab_chunk, token_chunk=token_chunk)
    assert got[0].dtype == got[1].dtype == torch.float32  # outputs are fp32 for bf16 inputs
    assert got[2].dtype == got[3].dtype == torch.bfloat16  # gradients come back in bf16
    assert_scaled_close(got[0], ref[0])
    assert_scaled_close(got[1], ref[1])
    for actual, expected in zip(got[2:], ref[2:]):
        scale = max(1.0, expected.abs().max().item())
        torch.testing.assert_close(
            actual.double(), expected.double(), rtol=2**-6, atol=1e-6 * scale
        )


def test_fp64_matches_reference_to_rounding_and_passes_gradcheck():
    """fp64 inputs are computed in fp64: the chunked formulas equal autograd's to 1e-12."""
    hidden_TH, weight_VH, targets_T, c1_T, c2_T = make_inputs(9, 5, 23, torch.float64)
    ref = run(hidden_TH, weight_VH, targets_T, c1_T, c2_T, 0.8, impl="reference")
    got = run(
        hidden_TH,
        weight_VH,
        targets_T,
        c1_T,
        c2_T,
        0.8,
        impl="chunked",
        vocab_chunk=5,
        token_chunk=4,
    )
    for actual, expected in zip(got, ref):
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)

    def loss(h, w):  # finite differences check the hand-written backward independently
        logp_T, entropy_T = kernels.logprobs_entropy(
            h, w, targets_T, 0.8, impl="chunked", vocab_chunk=5, token_chunk=4
        )
        return c1_T.double() @ logp_T + c2_T.double() @ entropy_T

    assert torch.autograd.gradcheck(
        loss, (hidden_TH.requires_grad_(), weight_VH.requires_grad_()), eps=1e-6, atol=1e-8
    )


def test_reference_neg_p_log_p_derivative():
    """The one hand-written derivative in the reference, -exp(x) x, against finite differences."""
    from kernels.reference import _NegPLogP

    logp_TV = torch.log_softmax(torch.randn(3, 5, dtype=torch.float64), dim=-1)
    assert torch.autograd.gradcheck(_NegPLogP.apply, (logp_TV.requires_grad_(),))


@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_uniform_logits_hand_derived(impl):
    """hidden = 0 makes every logit 0: p = 1/V, so logp = -log V and entropy = log V.

    Gradients by hand, with z = h W^T / T, a = dL/dlogp, b = dL/dentropy:
    dL/dz_j = a ([j = y] - 1/V) - b (1/V)(log(1/V) + log V) = a ([j = y] - 1/V), so
    dL/dh = a (W[y] - mean_v W[v]) / T, and dL/dW = dz^T h / T = 0 because h = 0.
    """
    V, H, T, temperature = 7, 3, 4, 0.5
    weight_VH = torch.arange(V * H, dtype=torch.float32).reshape(V, H) / 10
    targets_T = torch.tensor([0, 6, 3, 3])
    coef_logp_T = torch.tensor([1.0, -2.0, 0.5, 3.0])
    coef_entropy_T = torch.tensor([4.0, 1.0, -1.0, 2.0])
    logp_T, entropy_T, dh_TH, dW_VH = run(
        torch.zeros(T, H),
        weight_VH,
        targets_T,
        coef_logp_T,
        coef_entropy_T,
        temperature,
        impl=impl,
        vocab_chunk=3,
    )
    torch.testing.assert_close(logp_T, torch.full((T,), -math.log(V)), rtol=0, atol=1e-6)
    torch.testing.assert_close(entropy_T, torch.full((T,), math.log(V)), rtol=0, atol=1e-6)
    expected_dh_TH = coef_logp_T[:, None] * (weight_VH[targets_T] - weight_VH.mean(0)) / 0.5
    torch.testing.assert_close(dh_TH, expected_dh_TH, rtol=0, atol=1e-5)
    assert torch.equal(dW_VH, torch.zeros(V, H))


@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_two_word_vocabulary_hand_derived(impl):
    """Logits (0, log 3): p = (1/4, 3/4), so logp(0) = -log 4, logp(1) = log 3 - log 4 and
    entropy = -(1/4 log 1/4 + 3/4 log 3/4) = log 4 - (3/4) log 3 = 0.5623351446.

    With h = 1 and W = (0, log 3), dz/dh = W. dlogp(0)/dz = onehot - p = (3/4, -3/4), so
    dlogp(0)/dh = -(3/4) log 3. dentropy/dz_j = -p_j (log p_j + entropy); log(3/4) + entropy
    = (1/4) log 3, so dentropy/dz_1 = -(3/16) log 3 and dentropy/dh = -(3/16) (log 3)^2.
    """
    weight_VH = torch.tensor([[0.0], [math.log(3.0)]])
    logp_T, entropy_T, dh_TH, _ = run(
        torch.ones(1, 1),
        weight_VH,
        torch.tensor([0]),
        torch.tensor([1.0]),
        torch.tensor([0.0]),
        1.0,
        impl=impl,
    )
    assert logp_T.item() == pytest.approx(-math.log(4.0), abs=1e-6)
    assert entropy_T.item() == pytest.approx(math.log(4.0) - 0.75 * math.log(3.0), abs=1e-6)
    assert dh_TH.item() == pytest.approx(-0.75 * math.log(3.0), abs=1e-6)
    *_, dh_entropy_TH, _ = run(
        torch.ones(1, 1),
        weight_VH,
        torch.tensor([0]),
        torch.tensor([0.0]),
        torch.tensor([1.0]),
        1.0,
        impl=impl,
    )
    assert dh_entropy_TH.item() == pytest.approx(-(3 / 16) * math.log(3.0) ** 2, abs=1e-6)


def test_peaked_distributions_with_large_logits_stay_accurate():
    """Logits up to ~90 and entropies down to 1e-11: fp32 chunked vs an fp64 reference.

    Entropy is tracked as log s - w / s relative to the running max (kernels/chunked.py);
    on this case the textbook lse - sum(p z) in fp32 is off by 1.3e-5, the chunked form by
    3.7e-6, the same as the fp32 reference's -(p log p).sum().
    """
    gen = torch.Generator().manual_seed(0)
    hidden_TH = torch.randn(64, 32, generator=gen)
    weight_VH = torch.randn(2000, 32, generator=gen) * 3
    targets_T = torch.randint(0, 2000, (64,), generator=gen)
    exact = kernels.logprobs_entropy(
        hidden_TH.double(), weight_VH.double(), targets_T, impl="reference"
    )
    logp_T, entropy_T = kernels.logprobs_entropy(
        hidden_TH, weight_VH, targets_T, impl="chunked", vocab_chunk=300
    )
    assert entropy_T.min() >= 0  # both terms of log s - w / s are >= 0 by construction
    assert (entropy_T.double() - exact[1]).abs().max() <= 1e-5
    assert (logp_T.double() - exact[0]).abs().max() <= 1e-5 * exact[0].abs().max()


@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_masked_tokens_are_zero_and_get_no_gradient(impl):
    hidden_TH, weight_VH, targets_T, c1_T, c2_T = make_inputs(40, 16, 300, masked=0.4)
    masked_T = targets_T == kernels.IGNORE_INDEX
    assert 0 < masked_T.sum() < 40
    logp_T, entropy_T, dh_TH, dW_VH = run(
        hidden_TH, weight_VH, targets_T, c1_T, c2_T, 1.0, impl=impl, vocab_chunk=64
    )
    assert torch.equal(logp_T[masked_T], torch.zeros(int(masked_T.sum())))
    assert torch.equal(entropy_T[masked_T], torch.zeros(int(masked_T.sum())))
    assert torch.equal(dh_TH[masked_T], torch.zeros(int(masked_T.sum()), 16))
    assert (logp_T[~masked_T] < 0).all() and (entropy_T[~masked_T] > 0).all()
    # Whatever the masked tokens' hidden states are, nothing else changes.
    scrambled_TH = torch.where(masked_T[:, None], torch.randn(40, 16) * 100, hidden_TH)
    again = run(scrambled_TH, weight_VH, targets_T, c1_T, c2_T, 1.0, impl=impl, vocab_chunk=64)
    for before, after in zip((logp_T, entropy_T, dW_VH), (again[0], again[1], again[3])):
        assert_scaled_close(after, before, tol=1e-6)


@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_all_masked_and_custom_ignore_index(impl):
    hidden_TH, weight_VH, _, c1_T, c2_T = make_inputs(6, 8, 50)
    logp_T, entropy_T, dh_TH, dW_VH = run(
        hidden_TH, weight_VH, torch.full((6,), -1), c1_T, c2_T, 1.0, impl=impl, ignore_index=-1
    )
    for tensor in (logp_T, entropy_T, dh_TH, dW_VH):
        assert torch.equal(tensor, torch.zeros_like(tensor))


def test_chunk_sizes_and_microbatch_splits_do_not_change_results():
    args = make_inputs(90, 24, 700)
    base = run(*args, 0.7, impl="chunked")
    for vocab_chunk, token_chunk in [(1, 90), (699, 1), (64, 13), (4096, 1000)]:
        got = run(*args, 0.7, impl="chunked", vocab_chunk=vocab_chunk, token_chunk=token_chunk)
        for actual, expected in zip(got, base):  # equal up to fp32 summation order
            assert_scaled_close(actual, expected)
    # Two micro-batches: per-token outputs concatenate, weight gradients add up.
    hidden_TH, weight_VH, targets_T, c1_T, c2_T = args
    halves = [
        run(hidden_TH[s], weight_VH, targets_T[s], c1_T[s], c2_T[s], 0.7, impl="chunked")
        for s in (slice(0, 31), slice(31, 90))
    ]
    assert_scaled_close(torch.cat([halves[0][0], halves[1][0]]), base[0], tol=1e-6)
    assert_scaled_close(torch.cat([halves[0][2], halves[1][2]]), base[2], tol=1e-6)
    assert_scaled_close(halves[0][3] + halves[1][3], base[3], tol=1e-6)


@pytest.mark.parametrize("which", ["logp", "entropy"])
def test_losses_using_only_one_output(which):
    hidden_TH, weight_VH, targets_T, _, _ = make_inputs(30, 16, 200)
    grads = {}
    for impl in ("reference", "chunked"):
        h_TH = hidden_TH.clone().requires_grad_()
        w_VH = weight_VH.clone().requires_grad_()
        logp_T, entropy_T = kernels.logprobs_entropy(
            h_TH, w_VH, targets_T, 1.2, impl=impl, vocab_chunk=64
        )
        (logp_T if which == "logp" else entropy_T).pow(2).sum().backward()
        grads[impl] = (h_TH.grad, w_VH.grad)
    for actual, expected in zip(grads["chunked"], grads["reference"]):
        assert_scaled_close(actual, expected)


def test_frozen_weight_or_hidden_get_no_gradient():
    hidden_TH, weight_VH, targets_T, c1_T, _ = make_inputs(20, 8, 100)
    h_TH = hidden_TH.clone().requires_grad_()
    logp_T, _ = kernels.logprobs_entropy(h_TH, weight_VH, targets_T, impl="chunked")
    (c1_T @ logp_T).backward()
    ref_h_TH = hidden_TH.clone().requires_grad_()
    ref_logp_T, _ = kernels.logprobs_entropy(ref_h_TH, weight_VH, targets_T, impl="reference")
    (c1_T @ ref_logp_T).backward()
    assert weight_VH.grad is None
    assert_scaled_close(h_TH.grad, ref_h_TH.grad)
    w_VH = weight_VH.clone().requires_grad_()
    _, entropy_T = kernels.logprobs_entropy(hidden_TH, w_VH, targets_T, impl="chunked")
    entropy_T.sum().backward()
    assert hidden_TH.grad is None and w_VH.grad.abs().sum() > 0


def test_invalid_inputs_are_rejected_with_names():
    hidden_TH, weight_VH, targets_T, _, _ = make_inputs(5, 4, 10, masked=0.0)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 10\).*\[10\]"):
        kernels.logprobs_entropy(hidden_TH, weight_VH, torch.tensor([0, 1, 10, 2, -100]))
    with pytest.raises(ValueError, match="shape mismatch"):
        kernels.logprobs_entropy(hidden_TH, weight_VH[:, :3], targets_T)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        kernels.logprobs_entropy(hidden_TH, weight_VH, targets_T, 0.0)
    with pytest.raises(ValueError, match="vocab_chunk must be a positive int"):
        kernels.logprobs_entropy(hidden_TH, weight_VH, targets_T, vocab_chunk=0)
    with pytest.raises(ValueError, match="'auto', 'chunked', 'triton', 'reference'"):
        kernels.logprobs_entropy(hidden_TH, weight_VH, targets_T, impl="fused")


def test_auto_picks_chunked_on_cpu_and_never_imports_triton():
    hidden_TH, weight_VH, targets_T, _, _ = make_inputs(5, 4, 10)
    assert kernels.resolve_impl("auto", hidden_TH, weight_VH) == "chunked"
    # in a fresh interpreter: transformers imports triton itself when it is installed
    code = (
        "import sys, torch, kernels; h = torch.randn(5, 4); w = torch.randn(10, 4); "
        "kernels.logprobs_entropy(h, w, torch.tensor([0, 1, 2, 3, 4])); "
        "assert 'triton' not in sys.modules and 'kernels.triton_impl' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    with pytest.raises((ImportError, ValueError), match="triton"):
        kernels.logprobs_entropy(hidden_TH, weight_VH, targets_T, impl="triton")


@pytest.mark.parametrize("impl", ["reference", "chunked"])
def test_next_token_helper_shifts_and_masks(impl):
    """Column t of the output scores input_ids[:, t + 1] from hidden[:, t]."""
    gen = torch.Generator().manual_seed(3)
    B, T, H, V = 2, 6, 8, 30
    hidden_BTH = torch.randn(B, T, H, generator=gen)
    weight_VH = torch.randn(V, H, generator=gen) / 3
    input_ids_BT = torch.randint(0, V, (B, T), generator=gen)
    mask_BT = torch.ones(B, T, dtype=torch.bool)
    mask_BT[0, :3] = False  # a prompt of three tokens: outputs 0 and 1 are masked
    mask_BT[1, 5] = False  # right padding: output 4 is masked
    logp_BT1, entropy_BT1 = kernels.next_token_logprobs_entropy(
        hidden_BTH, weight_VH, input_ids_BT, 0.9, mask_BT=mask_BT, impl=impl
    )
    assert logp_BT1.shape == entropy_BT1.shape == (B, T - 1)
    log_probs_BTV = torch.log_softmax(hidden_BTH @ weight_VH.T / 0.9, dim=-1)
    for b in range(B):
        for t in range(T - 1):
            expected = log_probs_BTV[b, t, input_ids_BT[b, t + 1]] if mask_BT[b, t + 1] else 0.0
            assert logp_BT1[b, t].item() == pytest.approx(float(expected), abs=1e-6)
    assert torch.equal(entropy_BT1[0, :2], torch.zeros(2)) and entropy_BT1[1, 4] == 0
