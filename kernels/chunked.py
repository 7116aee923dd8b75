"""Chunked PyTorch backend: never holds more than one [tokens x vocab] block of logits.

Runs on any device. The forward pass streams over vocabulary blocks and keeps, per token, an
online log-sum-exp state (see `merge_partials`); the backward pass recomputes each block of
logits from the saved per-token log-sum-exp and entropy, turns it into d(loss)/d(logits) and
multiplies it straight into the hidden and weight gradients. Everything is computed in fp32
(fp64 for fp64 inputs) whatever the input dtype: each block of the weight is upcast when it is
used, so bf16 inputs cost no full-size fp32 copy of the weight.

Blocks are [token_chunk x vocab_chunk]; peak extra memory is two such fp32 buffers plus fp32
copies of the hidden states and their gradient ([N, H]) and one weight block and its gradient.
"""

from __future__ import annotations

import torch

DEFAULT_VOCAB_CHUNK = 4096
# Tokens per block when not given: keeps one fp32 block at 2**24 elements (64 MiB).
DEFAULT_BLOCK_ELEMENTS = 1 << 24


def merge_partials(
    max_KN: torch.Tensor, sum_KN: torch.Tensor, wsum_KN: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge K partial softmax states over disjoint vocabulary ranges into one (reduce dim 0).

    A state over logits z is (m, s, w) with m = max z, s = sum exp(z - m) and
    w = sum exp(z - m) * (z - m). Tracking w relative to the running max (instead of the
    textbook sum p * z) keeps entropy = log s - w / s free of the cancellation that
    lse - sum p z suffers when logits are large and the distribution is peaked.
    """
    max_N = max_KN.max(dim=0).values
    shift_KN = max_KN - max_N
    scale_KN = shift_KN.exp()
    sum_N = (scale_KN * sum_KN).sum(dim=0)
    wsum_N = (scale_KN * (wsum_KN + shift_KN * sum_KN)).sum(dim=0)
    return max_N, sum_N, wsum_N


def finish_partials(
    max_N: torch.Tensor, sum_N: torch.Tensor, wsum_N: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a merged state into (log-sum-exp, entropy)."""
    log_sum_N = sum_N.log()
    return max_N + log_sum_N, log_sum_N - wsum_N / sum_N


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """fp32 for half-precision and fp32 inputs, fp64 if any input is fp64."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def _ranges(total: int, step: int) -> list[tuple[int, int]]:
    return [(start, min(start + step, total)) for start in range(0, total, step)]


def _chunk_sizes(token_chunk: int | None, vocab_chunk: int | None) -> tuple[int, int]:
    vocab_chunk = vocab_chunk or DEFAULT_VOCAB_CHUNK
    return token_chunk or max(1, DEFAULT_BLOCK_ELEMENTS // vocab_chunk), vocab_chunk


def _scratch(rows: int, cols: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two flat buffers for [rows x cols] blocks, reused across blocks.

    A fresh block of tens of MB is page-faulted in on every allocation on CPU, which costs
    more than the elementwise work done on it (measured: exp into a new tensor 3x slower
    than into a reused one).
    """
    return like.new_empty(rows * cols), like.new_empty(rows * cols)


def _view(flat: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    return flat[: rows * cols].view(rows, cols)


def _block_stats(
    logits_CB: torch.Tensor, scratch_CB: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(max, sum exp(z - max), sum exp(z - max) * (z - max)) per row; overwrites both blocks."""
    max_C = logits_CB.amax(dim=1)
    shifted_CB = logits_CB.sub_(max_C.unsqueeze(1))
    exp_CB = torch.exp(shifted_CB, out=scratch_CB)
    sum_C = exp_CB.sum(dim=1)
    wsum_C = exp_CB.mul_(shifted_CB).sum(dim=1)
    return max_C, sum_C, wsum_C


def _target_column(targets_C: torch.Tensor, start: int, stop: int):
    """Column of each target inside the block [start, stop) (clamped) and whether it is there."""
    inside_C = (targets_C >= start) & (targets_C < stop)
    column_C = (targets_C - start).clamp(0, stop - start - 1)
    return column_C.unsqueeze(1), inside_C


def _scaled_hidden(hidden_NH: torch.Tensor, weight_VH: torch.Tensor, inv_temp: float):
    """(hidden in the compute dtype, the same divided by the temperature).

    Dividing the [N, H] hidden states instead of every [N, V] block of logits saves one pass
    over the logits in each direction.
    """
    hidden32_NH = hidden_NH.to(compute_dtype(hidden_NH, weight_VH))
    return hidden32_NH, (hidden32_NH if inv_temp == 1.0 else hidden32_NH * inv_temp)


@torch.no_grad()
def forward_stats(
    hidden_NH: torch.Tensor,
    weight_VH: torch.Tensor,
    targets_N: torch.Tensor,
    inv_temp: float,
    *,
    token_chunk: int | None = None,
    vocab_chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (lse_N, entropy_N, target_logit_N) in the compute dtype, never holding [N, V]."""
    num_tokens, vocab = hidden_NH.shape[0], weight_VH.shape[0]
    token_chunk, vocab_chunk = _chunk_sizes(token_chunk, vocab_chunk)
    hidden32_NH, scaled_NH = _scaled_hidden(hidden_NH, weight_VH, inv_temp)
    flat_a, flat_b = _scratch(min(token_chunk, num_tokens), min(vocab_chunk, vocab), scaled_NH)
    state = None  # (max_N, sum_N, wsum_N) over the vocabulary blocks seen so far
    target_logit_N = scaled_NH.new_zeros(num_tokens)
    for v_start, v_stop in _ranges(vocab, vocab_chunk):
        weight32_BH = weight_VH[v_start:v_stop].to(scaled_NH.dtype)
        block_state = [scaled_NH.new_empty(num_tokens) for _ in range(3)]
        for t_start, t_stop in _ranges(num_tokens, token_chunk):
            rows, shape = slice(t_start, t_stop), (t_stop - t_start, v_stop - v_start)
            logits_CB = torch.mm(scaled_NH[rows], weight32_BH.T, out=_view(flat_a, *shape))
            column_C1, inside_C = _target_column(targets_N[rows], v_start, v_stop)
            picked_C = logits_CB.gather(1, column_C1).squeeze(1)
            target_logit_N[rows] += torch.where(inside_C, picked_C, 0.0)
            for out_N, stat_C in zip(block_state, _block_stats(logits_CB, _view(flat_b, *shape))):
                out_N[rows] = stat_C
        if state is None:
            state = block_state
        else:
            state = merge_partials(*(torch.stack(pair) for pair in zip(state, block_state)))
    lse_N, entropy_N = finish_partials(*state)
    return lse_N, entropy_N, target_logit_N


def _dlogits_block(
    logits_CB: torch.Tensor,
    scratch_CB: torch.Tensor,
    targets_C: torch.Tensor,
    start: int,
    lse_C: torch.Tensor,
    entropy_C: torch.Tensor,
    alpha_C: torch.Tensor,
    beta_C: torch.Tensor | None,
) -> torch.Tensor:
    """d(loss)/d(hidden @ weight.T) for one block of z = logits / T; overwrites both blocks.

    With p = softmax(z), a = dL/dlogp and b = dL/dentropy:
      dlogp_y/dz_j = [j = y] - p_j  and  dentropy/dz_j = -p_j (log p_j + entropy),
    so dL/dz_j = a [j = y] - p_j (a + b (log p_j + entropy)), and dL/dlogits = dL/dz / T.
    With alpha = a / T, beta = b / T and log p_j = z_j - lse this is
      alpha [j = y] + p_j (c - beta z_j),  c = beta (lse - entropy) - alpha,
    which costs one fused multiply-add, one exp and one multiply per element.
    """
    if beta_C is None:
        dlogits_CB = logits_CB.sub_(lse_C.unsqueeze(1)).exp_().mul_(-alpha_C.unsqueeze(1))
    else:
        offset_C1 = (beta_C * (lse_C - entropy_C) - alpha_C).unsqueeze(1)
        coef_CB = torch.addcmul(offset_C1, logits_CB, -beta_C.unsqueeze(1), out=scratch_CB)
        dlogits_CB = logits_CB.sub_(lse_C.unsqueeze(1)).exp_().mul_(coef_CB)
    column_C1, inside_C = _target_column(targets_C, start, start + dlogits_CB.shape[1])
    return dlogits_CB.scatter_add_(1, column_C1, torch.where(inside_C, alpha_C, 0.0)[:, None])


@torch.no_grad()
def backward_grads(
    hidden_NH: torch.Tensor,
    weight_VH: torch.Tensor,
    targets_N: torch.Tensor,
    lse_N: torch.Tensor,
    entropy_N: torch.Tensor,
    grad_logp_N: torch.Tensor,
    grad_entropy_N: torch.Tensor | None,
    inv_temp: float,
    need_hidden: bool,
    need_weight: bool,
    *,
    token_chunk: int | None = None,
    vocab_chunk: int | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients for hidden_NH and weight_VH (None where not needed), in their dtypes.

    Vocabulary blocks are the outer loop so that each block's weight gradient is complete
    (and cast to the weight's dtype once) before the next block starts: no [V, H] fp32
    accumulator is needed.
    """
    num_tokens, vocab = hidden_NH.shape[0], weight_VH.shape[0]
    token_chunk, vocab_chunk = _chunk_sizes(token_chunk, vocab_chunk)
    hidden32_NH, scaled_NH = _scaled_hidden(hidden_NH, weight_VH, inv_temp)
    flat_a, flat_b = _scratch(min(token_chunk, num_tokens), min(vocab_chunk, vocab), scaled_NH)
    alpha_N = grad_logp_N * inv_temp
    beta_N = None if grad_entropy_N is None else grad_entropy_N * inv_temp
    grad_hidden32_NH = torch.zeros_like(hidden32_NH) if need_hidden else None
    grad_weight_VH = torch.empty_like(weight_VH) if need_weight else None
    for v_start, v_stop in _ranges(vocab, vocab_chunk):
        weight32_BH = weight_VH[v_start:v_stop].to(scaled_NH.dtype)
        grad_weight32_BH = torch.zeros_like(weight32_BH) if need_weight else None
        for t_start, t_stop in _ranges(num_tokens, token_chunk):
            rows, shape = slice(t_start, t_stop), (t_stop - t_start, v_stop - v_start)
            logits_CB = torch.mm(scaled_NH[rows], weight32_BH.T, out=_view(flat_a, *shape))
            dlogits_CB = _dlogits_block(
                logits_CB,
                _view(flat_b, *shape),
                targets_N[rows],
                v_start,
                lse_N[rows],
                entropy_N[rows],
                alpha_N[rows],
                None if beta_N is None else beta_N[rows],
            )
            if grad_hidden32_NH is not None:
                grad_hidden32_NH[rows].addmm_(dlogits_CB, weight32_BH)
            if grad_weight32_BH is not None:
                grad_weight32_BH.addmm_(dlogits_CB.T, hidden32_NH[rows])
        if grad_weight_VH is not None:
            grad_weight_VH[v_start:v_stop] = grad_weight32_BH
    grad_hidden_NH = None if grad_hidden32_NH is None else grad_hidden32_NH.to(hidden_NH.dtype)
    return grad_hidden_NH, grad_weight_VH
