"""Batch types that cross actor boundaries, and the contracts of the rollout plug-ins.

Tensors are CPU tensors with documented shapes. The `Protocol`s at the end are what the
controller calls on a prompt sampler, a rollout schedule, a gate and an engine.

Shape letters: P prompts, N completions (prompt-major: the completions of prompt 0 first),
L the longest completion of the batch in tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

FINISH_STOP, FINISH_LENGTH = "stop", "length"


@dataclass(frozen=True)
class SamplingSettings:
    """What an engine needs to sample; mapped from the `rollout` config section."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    seed: int = 0


def completion_caps(
    prompt_lens: list[int], max_new_tokens: int, context_len: int | None
) -> list[int]:
    """Per prompt, the most tokens its completion may have: max_new_tokens, lowered so that
    prompt + completion fits the engine's context (model positions, vLLM's max_model_len).
    Both engines apply it, so a long prompt is cut short the same way on either. Raises
    ValueError for a prompt that leaves no room (the trainer drops or truncates those at load)."""
    if context_len is None:
        return [max_new_tokens] * len(prompt_lens)
    full = [n for n in prompt_lens if n >= context_len]
    if full:
        raise ValueError(
            f"a prompt of {full[0]} tokens leaves no room for a completion in a context of "
            f"{context_len} tokens (see data.max_prompt_tokens)"
        )
    return [min(max_new_tokens, context_len - n) for n in prompt_lens]


@dataclass
class Completions:
    """An engine's output for P prompts x n samples.

    prompt_index_N: long [N], which input prompt each completion continues.
    token_ids_NL:   long [N, L], generated tokens (EOS included when the model stopped),
                    right-padded with `pad_id`.
    logprobs_NL:    float32 [N, L], the engine's log-prob of each generated token under the
                    processed (temperature-scaled) distribution; 0 on padding.
    length_N:       long [N], number of generated tokens.
    finish_reason:  list of N strings, "stop" (EOS) or "length" (hit its cap: max_new_tokens,
                    or less where the prompt leaves less room, see `completion_caps`).
    """

    prompt_index_N: torch.Tensor
    token_ids_NL: torch.Tensor
    logprobs_NL: torch.Tensor
    length_N: torch.Tensor
    finish_reason: list[str]
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.finish_reason)

    def tokens(self, i: int) -> list[int]:
        return self.token_ids_NL[i, : self.length_N[i]].tolist()

    def token_lists(self) -> list[list[int]]:
        """Every completion's tokens (one conversion, not one per row)."""
        return [ids[:n] for ids, n in zip(self.token_ids_NL.tolist(), self.length_N.tolist())]

    def mask_NL(self) -> torch.Tensor:
        positions = torch.arange(self.token_ids_NL.shape[1])
        return positions[None, :] < self.length_N[:, None]

    @staticmethod
    def concat(parts: list[Completions], prompt_offsets: list[int]) -> Completions:
        """Join batches; completion prompt indices are shifted by each part's prompt offset."""
        width = max((p.token_ids_NL.shape[1] for p in parts), default=0)

        def pad(t: torch.Tensor, value) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

        return Completions(
            prompt_index_N=torch.cat(
                [p.prompt_index_N + off for p, off in zip(parts, prompt_offsets)]
            ),
            token_ids_NL=torch.cat([pad(p.token_ids_NL, p.pad_id) for p in parts]),
            logprobs_NL=torch.cat([pad(p.logprobs_NL, 0.0) for p in parts]),
            length_N=torch.cat([p.length_N for p in parts]),
            finish_reason=[r for p in parts for r in p.finish_reason],
            pad_id=parts[0].pad_id if parts else 0,
        )


@torch.no_grad()
def score_tokens(model, prompts: list[list[int]], device) -> list[list[float]]:
    """log p(token | prefix) at T = 1 of every token after the first of each sequence, from a
    Hugging Face causal LM (or a DeepSpeed engine around one): the learner's and the HF engine's
    side of the behavioural sync probe. One sequence per forward: no padding to get wrong."""
    out = []
    for ids in prompts:
        ids_1T = torch.tensor([ids], device=device)
        logits_TV = model(input_ids=ids_1T).logits[0, :-1].float()
        logp_T = torch.log_softmax(logits_TV, dim=-1).gather(-1, ids_1T[0, 1:, None])
        out.append(logp_T.squeeze(-1).cpu().tolist())
    return out


# ---- the plug-in contracts the controller relies on (docs/sampling.md) -----------------------
class PromptSampler(Protocol):
    """Which training prompts a step uses (rollout.samplers: uniform, mopps)."""

    def next_batch(self, size: int) -> list[int]:
        """`size` indices into the training rows."""

    def observe(self, indices: list[int], successes: list[float], counts: list[int]) -> None:
        """Outcomes of the selected prompts: correct of `counts` verified completions each."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def metrics(self) -> dict[str, float]: ...


class RolloutSchedule(Protocol):
    """How many completions each prompt gets after the first stage (rollout.schedules)."""

    def extra(self, acc_P: torch.Tensor, n: int) -> torch.Tensor:
        """long [P]: extra completions per prompt, from first-stage accuracies (NaN: unknown)."""

    def after_expand(self, acc_stage1_P: torch.Tensor, acc_merged_P: torch.Tensor) -> None:
        """Told the accuracies before and after the merge (for metrics)."""

    def metrics(self) -> dict[str, float]: ...


class Gate(Protocol):
    """Which groups enter the update, and whether to generate another round (rollout.gates)."""

    def begin(self) -> None:
        """Start a step."""

    def offer(self, informative_P: torch.Tensor) -> torch.Tensor:
        """bool [P]: which of a round's admissible groups are kept."""

    def more(self) -> bool:
        """Whether to generate another round this step."""

    def metrics(self) -> dict[str, float]: ...


class Engine(Protocol):
    """A generation engine (rollout.hf_engine, rollout.vllm_engine)."""

    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> Completions: ...

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None: ...

    def score(self, prompts: list[list[int]]) -> list[list[float]]:
        """log p(token | prefix) at T = 1 of every token after the first (the sync probe)."""
