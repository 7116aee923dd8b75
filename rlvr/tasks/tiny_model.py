"""The built-in base model: a tiny Llama with a character-level tokenizer.

Saved with `save_pretrained`, so `AutoModelForCausalLM` / `AutoTokenizer` (and vLLM) load it
like any hub model. `rlvr.tasks.warm_start` builds and warm-starts it (SFT) into a cache directory
on first use, keyed by everything that shapes its weights, and reuses it afterwards.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rlvr.tasks.arith import OPERATORS

BUILTIN_PREFIX = "builtin:"


class TinyModelConfig(BaseModel):
    """`model.tiny`: architecture of the built-in character-level Llama (model.path=builtin:...)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    hidden_size: int = Field(128, ge=8, description="width")
    num_layers: int = Field(2, ge=1, description="transformer blocks")
    num_heads: int = Field(4, ge=1, description="attention heads")
    intermediate_size: int = Field(512, ge=8, description="MLP width")
    max_positions: int = Field(64, ge=8, description="longest prompt + completion in tokens")


class ModelConfig(BaseModel):
    """The `model` section: the policy's weights and how learners hold them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    path: str = Field(
        "builtin:arith-tiny",
        description="HF hub name, local HF directory, or builtin:arith-tiny (built and "
        "warm-started by SFT into the cache on first use)",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="parameter dtype"
    )
    trust_remote_code: bool = Field(False, description="passed to from_pretrained")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the learner")
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)


PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SYMBOLS = list("0123456789") + list(OPERATORS) + ["="]
BUILD_VERSION = 2  # bump when the tokenizer, the model or the SFT recipe changes meaning
# The only markup the 18 symbols allow: turns are concatenated, with no role markers (there are no
# symbols for them), <bos> first and <eos> after each assistant turn. A one-turn conversation
# [{user: "12+34="}] renders exactly as the plain arith prompt, so the warm-started model answers
# chat rows as it answers the built-in task.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
)


def build_tokenizer():
    """One token per character; prompts get <bos> prepended; pads on the left for generation;
    a minimal chat template (CHAT_TEMPLATE) for conversational rows."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([PAD, BOS, EOS, UNK] + SYMBOLS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tiny, tokenizer, seed: int):
    """A freshly initialised LlamaForCausalLM (tied embeddings) from `model.tiny` settings."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=tiny.hidden_size,
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_heads,
        intermediate_size=tiny.intermediate_size,
        max_position_embeddings=tiny.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
