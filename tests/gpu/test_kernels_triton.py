"""Parity of the Triton backend with the reference: on CUDA, and on CPU under the interpreter.

The `gpu` tests run where CUDA is available (tests/conftest.py skips everything under
tests/gpu elsewhere). The same parity checks run on CPU tensors under Triton's interpreter
with triton installed (it is not a dependency of the CPU install):

    TRITON_INTERPRET=1 python tests/gpu/test_kernels_triton.py

(about 10 s; the variable must be set before triton decorates the kernels, hence a script).

Tolerances: fp32 (IEEE tl.dot) as the chunked backend, 1e-5 of each tensor's scale. bf16:
the forward accumulates in fp32 like the reference (1e-5 of scale); the backward rounds
d(logits) (less its one-hot term) to bf16 before the GEMMs, so gradients get 1e-2 of scale.
Measured under the interpreter: 3.6e-3 (the final rounding to bf16 alone is 2e-3 to 4e-3);
not yet measured on a GPU.
"""

import math
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import kernels  # noqa: E402

# (T, H, V, temperature, dtype, grad tolerance, vocab_chunk, entropy in the loss): V not a
# multiple of the 64-wide tiles, T not a multiple of the 64-token tiles, vocab_chunks forcing
# several backward chunks, and a logp-only loss (the kernel's no-entropy-gradient branch).
CASES = [
    (37, 48, 300, 0.7, torch.float32, 1e-5, None, True),
    (70, 40, 515, 1.3, torch.float32, 1e-5, 128, True),
    (29, 32, 200, 0.9, torch.float32, 1e-5, 64, False),
    (53, 64, 333, 1.0, torch.bfloat16, 1e-2, 192, True),
]


def _run(hidden_TH, weight_VH, targets_T, coefs, temperature, with_entropy, impl, vocab_chunk):
    hidden_TH = hidden_TH.detach().requires_grad_()
    weight_VH = weight_VH.detach().requires_grad_()
    logp_T, entropy_T = kernels.logprobs_entropy(
        hidden_TH, weight_VH, targets_T, temperature, impl=impl, vocab_chunk=vocab_chunk
    )
    loss = coefs[0] @ logp_T + (coefs[1] @ entropy_T if with_entropy else 0.0)
    loss.backward()
    return logp_T.detach(), entropy_T.detach(), hidden_TH.grad, weight_VH.grad


def check_parity(device: str) -> list[str]:
    """Assert triton == reference on every case; return one line of measured errors per case."""
    lines = []
    for T, H, V, temperature, dtype, grad_tol, vocab_chunk, with_entropy in CASES:
        gen = torch.Generator().manual_seed(T)
        hidden_TH = torch.randn(T, H, generator=gen).to(device, dtype)
        weight_VH = (torch.randn(V, H, generator=gen) * 1.5 / math.sqrt(H)).to(device, dtype)
        targets_T = torch.randint(0, V, (T,), generator=gen)
        targets_T[torch.rand(T, generator=gen) < 0.2] = kernels.IGNORE_INDEX
        coefs = torch.randn(2, T, generator=gen).to(device)
        args = (hidden_TH, weight_VH, targets_T.to(device), coefs, temperature, with_entropy)
        ref = _run(*args, "reference", None)
        got = _run(*args, "triton", vocab_chunk)
        errors = []
        for name, actual, expected, tol in zip(
            ("logp", "entropy", "dh", "dW"), got, ref, (1e-5, 1e-5, grad_tol, grad_tol)
        ):
            scale = max(1.0, expected.abs().max().item())
            err = (actual.double() - expected.double()).abs().max().item() / scale
            assert err <= tol, f"{name} ({dtype}, T={T}, V={V}): {err:.2e} of scale > {tol}"
            errors.append(f"{name} {err:.1e}")
        lines.append(f"T={T} H={H} V={V} {dtype}: " + ", ".join(errors))
    return lines


@pytest.mark.gpu
def test_triton_matches_reference_on_cuda():
    check_parity("cuda")


@pytest.mark.gpu
def test_auto_picks_triton_on_cuda_and_bounds_memory():
    """At T=2048, V=32000 one [T, V] tensor is 131 MB in bf16, 262 MB in fp32.

    Expected extra beyond the gradients: the T x 4096 bf16 d(logits) buffer (17 MB) and a
    few [T, H] fp32 tensors (2 MB each). The bound, a quarter of one fp32 [T, V] tensor,
    fails if any [T, V] tensor is materialised, even in bf16.
    """
    T, H, V = 2048, 256, 32000
    hidden_TH = torch.randn(T, H, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    weight_VH = (torch.randn(V, H, device="cuda") / 16).to(torch.bfloat16).requires_grad_()
    targets_T = torch.randint(0, V, (T,), device="cuda")
    assert kernels.resolve_impl("auto", hidden_TH, weight_VH) == "triton"

    def step():
        logp_T, entropy_T = kernels.logprobs_entropy(
            hidden_TH, weight_VH, targets_T, vocab_chunk=4096
        )
        (logp_T.sum() + 0.1 * entropy_T.sum()).backward()

    step()  # compiles the kernels and allocates cuBLAS workspaces outside the measurement
    hidden_TH.grad = weight_VH.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak_extra = torch.cuda.max_memory_allocated() - base
    grads = weight_VH.numel() * 2 + hidden_TH.numel() * 2
    assert peak_extra - grads < T * V * 4 / 4, peak_extra


if __name__ == "__main__":  # the interpreter run (see the module docstring)
    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
    print("\n".join(check_parity("cpu")))
