"""Plain PyTorch reference: materialise the [T, V] logits in fp32 and let autograd differentiate.

This is the textbook computation, written for clarity rather than memory: it holds several
[T, V] fp32 tensors at once (logits, log-probs, probabilities and their gradients). It is the
oracle of the parity tests and the fallback (`impl="reference"`) for anything the faster
implementations do not support, such as double backward.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def logprobs_entropy_reference(
    hidden_TH: torch.Tensor,
    weight_VH: torch.Tensor,
    targets_T: torch.Tensor,
    temperature: float = 1.0,
    *,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (logp_T, entropy_T) of softmax(hidden @ weight.T / temperature).

    Computed in fp32 (fp64 if an input is fp64) whatever the input dtype.

    Tokens whose target equals `ignore_index` get logp = entropy = 0 and no gradient.
    """
    dtype = torch.promote_types(torch.promote_types(hidden_TH.dtype, weight_VH.dtype), torch.float32)
    logits_TV = (hidden_TH.to(dtype) @ weight_VH.to(dtype).T) / temperature
    logp_TV = torch.log_softmax(logits_TV, dim=-1)
    del logits_TV  # log_softmax's backward needs only its output; free the logits early
    valid_T = targets_T != ignore_index
    safe_targets_T = torch.where(valid_T, targets_T, 0)
    logp_T = logp_TV.gather(1, safe_targets_T.unsqueeze(1)).squeeze(1)
    entropy_T = -(logp_TV.exp() * logp_TV).sum(dim=-1)
    zero = logp_T.new_zeros(())
    return torch.where(valid_T, logp_T, zero), torch.where(valid_T, entropy_T, zero)
