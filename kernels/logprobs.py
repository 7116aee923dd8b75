"""Per-token log-prob and entropy from hidden states, without materialising [T, V] logits.

`logprobs_entropy` computes, for logits z = hidden @ weight.T / temperature,
  logp_T[t]    = log softmax(z[t])[targets[t]]
  entropy_T[t] = -sum_v softmax(z[t])_v log softmax(z[t])_v
in fp32 (fp64 for fp64 inputs), and gives gradients for hidden and weight through a custom autograd
function whose backward recomputes logits block by block. Backends ("chunked", "triton") only
provide the per-token statistics and the gradients; masking, validation and autograd wiring live
here.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from functools import lru_cache
from types import ModuleType

import torch
from torch.autograd.function import once_differentiable

from kernels import chunked
from kernels.reference import IGNORE_INDEX, logprobs_entropy_reference

IMPLS = ("auto", "chunked", "triton", "reference")
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class _LogprobsEntropy(torch.autograd.Function):
    """Autograd wrapper shared by the block-wise backends (no masked rows reach it)."""

    @staticmethod
    def forward(ctx, hidden_NH, weight_VH, targets_N, temperature, backend, options):
        inv_temp = 1.0 / temperature
        lse_N, entropy_N, target_logit_N = backend.forward_stats(
            hidden_NH, weight_VH, targets_N, inv_temp, **options
        )
        ctx.save_for_backward(hidden_NH, weight_VH, targets_N, lse_N, entropy_N)
        ctx.inv_temp, ctx.backend, ctx.options = inv_temp, backend, options
        # Unused outputs arrive as None rather than zeros: a logp-only loss skips entropy terms.
        ctx.set_materialize_grads(False)
        return target_logit_N - lse_N, entropy_N

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_logp_N, grad_entropy_N):
        hidden_NH, weight_VH, targets_N, lse_N, entropy_N = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[:2]
        no_grad_out = grad_logp_N is None and grad_entropy_N is None
        if no_grad_out or not (need_hidden or need_weight):
            return None, None, None, None, None, None
        if grad_logp_N is None:
            grad_logp_N = torch.zeros_like(lse_N)
        grad_hidden_NH, grad_weight_VH = ctx.backend.backward_grads(
            hidden_NH,
            weight_VH,
            targets_N,
            lse_N,
            entropy_N,
            grad_logp_N.to(lse_N.dtype),
            None if grad_entropy_N is None else grad_entropy_N.to(lse_N.dtype),
            ctx.inv_temp,
            need_hidden,
            need_weight,
            **ctx.options,
        )
        return grad_hidden_NH, grad_weight_VH, None, None, None, None


@lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether triton can be imported (checked without importing it)."""
    return importlib.util.find_spec("triton") is not None


def resolve_impl(impl: str, hidden_TH: torch.Tensor, weight_VH: torch.Tensor) -> str:
    """Name of the implementation `impl` stands for with these inputs ("auto" picks one)."""
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is not one of {IMPLS}")
    if impl != "auto":
        return impl
    if not (hidden_TH.is_cuda and triton_available()):
        return "chunked"
    if hidden_TH.dtype != weight_VH.dtype or hidden_TH.dtype not in TRITON_DTYPES:
        # A silent fallback would hide a large slowdown (e.g. bf16 activations from autocast
        # with an fp32 weight): say so, and how to get the fast path.
        warnings.warn(
            f"kernels: triton needs hidden and weight of one dtype among fp32/fp16/bf16, got "
            f"{hidden_TH.dtype} and {weight_VH.dtype}; using the chunked PyTorch path. Pass "
            "weight.to(hidden.dtype) (differentiable) to use triton.",
            stacklevel=3,
        )
        return "chunked"
    return "triton"


def _backend(name: str, hidden_TH: torch.Tensor) -> ModuleType:
    if name == "chunked":
        return chunked
    if not triton_available():
        raise ImportError("impl='triton' needs the triton package; use impl='chunked'")
    if not hidden_TH.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("impl='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU)")
    from kernels import triton_impl  # lazy: `import kernels` must work without triton

    return triton_impl


def _check_inputs(
    hidden_TH, weight_VH, targets_T, temperature, ignore_index, token_chunk, vocab_chunk
) -> None:
    if hidden_TH.dim() != 2 or weight_VH.dim() != 2 or targets_T.dim() != 1:
        raise ValueError(
            "expected hidden_TH [T, H], weight_VH [V, H], targets_T [T]; got "
            f"{tuple(hidden_TH.shape)}, {tuple(weight_VH.shape)}, {tuple(targets_T.shape)}"
        )
    if hidden_TH.shape[1] != weight_VH.shape[1] or hidden_TH.shape[0] != targets_T.shape[0]:
        raise ValueError(
            f"shape mismatch: hidden_TH {tuple(hidden_TH.shape)}, weight_VH "
            f"{tuple(weight_VH.shape)}, targets_T {tuple(targets_T.shape)}"
        )
    if weight_VH.shape[0] == 0:
        raise ValueError("weight_VH has no rows (empty vocabulary)")
    if not (hidden_TH.is_floating_point() and weight_VH.is_floating_point()):
        raise ValueError(
            f"hidden and weight must be floating point, got {hidden_TH.dtype} and {weight_VH.dtype}"
        )
    if targets_T.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"targets_T must be int64 or int32, got {targets_T.dtype}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    for name, chunk in (("token_chunk", token_chunk), ("vocab_chunk", vocab_chunk)):
        if chunk is not None and chunk < 1:
            raise ValueError(f"{name} must be a positive int or None, got {chunk}")
    vocab = weight_VH.shape[0]
    bad_T = (targets_T != ignore_index) & ((targets_T < 0) | (targets_T >= vocab))
    if bool(bad_T.any()):  # one host sync; an out-of-range target would silently give -lse
        raise ValueError(
            f"targets must lie in [0, {vocab}) or equal ignore_index={ignore_index}; "
            f"found {targets_T[bad_T][:5].tolist()}"
        )


def logprobs_entropy(
    hidden_TH: torch.Tensor,
    weight_VH: torch.Tensor,
    targets_T: torch.Tensor,
    temperature: float = 1.0,
    *,
    ignore_index: int = IGNORE_INDEX,
    impl: str = "auto",
    token_chunk: int | None = None,
    vocab_chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of `targets_T` and entropy under softmax(hidden_TH @ weight_VH.T / temperature).

    Returns (logp_T, entropy_T) in fp32 (fp64 if an input is fp64), whatever the input dtype. Tokens
    whose target equals `ignore_index` get logp = entropy = 0 and contribute no gradient; they are
    dropped before any logits are computed, so masked prompt or padding tokens cost nothing. `impl`:
    "auto" (triton for CUDA tensors when triton imports, else chunked), "chunked", "triton" or
    "reference". `token_chunk` / `vocab_chunk` size the blocks of the block-wise backends
    (docs/kernels.md).
    """
    _check_inputs(
        hidden_TH, weight_VH, targets_T, temperature, ignore_index, token_chunk, vocab_chunk
    )
    name = resolve_impl(impl, hidden_TH, weight_VH)
    if name == "reference":
        return logprobs_entropy_reference(
            hidden_TH, weight_VH, targets_T, temperature, ignore_index=ignore_index
        )
    backend = _backend(name, hidden_TH)
    options = {"token_chunk": token_chunk, "vocab_chunk": vocab_chunk}
    valid_T = targets_T != ignore_index
    if bool(valid_T.all()):
        return _LogprobsEntropy.apply(
            hidden_TH, weight_VH, targets_T, float(temperature), backend, options
        )
    rows_N = valid_T.nonzero().squeeze(1)
    logp_N, entropy_N = _LogprobsEntropy.apply(
        hidden_TH.index_select(0, rows_N),
        weight_VH,
        targets_T.index_select(0, rows_N),
        float(temperature),
        backend,
        options,
    )
    zeros_T = logp_N.new_zeros(targets_T.shape[0])
    return zeros_T.index_copy(0, rows_N, logp_N), zeros_T.index_copy(0, rows_N, entropy_N)


def next_token_logprobs_entropy(
    hidden_BTH: torch.Tensor,
    weight_VH: torch.Tensor,
    input_ids_BT: torch.Tensor,
    temperature: float = 1.0,
    *,
    mask_BT: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    **options,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal-LM helper: fp32 (logp, entropy) of each next token, both [B, T-1].

    Position t of the decoder's final hidden states predicts token t + 1, so output column
    t scores input_ids_BT[:, t + 1]. `mask_BT` (bool, aligned with input_ids_BT) marks the
    tokens to score; output column t is zero, with no gradient, where mask_BT[:, t + 1] is
    False. `options` go to `logprobs_entropy` (impl, token_chunk, vocab_chunk).
    """
    batch, length, hidden_size = hidden_BTH.shape
    if input_ids_BT.shape != (batch, length):
        raise ValueError(
            f"input_ids_BT {tuple(input_ids_BT.shape)} does not match "
            f"hidden_BTH {tuple(hidden_BTH.shape)}"
        )
    targets_BT1 = input_ids_BT[:, 1:]
    if mask_BT is not None:
        targets_BT1 = torch.where(mask_BT[:, 1:].bool(), targets_BT1, ignore_index)
    logp_N, entropy_N = logprobs_entropy(
        hidden_BTH[:, :-1].reshape(-1, hidden_size),
        weight_VH,
        targets_BT1.reshape(-1),
        temperature,
        ignore_index=ignore_index,
        **options,
    )
    return logp_N.view(batch, length - 1), entropy_N.view(batch, length - 1)
