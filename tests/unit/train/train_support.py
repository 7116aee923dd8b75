"""Hand-made completions for the scoring and tracking tests (the built-in tokenizer's ids)."""

import torch

from rlvr.tasks.tiny_model import build_tokenizer
from rollout.types import FINISH_STOP, Completions

TOK = build_tokenizer()


def completions(texts: list[str], prompt_index: list[int], finish: list[str] | None = None):
    """Completions of `texts` as the engine returns them (EOS after a stopped one)."""
    finish = finish or [FINISH_STOP] * len(texts)
    eos = [TOK.eos_token_id]
    rows = [
        TOK(t, add_special_tokens=False).input_ids + (eos if f == FINISH_STOP else [])
        for t, f in zip(texts, finish)
    ]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), TOK.pad_token_id)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return Completions(
        prompt_index_N=torch.tensor(prompt_index),
        token_ids_NL=ids,
        logprobs_NL=torch.zeros(ids.shape),
        length_N=torch.tensor([len(r) for r in rows]),
        finish_reason=finish,
        pad_id=TOK.pad_token_id,
    )
