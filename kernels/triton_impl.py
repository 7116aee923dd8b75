"""Triton backend (CUDA; also runs on CPU tensors under TRITON_INTERPRET=1).

Imported lazily by `kernels.logprobs`, so `import kernels` works without triton.

Forward: one kernel over a grid of (token block, vocabulary split). Each program computes its
logits tiles with `tl.dot` (fp32 accumulation; IEEE fp32 for fp32 inputs, not TF32) and keeps
an online softmax state per token; the [splits, N] partial states are merged in PyTorch with
the same `merge_partials` the chunked backend uses. Nothing of size [N, V] is written.

Backward: for each vocabulary chunk, a kernel recomputes the logits tiles and writes
d(loss)/d(logits), less its one-hot term, into an [N, vocab_chunk] buffer in the input dtype;
two cuBLAS GEMMs (torch.mm) turn it into the weight gradient of that chunk and a contribution
to the hidden gradient (accumulated in fp32). Storing d(logits) in bf16 for bf16 inputs lets
the GEMMs use tensor cores; the one-hot term is added afterwards in fp32 (see
`_dlogits_kernel`), which keeps that rounding well below the final bf16 rounding.

Block sizes are reasonable defaults, not tuned: no GPU was available when this was written.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from kernels.chunked import finish_partials, merge_partials

BLOCK_T = 64
BLOCK_V = 64
BLOCK_H = 32
# Enough programs to fill a large GPU even when there are few token blocks.
TARGET_PROGRAMS = 1024
# Backward d(logits) buffer: at most this many elements (256 MiB in fp32, 128 MiB in bf16).
BUFFER_ELEMENTS = 1 << 26


@triton.jit
def _logits_tile(
    h_ptr,
    w_ptr,
    rows,
    cols,
    row_ok,
    col_ok,
    H,
    stride_h,
    stride_w,
    inv_temp,
    BLOCK_T: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_H: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """[BLOCK_T, BLOCK_V] fp32 tile of hidden @ weight.T / temperature (zero where masked)."""
    acc = tl.zeros((BLOCK_T, BLOCK_V), dtype=tl.float32)
    # int64 offsets: V * H exceeds 2**31 for large vocabularies and hidden sizes.
    h_rows = h_ptr + rows.to(tl.int64)[:, None] * stride_h
    w_rows = w_ptr + cols.to(tl.int64)[:, None] * stride_w
    for k_start in range(0, H, BLOCK_H):
        ks = k_start + tl.arange(0, BLOCK_H)
        k_ok = ks < H
        h_tile = tl.load(h_rows + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w_tile = tl.load(w_rows + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0)
        if UPCAST:  # only under TRITON_INTERPRET, whose tl.dot cannot multiply bf16
            h_tile, w_tile = h_tile.to(tl.float32), w_tile.to(tl.float32)
        acc = tl.dot(h_tile, tl.trans(w_tile), acc, input_precision=PRECISION)
    return acc * inv_temp


@triton.jit
def _forward_partials_kernel(
    h_ptr,
    w_ptr,
    y_ptr,
    max_ptr,
    sum_ptr,
    wsum_ptr,
    target_ptr,
    N,
    V,
    H,
    stride_h,
    stride_w,
    inv_temp,
    vocab_per_split,
    BLOCK_T: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_H: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Online softmax state of one token block over one vocabulary split (see merge_partials)."""
    split = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    row_ok = rows < N
    targets = tl.load(y_ptr + rows, mask=row_ok, other=-1)
    v_begin = split * vocab_per_split
    v_end = tl.minimum(v_begin + vocab_per_split, V)
    # A finite start keeps the first rescale 0 * finite instead of 0 * inf.
    run_max = tl.full((BLOCK_T,), -1e30, tl.float32)
    run_sum = tl.zeros((BLOCK_T,), tl.float32)
    run_wsum = tl.zeros((BLOCK_T,), tl.float32)
    target_logit = tl.zeros((BLOCK_T,), tl.float32)
    for v_start in range(v_begin, v_end, BLOCK_V):
        cols = v_start + tl.arange(0, BLOCK_V)
        col_ok = cols < v_end
        z = _logits_tile(
            h_ptr,
            w_ptr,
            rows,
            cols,
            row_ok,
            col_ok,
            H,
            stride_h,
            stride_w,
            inv_temp,
            BLOCK_T,
            BLOCK_V,
            BLOCK_H,
            PRECISION,
            UPCAST,
        )
        valid = col_ok[None, :]
        is_target = (cols[None, :] == targets[:, None]) & valid
        target_logit += tl.sum(tl.where(is_target, z, 0.0), axis=1)
        new_max = tl.maximum(run_max, tl.max(tl.where(valid, z, float("-inf")), axis=1))
        shift = run_max - new_max
        scale = tl.exp(shift)
        # Padded columns get shifted = 0 and e = 0, so e * shifted never meets an inf.
        shifted = tl.where(valid, z - new_max[:, None], 0.0)
        e = tl.where(valid, tl.exp(shifted), 0.0)
        run_wsum = scale * (run_wsum + shift * run_sum) + tl.sum(e * shifted, axis=1)
        run_sum = scale * run_sum + tl.sum(e, axis=1)
        run_max = new_max
    out = split * N + rows
    tl.store(max_ptr + out, run_max, mask=row_ok)
    tl.store(sum_ptr + out, run_sum, mask=row_ok)
    tl.store(wsum_ptr + out, run_wsum, mask=row_ok)
    tl.store(target_ptr + out, target_logit, mask=row_ok)


@triton.jit
def _dlogits_kernel(
    h_ptr,
    w_ptr,
    lse_ptr,
    ent_ptr,
    glogp_ptr,
    gent_ptr,
    dz_ptr,
    N,
    H,
    stride_h,
    stride_w,
    stride_dz,
    inv_temp,
    v_offset,
    v_count,
    HAS_GRAD_ENTROPY: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_H: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """d(loss)/d(logits) tile for columns v_offset + [0, v_count), less the one-hot term.

    The formula is in chunked.py. The one-hot term a [j = y] is left out because it is the
    only large entry of a row that sums to zero: rounded to bf16 together with the small
    -p (...) entries it costs about 2e-3 of the gradient's scale; added in fp32 outside
    (a gather and an index_add) the bf16 rounding of the rest costs about 1e-4.
    """
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    local = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    row_ok = rows < N
    col_ok = local < v_count
    cols = v_offset + local
    z = _logits_tile(
        h_ptr,
        w_ptr,
        rows,
        cols,
        row_ok,
        col_ok,
        H,
        stride_h,
        stride_w,
        inv_temp,
        BLOCK_T,
        BLOCK_V,
        BLOCK_H,
        PRECISION,
        UPCAST,
    )
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    grad_logp = tl.load(glogp_ptr + rows, mask=row_ok, other=0.0)
    logp = z - lse[:, None]
    coef = grad_logp[:, None] + tl.zeros((BLOCK_T, BLOCK_V), tl.float32)
    if HAS_GRAD_ENTROPY:
        entropy = tl.load(ent_ptr + rows, mask=row_ok, other=0.0)
        grad_entropy = tl.load(gent_ptr + rows, mask=row_ok, other=0.0)
        coef += grad_entropy[:, None] * (logp + entropy[:, None])
    dz = -tl.exp(logp) * coef * inv_temp  # the a [j = y] term is added outside, in fp32
    offsets = rows.to(tl.int64)[:, None] * stride_dz + local[None, :]
    tl.store(
        dz_ptr + offsets, dz.to(dz_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :]
    )


def _dot_options(dtype: torch.dtype) -> dict:
    # fp32 parity needs IEEE products (tl.dot defaults to TF32); half-precision inputs use
    # tensor cores anyway. The interpreter's tl.dot multiplies bf16 bit patterns as integers
    # (triton-lang/triton#11584, unsupported upstream), so it gets fp32 tiles instead.
    interpreting = os.environ.get("TRITON_INTERPRET") == "1"
    return {
        "PRECISION": "ieee" if dtype == torch.float32 else "tf32",
        "UPCAST": interpreting and dtype == torch.bfloat16,
    }


def _check(hidden_NH: torch.Tensor, weight_VH: torch.Tensor) -> None:
    if hidden_NH.dtype != weight_VH.dtype or hidden_NH.dtype not in (
        torch.float32,
        torch.float16,
        torch.bfloat16,
    ):
        raise ValueError(
            "impl='triton' needs hidden and weight of one dtype among fp32, "
            f"fp16, bf16; got {hidden_NH.dtype} and {weight_VH.dtype}"
        )


@torch.no_grad()
def forward_stats(hidden_NH, weight_VH, targets_N, inv_temp, *, token_chunk=None, vocab_chunk=None):
    """fp32 (lse_N, entropy_N, target_logit_N). Chunk options are not used by this pass."""
    _check(hidden_NH, weight_VH)
    hidden_NH, weight_VH = hidden_NH.contiguous(), weight_VH.contiguous()
    num_tokens, hidden_size = hidden_NH.shape
    vocab = weight_VH.shape[0]
    token_blocks = triton.cdiv(num_tokens, BLOCK_T)
    vocab_blocks = triton.cdiv(vocab, BLOCK_V)
    blocks_per_split = triton.cdiv(
        vocab_blocks, max(1, min(vocab_blocks, triton.cdiv(TARGET_PROGRAMS, max(token_blocks, 1))))
    )
    vocab_per_split = blocks_per_split * BLOCK_V  # whole tiles: no tile straddles two splits
    splits = triton.cdiv(vocab, vocab_per_split)
    partials = torch.empty(4, splits, num_tokens, device=hidden_NH.device, dtype=torch.float32)
    if num_tokens > 0:
        _forward_partials_kernel[(token_blocks, splits)](
            hidden_NH,
            weight_VH,
            targets_N.contiguous(),
            partials[0],
            partials[1],
            partials[2],
            partials[3],
            num_tokens,
            vocab,
            hidden_size,
            hidden_NH.stride(0),
            weight_VH.stride(0),
            inv_temp,
            vocab_per_split,
            BLOCK_T=BLOCK_T,
            BLOCK_V=BLOCK_V,
            BLOCK_H=BLOCK_H,
            **_dot_options(hidden_NH.dtype),
        )
    lse_N, entropy_N = finish_partials(*merge_partials(partials[0], partials[1], partials[2]))
    return lse_N, entropy_N, partials[3].sum(dim=0)


def _vocab_chunk(num_tokens: int, vocab: int, vocab_chunk: int | None) -> int:
    if vocab_chunk is None:
        vocab_chunk = max(BLOCK_V, BUFFER_ELEMENTS // max(num_tokens, 1) // BLOCK_V * BLOCK_V)
    return min(vocab_chunk, vocab)


@torch.no_grad()
def backward_grads(
    hidden_NH,
    weight_VH,
    targets_N,
    lse_N,
    entropy_N,
    grad_logp_N,
    grad_entropy_N,
    inv_temp,
    need_hidden,
    need_weight,
    *,
    token_chunk=None,
    vocab_chunk=None,
):
    """Gradients for hidden_NH and weight_VH (None where not needed), in their dtypes.

    `token_chunk` is not used: the buffer holds every token, so each weight-gradient chunk is
    one GEMM with a single rounding to the weight dtype.
    """
    hidden_NH, weight_VH = hidden_NH.contiguous(), weight_VH.contiguous()
    num_tokens, hidden_size = hidden_NH.shape
    vocab = weight_VH.shape[0]
    vocab_chunk = _vocab_chunk(num_tokens, vocab, vocab_chunk)
    dlogits_NC = torch.empty(
        num_tokens, vocab_chunk, device=hidden_NH.device, dtype=hidden_NH.dtype
    )
    grad_hidden32_NH = (
        torch.zeros(num_tokens, hidden_size, device=hidden_NH.device, dtype=torch.float32)
        if need_hidden
        else None
    )
    grad_weight_VH = torch.empty_like(weight_VH) if need_weight else None
    has_grad_entropy = grad_entropy_N is not None
    grad_entropy_N = (grad_entropy_N if has_grad_entropy else grad_logp_N).contiguous()
    for v_start in range(0, vocab, vocab_chunk):
        count = min(vocab_chunk, vocab - v_start)
        grid = (triton.cdiv(num_tokens, BLOCK_T), triton.cdiv(count, BLOCK_V))
        if num_tokens > 0:
            _dlogits_kernel[grid](
                hidden_NH,
                weight_VH,
                lse_N,
                entropy_N,
                grad_logp_N.contiguous(),
                grad_entropy_N,
                dlogits_NC,
                num_tokens,
                hidden_size,
                hidden_NH.stride(0),
                weight_VH.stride(0),
                dlogits_NC.stride(0),
                inv_temp,
                v_start,
                count,
                HAS_GRAD_ENTROPY=has_grad_entropy,
                BLOCK_T=BLOCK_T,
                BLOCK_V=BLOCK_V,
                BLOCK_H=BLOCK_H,
                **_dot_options(hidden_NH.dtype),
            )
        block_NC = dlogits_NC[:, :count]
        if grad_weight_VH is not None:
            torch.mm(block_NC.T, hidden_NH, out=grad_weight_VH[v_start : v_start + count])
        if grad_hidden32_NH is not None:
            grad_hidden32_NH += block_NC @ weight_VH[v_start : v_start + count]
    _add_onehot_term(
        hidden_NH, weight_VH, targets_N, grad_logp_N * inv_temp, grad_hidden32_NH, grad_weight_VH
    )
    grad_hidden_NH = None if grad_hidden32_NH is None else grad_hidden32_NH.to(hidden_NH.dtype)
    return grad_hidden_NH, grad_weight_VH


def _add_onehot_term(
    hidden_NH, weight_VH, targets_N, scaled_grad_logp_N, grad_hidden32_NH, grad_weight_VH
):
    """Add d(loss)/d(logits) = a / T at (t, targets[t]) to both gradients, in fp32."""
    if grad_hidden32_NH is not None:
        grad_hidden32_NH += scaled_grad_logp_N[:, None] * weight_VH[targets_N].float()
    if grad_weight_VH is not None and targets_N.numel() > 0:
        rows_U, slot_N = torch.unique(targets_N, return_inverse=True)
        extra_UH = torch.zeros(rows_U.numel(), hidden_NH.shape[1], device=hidden_NH.device)
        extra_UH.index_add_(0, slot_N, scaled_grad_logp_N[:, None] * hidden_NH.float())
        grad_weight_VH[rows_U] = (grad_weight_VH[rows_U].float() + extra_UH).to(weight_VH.dtype)
