"""Generation with Hugging Face `transformers` (KV cache): the CPU engine and a GPU fallback.

Log-probs are taken from the processed scores (after temperature / top-p), the same
distribution the token was sampled from, so they are the behaviour policy's log-probs.
Scores for a whole chunk are held at once ([sequences, L, V]); keep `batch_size` small for
large vocabularies, or use the vLLM engine.
Each completion is capped so that prompt + completion fits the model's positions
(`rollout.types.completion_caps`): a chunk generates up to its largest cap and each row is cut
at its own (finish reason "length"). Rows with a smaller cap run past it before the cut, which
rotary position embeddings (Llama, Qwen, ...) allow; learned absolute positions would not.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from rollout.types import (
    FINISH_LENGTH,
    FINISH_STOP,
    Completions,
    SamplingSettings,
    completion_caps,
    score_tokens,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HFEngine:
    """Engine contract: `generate(prompts_token_ids, sampling) -> Completions`,
    `load_weights(named_tensors)`, `named_parameters()`."""

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str,
        batch_size: int,
        trust_remote_code: bool,
        device: str = "cpu",
        lora: dict | None = None,
    ):
        """`lora`: `peft.LoraConfig` arguments for adapter-only weight sync: the model runs
        through peft with that adapter (B = 0 until the first sync), and only the adapter's
        parameters are synced (`named_parameters`)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = torch.device(device)
        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code
        )
        if lora is not None:
            import peft

            config = peft.LoraConfig(**lora)
            model = peft.get_peft_model(
                model, config, adapter_name="default", autocast_adapter_dtype=False
            )
        tok = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self._attach(model, tok, batch_size, adapter_only=lora is not None)

    @classmethod
    def around(cls, model, tokenizer, batch_size: int, device: str = "cpu") -> HFEngine:
        """An engine that generates with `model` itself, not a copy (the benchmarks'
        single-process loops train the model it samples from)."""
        engine = cls.__new__(cls)
        engine.device = torch.device(device)
        engine._attach(model, tokenizer, batch_size, adapter_only=False)
        return engine

    def _attach(self, model, tok, batch_size: int, adapter_only: bool) -> None:
        self.adapter_only = adapter_only
        self.model = model.to(self.device).eval()
        self.eos_id = tok.eos_token_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.batch_size = batch_size
        self.context_len = getattr(self.model.config, "max_position_embeddings", None)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> Completions:
        """n samples for each prompt (token ids, no padding), prompt-major order."""
        if not prompts:
            raise ValueError("generate() needs at least one prompt")
        caps = completion_caps([len(p) for p in prompts], sampling.max_new_tokens, self.context_len)
        torch.manual_seed(sampling.seed)
        order = [i for i in range(len(prompts)) for _ in range(sampling.n)]
        chunks = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        parts = [
            self._generate_chunk([prompts[i] for i in c], [caps[i] for i in c], sampling)
            for c in chunks
        ]
        done = Completions.concat(parts, [0] * len(parts))
        done.prompt_index_N = torch.tensor(order, dtype=torch.long)
        return done

    def _generate_chunk(
        self, seqs: list[list[int]], caps: list[int], sampling: SamplingSettings
    ) -> Completions:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):  # left padding: every prompt ends at column `width`
            ids[row, width - len(s) :] = torch.tensor(s)
            attn[row, width - len(s) :] = 1
        out = self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=attn.to(self.device),
            do_sample=True,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=0,
            max_new_tokens=max(caps),
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
        new_NL = out.sequences[:, width:].cpu()
        scores_NLV = torch.stack(out.scores, dim=1).float().cpu()
        logp_NL = torch.log_softmax(scores_NLV, dim=-1).gather(-1, new_NL[..., None]).squeeze(-1)
        cap_N = torch.tensor(caps, dtype=torch.long)
        positions_NL = torch.arange(new_NL.shape[1])[None, :]
        is_eos_NL = (new_NL == self.eos_id) & (positions_NL < cap_N[:, None])
        stopped_N = is_eos_NL.any(dim=1)
        cut_N = cap_N.clamp(max=new_NL.shape[1])
        length_N = torch.where(stopped_N, is_eos_NL.int().argmax(dim=1) + 1, cut_N)
        mask_NL = positions_NL < length_N[:, None]
        return Completions(
            prompt_index_N=torch.zeros(len(seqs), dtype=torch.long),
            token_ids_NL=new_NL.masked_fill(~mask_NL, self.pad_id),
            logprobs_NL=logp_NL.masked_fill(~mask_NL, 0.0),
            length_N=length_N,
            finish_reason=[FINISH_STOP if s else FINISH_LENGTH for s in stopped_N.tolist()],
            pad_id=self.pad_id,
        )

    def score(self, prompts: list[list[int]]) -> list[list[float]]:
        """log p(token | prefix) at T = 1 of every token after the first (the sync probe)."""
        return score_tokens(self.model, prompts, self.device)

    def named_parameters(self) -> Iterable[tuple[str, torch.Tensor]]:
        """The parameters a weight sync writes: all, or with adapter-only sync the adapter's."""
        named = self.model.named_parameters()
        if self.adapter_only:
            return [(n, p) for n, p in named if ".lora_" in n]
        return named

    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        params = dict(self.named_parameters())
        for name, tensor in named_tensors:
            params[name].copy_(tensor)
