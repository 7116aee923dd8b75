"""Fused and chunked log-prob / entropy kernels, each with a plain PyTorch reference.

`import kernels` never imports triton; the Triton backend is loaded on first use.
"""

from kernels.logprobs import (
    IMPLS,
    logprobs_entropy,
    next_token_logprobs_entropy,
    resolve_impl,
)
from kernels.reference import IGNORE_INDEX, logprobs_entropy_reference

__all__ = [
    "IGNORE_INDEX",
    "IMPLS",
    "logprobs_entropy",
    "logprobs_entropy_reference",
    "next_token_logprobs_entropy",
    "resolve_impl",
]
